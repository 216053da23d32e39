"""The mode names, in one place: CLI commands, action input values, comment markers."""

SLO_VALIDATE = "slo-validate"
EVALUATE = "evaluate"
PUBLISH_REPORT = "publish-report"

ALL = (SLO_VALIDATE, EVALUATE, PUBLISH_REPORT)

TITLES = {
    SLO_VALIDATE: "SLO validation",
    EVALUATE: "Golden-set evaluation",
    PUBLISH_REPORT: "Model report",
}

# Each mode's results file under output-dir (the `summary-json` output). A run that could not
# evaluate writes an error record there instead, so a later step never reads an earlier run's.
RESULTS_FILES = {
    SLO_VALIDATE: "slo-results.json",
    EVALUATE: "evaluate-results.json",
    PUBLISH_REPORT: "publish-results.json",
}
ERROR_SCHEMA = "mlobs.error/1"
