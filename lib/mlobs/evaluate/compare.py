"""A run against its baseline: deltas for every metric and slice, and the regression gates.

Gates follow MLflow's model-validation thresholds: a limit is an absolute change (``0.01``) or a
relative one (``2%``) in the direction that makes the metric worse; give both for one metric to
require both (``accuracy=0.01,accuracy=2%``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mlobs.errors import ConfigError
from mlobs.evaluate import registry
from mlobs.evaluate.metrics import Metrics, RunMetrics


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
    passed: bool | None  # None: could not be checked


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
