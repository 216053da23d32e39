"""A run against its baseline: deltas for every metric and slice, and the regression gates.

Gates follow MLflow's model-validation thresholds: a limit is an absolute change (``0.01``) or a
relative one (``2%``) in the direction that makes the metric worse; give both for one metric to
require both (``accuracy=0.01,accuracy=2%``).

With ``significance`` α (the default, 0.05) a gate fails only when the point estimate breaches its
limit AND the regression is significant at α (``mlobs.stats.gates``); a breach within the noise is
inconclusive and says how many samples would settle it. The evidence — every headline and
per-class metric with its 95 % interval, each delta with its interval and p-value, paired when
both runs scored the same samples (:func:`gather`) — goes on every surface.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlobs.errors import ConfigError
from mlobs.evaluate import registry
from mlobs.evaluate.metrics import Metrics, RunMetrics

if TYPE_CHECKING:
    from mlobs.stats.deltas import DeltaInterval
    from mlobs.stats.intervals import Interval, MetricIntervals


@dataclass(frozen=True)
class Gate:
    metric: str  # a headline metric (mlobs.evaluate.registry), or f1[<class>]
    limit: float
    relative: bool

    def describe(self) -> str:
        return f"{self.metric} worse by at most {self.limit * 100:g}%" if self.relative else \
            f"{self.metric} worse by at most {self.limit:g}"


@dataclass
class GateResult:
    gate: Gate
    current: float | None
    baseline: float | None
    regression: float | None  # how much worse (absolute, or relative for relative gates)
    passed: bool | None  # None: not settled (could not be checked, or inconclusive)
    verdict: str = ""  # "pass", "fail" or "inconclusive" ("" from check_gates: see passed)
    significance: float | None = None  # α of the test; None: a point-estimate gate
    p_value: float | None = None  # one-sided p of "the run is worse"
    method: str = ""  # the test, e.g. "McNemar, paired"
    samples_needed: int | None = None  # an inconclusive breach: samples that would settle it
    reason: str = ""


@dataclass
class Delta:
    metric: str
    current: float | None
    baseline: float | None

    @property
    def change(self) -> float | None:
        if self.current is None or self.baseline is None:
            return None
        if math.isnan(self.current) or math.isnan(self.baseline):
            return None
        return self.current - self.baseline

    @property
    def better(self) -> bool | None:
        change = self.change
        if change is None or change == 0:
            return None
        return (change > 0) == registry.higher_is_better(self.metric)


_CLASS_F1 = re.compile(r"f1\[(?P<label>[^\]]+)\]")


def parse_gates(text: str | None) -> list[Gate]:
    gates = []
    for item in (text or "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        name, sep, limit = item.partition("=")
        name, limit = name.strip(), limit.strip()
        if not sep or not limit:
            raise ConfigError(f"max-regression: expected metric=limit, got {item.strip()!r}")
        if registry.get(name) is None and not _CLASS_F1.fullmatch(name):
            known = ", ".join([*registry.names(), *(f"{c}[<class>]" for c in registry.CLASS_METRICS)])
            raise ConfigError(f"max-regression: unknown metric {name!r}; use one of {known}")
        relative = limit.endswith("%")
        try:
            value = float(limit.rstrip("%")) / (100 if relative else 1)
        except ValueError:
            raise ConfigError(f"max-regression: {limit!r} is not a number or a percentage") from None
        if value < 0 or math.isnan(value):
            raise ConfigError(f"max-regression: the limit for {name} must be ≥ 0, got {limit!r}")
        gates.append(Gate(name, value, relative))
    return gates


def metric_value(m: Metrics, name: str) -> float | None:
    if match := _CLASS_F1.fullmatch(name):
        return next((c.f1 for c in m.per_class if c.label == match["label"]), None)
    metric = registry.get(name)
    return metric.of(m) if metric is not None else None


def check_gates(gates: list[Gate], current: Metrics, baseline: Metrics) -> list[GateResult]:
    results = []
    for gate in gates:
        cur, base = metric_value(current, gate.metric), metric_value(baseline, gate.metric)
        if cur is None or base is None:
            results.append(GateResult(gate, cur, base, None, None))
            continue
        higher = registry.higher_is_better(gate.metric)
        worse_by = (base - cur) if higher else (cur - base)
        if gate.relative:
            worse_by = worse_by / abs(base) if base else (math.inf if worse_by > 0 else 0.0)
        # a tolerance for float noise: identical runs must never fail a zero-tolerance gate
        results.append(GateResult(gate, cur, base, worse_by, worse_by <= gate.limit + 1e-12))
    return results


def headline_deltas(current: Metrics, baseline: Metrics | None) -> list[Delta]:
    base = baseline.headline() if baseline else {}
    return [Delta(name, value, base.get(name)) for name, value in current.headline().items()]


def slice_deltas(current: RunMetrics, baseline: RunMetrics | None, metric: str = "accuracy") -> list[tuple[str, str, Delta]]:
    base = {(s.name, s.value): s.metrics for s in baseline.slices} if baseline else {}
    out = []
    for s in current.slices:
        other = base.get((s.name, s.value))
        out.append((s.name, s.value, Delta(metric, metric_value(s.metrics, metric),
                                           metric_value(other, metric) if other else None)))
    return out


# -- the statistical evidence -------------------------------------------------------------------

CONFIDENCE = 0.95  # every interval shown is a 95 % interval


@dataclass
class Evidence:
    """Intervals of both runs, the deltas with their tests, and how the runs were compared."""

    confidence: float
    current: MetricIntervals
    slices: dict[tuple[str, str], Interval | None] = field(default_factory=dict)  # accuracy
    baseline: MetricIntervals | None = None
    deltas: dict[str, DeltaInterval] = field(default_factory=dict)
    paired: bool | None = None  # None: no baseline
    why: str = ""  # why paired, or why not
    # each slice's accuracy against the baseline's same slice: unpaired (the joined rows carry no
    # slices), Newcombe's interval and the two-proportion z test
    slice_deltas: dict[tuple[str, str], DeltaInterval] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"confidence": self.confidence, "intervals": _intervals_json(self.current),
                "baseline_intervals": _intervals_json(self.baseline),
                "slices": [{"name": name, "value": value, "accuracy": _interval_json(iv)}
                           for (name, value), iv in self.slices.items()],
                "comparison": None if self.paired is None else {
                    "paired": self.paired, "why": self.why,
                    "deltas": {name: _delta_json(d) for name, d in self.deltas.items()},
                    "slices": [{"name": name, "value": value, "accuracy": _delta_json(d)}
                               for (name, value), d in self.slice_deltas.items()]}}


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _interval_json(iv: Interval | None) -> dict | None:
    if iv is None:
        return None
    return {"value": _num(iv.value), "low": _num(iv.low), "high": _num(iv.high),
            "confidence": iv.confidence, "method": iv.method}


def _intervals_json(ivs: MetricIntervals | None) -> dict | None:
    if ivs is None:
        return None
    return {"n": ivs.n, "confidence": ivs.confidence, "resamples": ivs.resamples,
            "headline": {name: _interval_json(iv) for name, iv in ivs.headline().items()},
            "per_class": [{"label": c.label, "support": c.support,
                           **{kind: _interval_json(getattr(c, kind))
                              for kind in ("precision", "recall", "f1")}}
                          for c in ivs.per_class]}


def _delta_json(d: DeltaInterval) -> dict:
    return {"current": _num(d.current), "baseline": _num(d.baseline), "delta": _num(d.delta),
            "low": _num(d.low), "high": _num(d.high), "confidence": d.confidence,
            "p_value": _num(d.p_value), "p_worse": _num(d.p_worse), "paired": d.paired,
            "test": d.test, "interval_method": d.interval_method, "method": d.label,
            "n_current": d.n_current, "n_baseline": d.n_baseline}


def gather(engine, info, baseline, current_rows: list[dict], baseline_rows: list[dict],
           labels: list[str], *, compare_runs: bool = True) -> Evidence:
    """The evidence for a run (``info``) and, when given, its baseline run: intervals of both
    (and of each slice's accuracy); the deltas, paired when both runs scored the same golden set
    (same dataset hash, and joined by sample id both runs hold the same ids with the same labels —
    their rows streamed from the lake, ``engine.iter_run``), unpaired otherwise, with the reason.
    """
    from mlobs.stats.cells import WHOLE_RUN
    from mlobs.stats.intervals import metric_intervals

    current = metric_intervals(current_rows, labels=labels, confidence=CONFIDENCE)
    slices = {}
    for key in sorted({(r["slice_name"] or "", r["slice_value"] or "") for r in current_rows}
                      - {WHOLE_RUN}):
        slices[key] = metric_intervals(current_rows, labels=labels, slice_key=key,
                                       confidence=CONFIDENCE, metrics=["accuracy"],
                                       per_class=False).accuracy
    evidence = Evidence(CONFIDENCE, current, slices)
    if baseline is None:
        return evidence
    evidence.baseline = metric_intervals(baseline_rows, labels=labels, confidence=CONFIDENCE)
    if not compare_runs:
        return evidence
    from mlobs.stats import deltas
    from mlobs.stats.joint import COLUMNS, joint_counts

    same = bool(info.dataset_hash and baseline.dataset_hash
                and info.dataset_hash == baseline.dataset_hash)
    joint = None
    if same:
        joint = joint_counts(engine.iter_run(info, list(COLUMNS)),
                             engine.iter_run(baseline, list(COLUMNS)))
    comparison = deltas.compare_runs(current_rows, baseline_rows, joint, same_dataset=same,
                                     labels=labels, confidence=CONFIDENCE)
    evidence.deltas = comparison.deltas
    evidence.paired = comparison.paired
    baseline_slices = {(r["slice_name"] or "", r["slice_value"] or "") for r in baseline_rows}
    for key in slices:
        if key in baseline_slices:
            found = deltas.unpaired_deltas(current_rows, baseline_rows, labels=labels,
                                           slice_key=key, confidence=CONFIDENCE,
                                           metrics=["accuracy"])
            if "accuracy" in found:
                evidence.slice_deltas[key] = found["accuracy"]
    if comparison.paired:
        evidence.why = (f"both runs scored the same golden set (dataset sha256 "
                        f"{info.dataset_hash[:16]}…, the same {joint.matched:,} sample ids)")
    elif not (info.dataset_hash and baseline.dataset_hash):
        evidence.why = "the baseline run records no dataset hash"
    else:
        evidence.why = comparison.why_unpaired
    return evidence


def judge_gates(gates: list[Gate], current: Metrics, baseline: Metrics,
                deltas: dict[str, Any], significance: float | None) -> list[GateResult]:
    """Each gate's verdict (``mlobs.stats.gates.decide_gate``): with a significance level, a
    breach fails only when the regression is significant, else it is inconclusive; with None,
    today's point-estimate gate. A gate whose metric has no delta cannot be checked."""
    from mlobs.stats.gates import decide_gate

    results = []
    for gate in gates:
        cur, base = metric_value(current, gate.metric), metric_value(baseline, gate.metric)
        delta = deltas.get(gate.metric)
        if cur is None or base is None or delta is None:
            results.append(GateResult(gate, cur, base, None, None, "inconclusive", significance,
                                      reason=f"{gate.metric} could not be compared with the "
                                             "baseline (undefined in one of the runs)."))
            continue
        decision = decide_gate(gate.metric, gate.limit, gate.relative, delta,
                               significance=significance)
        results.append(GateResult(
            gate, cur, base, decision.regression, decision.passed, decision.verdict,
            significance, _num(decision.p_value), decision.method, decision.samples_needed,
            decision.reason))
    return results
