Feature: ML model SLO validation for the PyTorch image classifier
  As an ML platform engineer
  I want every deployment of the classifier checked against its SLOs
  So that regressions are caught before they reach our users

  Background:
    Given a Loki instance running at "http://loki.monitoring.svc.cluster.local:3100"
    And we are validating the function "pytorch-classifier" in namespace "openfaas-fn"
    And the time range for validation is the last "1 hour"

  Scenario: Inference latency stays within the SLO
    When we query the performance logs for model version "v1.2.1"
    Then the p99 latency should be below 150 ms

  Scenario: Server errors stay rare
    When we query the request logs for model version "v1.2.1"
    Then the error rate for status code 5xx should be less than 0.5 percent

  Scenario: The prediction mix has not drifted
    When we query the successful prediction logs for model version "v1.2.1"
    Then the prediction proportion for class "golden retriever" should be between 5 and 15 percent
