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
