"""The result model of slo-validate: one verdict per check, per scenario, per run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mlobs.logschema import LogFields
from mlobs.result import Verdict


@dataclass(frozen=True)
class Filter:
    """A label filter on a parsed log field: ``field op value`` (op: = != > >= < <= =~ !~)."""

    field: str
    op: str
    value: str | float


@dataclass(frozen=True)
class Scope:
    """What a measurement looks at: which streams, which time window, which model version."""

    selector: str
    window: str  # as written, e.g. "1h"
    window_s: float
    end: float  # Unix seconds; the window is (end - window_s, end]
    model_version: str | None = None
    fields: LogFields = LogFields()

    def with_version(self, version: str | None) -> Scope:
        return Scope(self.selector, self.window, self.window_s, self.end, version, self.fields)

    def base_filters(self) -> tuple[Filter, ...]:
        if self.model_version:
            return (Filter(self.fields.model_version, "=", self.model_version),)
        return ()


@dataclass(frozen=True)
class CountRequest:
    """Lines in scope (its model version included) that pass ``filters``, grouped by ``by``."""

    scope: Scope
    filters: tuple[Filter, ...] = ()
    by: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantileRequest:
    """The ``q`` quantile of ``field`` over the lines in scope that pass ``filters`` and whose
    ``field`` is a usable number (see :data:`VALID`)."""

    scope: Scope
    q: float
    field: str
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class DroppedRequest:
    """Lines in scope that pass ``filters`` but whose ``field`` is not a usable number (missing,
    text, NaN, ±Inf, negative, …): the lines a quantile of ``field`` leaves out."""

    scope: Scope
    field: str
    filters: tuple[Filter, ...] = ()


Request = CountRequest | QuantileRequest | DroppedRequest

# Filter op: the field is a usable number — a plain decimal ≥ 0 (see logql.UsableNumber).
VALID = "valid"


def valid_number(field: str) -> Filter:
    return Filter(field, VALID, "")


@dataclass
class Measured:
    """A number from a source and the exact query that produced it (several, one per line, when a
    long window was answered in sub-windows); ``note`` says why a value is missing, if known."""

    value: float | None
    query: str
    note: str = ""


@dataclass
class Counted:
    """Counts grouped by label values (missing group = no lines), and the exact query."""

    groups: dict[tuple[str, ...], float]
    query: str

    @property
    def total(self) -> float:
        return float(sum(self.groups.values()))


@dataclass
class CheckResult:
    name: str  # e.g. "p99 latency"
    verdict: Verdict
    measured: str = "—"  # formatted, e.g. "312.4 ms"
    threshold: str = "—"  # formatted, e.g. "< 150 ms"
    n: int | None = None
    reason: str = ""  # why this verdict, in a sentence
    value: float | None = None
    queries: list[str] = field(default_factory=list)
    explore_urls: list[str] = field(default_factory=list)
    window: str = ""
    line: int = 0  # the step's line in its .feature file


@dataclass
class ScenarioResult:
    feature: str
    name: str
    path: str  # relative to the working directory, as annotations need
    line: int
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None  # could not evaluate: undefined step, source down, bad input
    error_line: int | None = None

    @property
    def verdict(self) -> Verdict:
        if self.error:
            return Verdict.ERROR
        return Verdict.combine([c.verdict for c in self.checks])


@dataclass
class RunResult:
    source: str  # "Loki https://…" or "log file …"
    window: str
    end: str  # RFC 3339
    model_version: str | None
    baseline_version: str | None
    scenarios: list[ScenarioResult] = field(default_factory=list)
    queries_issued: int = 0

    @property
    def verdict(self) -> Verdict:
        return Verdict.combine([s.verdict for s in self.scenarios])

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.scenarios if s.verdict is verdict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        for scenario, raw in zip(self.scenarios, data["scenarios"], strict=True):
            raw["verdict"] = scenario.verdict.value
        data["schema"] = "mlobs.slo-results/1"
        return data
