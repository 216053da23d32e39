Feature: Production behaviour of the pytorch-classifier function
  The promises the image classifier keeps in production, measured from its request logs
  (one JSON line per request). Values in ${…} come from the action's inputs, so one file
  serves staging and production.

  Background:
    Given the logs of stream ${SELECTOR}
    And the window is the last "${WINDOW}"
    And the model version is "${MODEL_VERSION}"

  Scenario: Enough traffic to judge the other promises
    Then there are at least 100 requests

  Scenario: p99 latency
    Then the p99 latency is below 150 ms

  Scenario: Server errors
    Then the 5xx error rate is below 0.5 percent

  Scenario: Prediction mix
    Then the share of class "golden retriever" is between 5 and 15 percent

  Scenario: No drift after a model update
    Then the prediction distribution does not drift from version "${BASELINE_VERSION}"

  Scenario: No latency regression after a model update
    Then the p95 latency is at most 20 percent above version "${BASELINE_VERSION}"
