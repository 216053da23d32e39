"""What every mode hands to the reporter: a verdict, rendered Markdown, annotations and outputs.

A mode computes its own result object, renders it with its renderer into a :class:`Report`, and the
GitHub reporter sends that. The reporter knows nothing about SLOs, metrics or Hugo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mlobs.errors import EXIT_CANNOT_EVALUATE, EXIT_OK, EXIT_VIOLATION


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"

    @classmethod
    def combine(cls, verdicts: list[Verdict]) -> Verdict:
        """The overall verdict: any error, else any fail, else any inconclusive, else pass.

        No verdicts at all is inconclusive: nothing was checked, so nothing passed.
        """
        if not verdicts:
            return cls.INCONCLUSIVE
        for worst in (cls.ERROR, cls.FAIL, cls.INCONCLUSIVE):
            if worst in verdicts:
                return worst
        return cls.PASS

    @property
    def check_conclusion(self) -> str:
        return {
            Verdict.PASS: "success",
            Verdict.FAIL: "failure",
            Verdict.INCONCLUSIVE: "neutral",
            Verdict.ERROR: "failure",
        }[self]

    @property
    def icon(self) -> str:
        # Text symbols rather than colours, so the tables read in any theme and in plain text.
        return {
            Verdict.PASS: "✅ pass",
            Verdict.FAIL: "❌ fail",
            Verdict.INCONCLUSIVE: "⚠️ inconclusive",
            Verdict.ERROR: "⛔ error",
        }[self]


class FailOn(StrEnum):
    VIOLATION = "violation"
    INCONCLUSIVE = "inconclusive"
    NEVER = "never"


def exit_code(verdict: Verdict, fail_on: FailOn) -> int:
    """Map a verdict to the process exit code under the ``fail-on`` policy.

    An error (could not evaluate at all) is exit 2 whatever the policy: ``never`` silences verdicts,
    not broken inputs.
    """
    if verdict is Verdict.ERROR:
        return EXIT_CANNOT_EVALUATE
    if fail_on is FailOn.NEVER:
        return EXIT_OK
    if verdict is Verdict.FAIL:
        return EXIT_VIOLATION
    if verdict is Verdict.INCONCLUSIVE and fail_on is FailOn.INCONCLUSIVE:
        return EXIT_CANNOT_EVALUATE
    return EXIT_OK


@dataclass(frozen=True)
class Annotation:
    """A check-run annotation; also rendered as a workflow command when no check run is possible."""

    path: str | None  # None: not a file in the repository (e.g. the bundled contracts)
    start_line: int
    message: str
    level: str = "failure"  # failure | warning | notice (GitHub's annotation_level)
    title: str = ""
    end_line: int | None = None
    raw_details: str = ""

    def to_api(self) -> dict:
        data = {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line or self.start_line,
            "annotation_level": self.level,
            "message": self.message,
        }
        if self.title:
            data["title"] = self.title
        if self.raw_details:
            data["raw_details"] = self.raw_details
        return data


@dataclass
class Report:
    """A mode's rendered outcome, ready for every reporting surface."""

    mode: str
    verdict: Verdict
    title: str  # one line of PLAIN text (check-run title; the reporter escapes it for headings)
    summary: str  # Markdown: the short form (check-run summary)
    body: str  # Markdown: the full form (comment, job summary, check-run text)
    annotations: list[Annotation] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    key: str = ""  # optional extra key for the sticky comment (one comment per mode+key)
