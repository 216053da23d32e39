"""Deltas against a baseline run, each with its interval, p-values and the method that made them.

The metrics, their directions and their methods are the metric registry's
(:mod:`mlobs.evaluate.registry`); per-class metrics (``f1[<class>]``) are bootstrapped.

Paired — both runs scored the same golden set (same dataset hash, same sample ids; see
``mlobs.stats.joint``):
- ``wilson`` metrics (accuracy, error rate): McNemar's exact test (scipy's ``binomtest`` on the
  discordant pairs) and Newcombe's score interval for a difference of paired proportions
  (Newcombe 1998, method 10, with its continuity-corrected φ);
- ``bootstrap`` metrics (macro/weighted F1, ECE) and per-class F1: a paired bootstrap over sample
  ids — each resample draws samples (both runs' outcomes together) from the joint counts.

Unpaired — otherwise:
- ``wilson`` metrics: Newcombe's hybrid score interval (method 10 of Newcombe 1998) and the
  pooled two-proportion z test;
- ``bootstrap`` metrics: independent bootstraps of the two runs.

A metric registered without an interval gets its point delta only (no interval, no p-value).

A delta is current − baseline. ``p_value`` is two-sided (H0: no difference); ``p_worse`` is
one-sided with H1 "the current run is worse" in the metric's worse direction (lower accuracy and
F1, higher error rate and ECE) — the test a regression gate uses. For bootstraps the p-values are
the percentile-bootstrap ones, (1 + #replicates on the other side of 0) / (1 + resamples), so a
p-value below α goes with a 1 − 2α percentile interval that excludes 0. ``se`` (the standard
error of the delta) is what sample-size estimates scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlobs.stats import _engine
from mlobs.stats.batch import Evaluator, Side, class_metric, successes
from mlobs.stats.cells import WHOLE_RUN, Cells, cells_from_aggregate, default_labels
from mlobs.stats.intervals import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    check_level,
    check_resamples,
    wilson,
)
from mlobs.stats.joint import JointCounts


@dataclass(frozen=True)
class DeltaInterval:
    metric: str
    current: float
    baseline: float
    delta: float  # current − baseline
    low: float
    high: float
    confidence: float
    p_value: float  # two-sided, H0: no difference
    p_worse: float  # one-sided, H1: the current run is worse
    se: float  # standard error of the delta
    paired: bool
    test: str  # "McNemar exact", "two-proportion z", "paired bootstrap", "bootstrap"
    interval_method: str
    n_current: int  # samples (pairs, when paired)
    n_baseline: int
    higher_is_better: bool

    @property
    def label(self) -> str:
        """What the report says about the method: ``McNemar, paired``."""
        if not self.test:
            return "point estimates, no interval"
        short = {"McNemar exact": "McNemar", "two-proportion z": "Newcombe/z"}.get(
            self.test, "bootstrap")
        return f"{short}, {'paired' if self.paired else 'unpaired'}"

    @property
    def worse_by(self) -> float:
        """How much worse the current run is (negative: better), in the metric's units."""
        return -self.delta if self.higher_is_better else self.delta

    def __str__(self) -> str:
        from mlobs.stats.format import format_delta

        return format_delta(self)


def metric_direction(metric: str) -> bool:
    """True when higher is better (the registry's; per-class metrics like ``f1[cat]`` follow
    their kind)."""
    from mlobs.evaluate import registry

    return registry.higher_is_better(metric)


def _wanted(metrics: Sequence[str] | None, labels: Sequence[str]) -> list[str]:
    from mlobs.evaluate import registry

    names = [*registry.names(),
             *(f"{kind}[{label}]" for kind in registry.CLASS_METRICS for label in labels)]
    if metrics is None:
        return names
    unknown = [m for m in metrics if m not in names]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return [m for m in names if m in metrics]


def _metric(name: str) -> tuple[object, str | None]:
    """(the metric as a function of Metrics, its interval method) for a headline or per-class
    metric name."""
    from mlobs.evaluate import registry

    entry = registry.get(name)
    if entry is not None:
        return entry.value, entry.interval
    kind, label = name[:-1].split("[", 1)
    return class_metric(kind, label), "bootstrap"


# -- proportions --------------------------------------------------------------------------------

def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def newcombe_unpaired(k1: int, n1: int, k2: int, n2: int,
                      confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 from two independent samples (method 10)."""
    w1, w2 = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    p1, p2 = k1 / n1, k2 / n2
    low = p1 - p2 - math.hypot(p1 - w1.low, w2.high - p2)
    high = p1 - p2 + math.hypot(p2 - w2.low, w1.high - p1)
    return (max(-1.0, low), min(1.0, high))


def newcombe_paired(a: int, b: int, c: int, d: int,
                    confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Newcombe's score interval for p1 − p2 from paired data (1998, method 10).

    The table counts pairs: a = both successes, b = only the first (current), c = only the
    second (baseline), d = neither; p1 = (a+b)/n, p2 = (a+c)/n. φ, the correlation of the two
    outcomes, enters with Newcombe's continuity correction (ad − bc reduced by n/2 when positive,
    0 when that crosses zero)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    w1, w2 = wilson(a + b, n, confidence), wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    d1, e1 = p1 - w1.low, w2.high - p2
    d2, e2 = p2 - w2.low, w1.high - p1
    low = p1 - p2 - math.sqrt(max(0.0, d1 * d1 - 2 * phi * d1 * e1 + e1 * e1))
    high = p1 - p2 + math.sqrt(max(0.0, d2 * d2 - 2 * phi * d2 * e2 + e2 * e2))
    return (max(-1.0, low), min(1.0, high))


def mcnemar(gains: int, losses: int) -> tuple[float, float]:
    """McNemar's exact test on the discordant pairs: (two-sided p, one-sided p for "fewer gains
    than losses"). ``gains`` = pairs the current run got right and the baseline wrong."""
    if gains + losses == 0:
        return (1.0, 1.0)
    from scipy.stats import binomtest

    both = binomtest(gains, gains + losses, 0.5).pvalue
    fewer = binomtest(gains, gains + losses, 0.5, alternative="less").pvalue
    return (float(both), float(fewer))


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """Pooled (score) z test of p1 = p2: (two-sided p, one-sided p for p1 < p2, one-sided p for
    p1 > p2)."""
    from scipy.stats import norm

    pooled = (k1 + k2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return (1.0, 1.0, 1.0)
    z = (k1 / n1 - k2 / n2) / math.sqrt(variance)
    return (float(2 * norm.sf(abs(z))), float(norm.cdf(z)), float(norm.sf(z)))


def _paired_proportion(metric: str, first: np.ndarray, second: np.ndarray, n: np.ndarray,
                       confidence: float) -> DeltaInterval:
    """``first``/``second``: per cell, whether the current/baseline sample is a "success" —
    correct (accuracy) or an error (error rate)."""
    a = int(n[first & second].sum())
    b = int(n[first & ~second].sum())
    c = int(n[~first & second].sum())
    d = int(n[~first & ~second].sum())
    total = a + b + c + d
    higher = metric_direction(metric)
    delta = (b - c) / total
    low, high = newcombe_paired(a, b, c, d, confidence)
    # "worse": fewer correct (accuracy) or more errors (error rate) than the baseline
    both, fewer_gains = mcnemar(b, c) if higher else mcnemar(c, b)
    se = math.sqrt(max(0.0, (b + c) / total - delta * delta) / total)
    return DeltaInterval(metric, (a + b) / total, (a + c) / total, delta, low, high, confidence,
                         both, fewer_gains, se, True, "McNemar exact",
                         "Newcombe paired score (method 10)", total, total, higher)


def _unpaired_proportion(metric: str, k1: int, n1: int, k2: int, n2: int,
                         confidence: float) -> DeltaInterval:
    higher = metric_direction(metric)
    low, high = newcombe_unpaired(k1, n1, k2, n2, confidence)
    both, less, more = two_proportion_z(k1, n1, k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    worse = less if higher else more
    return DeltaInterval(metric, p1, p2, p1 - p2, low, high, confidence, both, worse, se, False,
                         "two-proportion z", "Newcombe hybrid score (method 10)", n1, n2, higher)


# -- bootstraps ---------------------------------------------------------------------------------

def _bootstrap_delta(metric: str, point: tuple[float, float], replicates: np.ndarray,
                     confidence: float, paired: bool, resamples: int, n_cur: int,
                     n_base: int) -> DeltaInterval:
    higher = metric_direction(metric)
    delta = point[0] - point[1]
    finite = replicates[~np.isnan(replicates)]
    low, high = _engine.percentile_interval(finite, confidence)
    count = len(finite)
    if count:
        at_least = (1 + int((finite >= 0).sum())) / (1 + count)
        at_most = (1 + int((finite <= 0).sum())) / (1 + count)
        both = min(1.0, 2 * min(at_least, at_most))
        worse = at_least if higher else at_most  # share of resamples that are not worse
        se = float(finite.std(ddof=1)) if count > 1 else math.nan
    else:
        both = worse = se = math.nan
    test = "paired bootstrap" if paired else "bootstrap"
    method = f"{test} percentile, {resamples} resamples"
    return DeltaInterval(metric, point[0], point[1], delta, low, high, confidence, both, worse,
                         se, paired, test, method, n_cur, n_base, higher)


def _point_delta(metric: str, current: float, baseline: float, confidence: float, paired: bool,
                 n_cur: int, n_base: int) -> DeltaInterval:
    """A metric registered without an interval: the difference of the point estimates only."""
    nan = math.nan
    return DeltaInterval(metric, current, baseline, current - baseline, nan, nan, confidence, nan,
                         nan, nan, paired, "", "", n_cur, n_base, metric_direction(metric))


def paired_deltas(
    joint: JointCounts,
    *,
    labels: Sequence[str] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    metrics: Sequence[str] | None = None,
) -> dict[str, DeltaInterval]:
    """Paired deltas (current − baseline) of the headline metrics and per-class F1 from the joint
    counts of two runs over the same samples. Refuses counts that are not pairable."""
    check_level(confidence)
    check_resamples(resamples)
    if not joint.pairable:
        raise ValueError(f"the runs cannot be paired: {joint.reason}")
    labels = joint.default_labels() if labels is None else list(labels)
    wanted = _wanted(metrics, labels)
    # Both runs' outcomes over the same joint cells: one weighting (a resample of sample ids)
    # weighs the same samples on both sides.
    side_cur = Side(joint.aligned("current", labels))
    side_base = Side(joint.aligned("baseline", labels))
    total = int(joint.n.sum())
    out: dict[str, DeltaInterval] = {}
    boot: dict[str, tuple[Evaluator, Evaluator]] = {}
    for name in wanted:
        function, method = _metric(name)
        ev_cur, ev_base = Evaluator(function, side_cur), Evaluator(function, side_base)
        if math.isnan(ev_cur.point) or math.isnan(ev_base.point):
            continue  # undefined on a side (e.g. ECE without confidences): nothing to compare
        if method == "wilson":
            out[name] = _paired_proportion(name, successes(function, side_cur, name),
                                           successes(function, side_base, name), joint.n,
                                           confidence)
        elif method == "bootstrap":
            boot[name] = (ev_cur, ev_base)
        else:
            out[name] = _point_delta(name, ev_cur.point, ev_base.point, confidence, True, total,
                                     total)
    if boot:
        rng = np.random.default_rng([_joint_fingerprint(joint, labels), 1, resamples])
        reps: dict[str, list[np.ndarray]] = {name: [] for name in boot}
        for W in _engine.multinomial_blocks(joint.n, resamples, rng):
            batch_cur, batch_base = side_cur.batch(W), side_base.batch(W)
            for name, (ev_cur, ev_base) in boot.items():
                reps[name].append(ev_cur(batch_cur) - ev_base(batch_base))
        for name, (ev_cur, ev_base) in boot.items():
            out[name] = _bootstrap_delta(name, (ev_cur.point, ev_base.point),
                                         np.concatenate(reps[name]), confidence, True, resamples,
                                         total, total)
    return {m: out[m] for m in wanted if m in out}


def unpaired_deltas(
    current: Any,
    baseline: Any,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 10,
    slice_key: tuple[str, str] = WHOLE_RUN,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    metrics: Sequence[str] | None = None,
) -> dict[str, DeltaInterval]:
    """Unpaired deltas (current − baseline) from the two runs' lake aggregates (Tables or rows).
    ``labels`` defaults to the union of both runs' label lists."""
    check_level(confidence)
    check_resamples(resamples)
    if labels is None:
        from mlobs.stats.cells import aggregate_rows

        current, baseline = aggregate_rows(current), aggregate_rows(baseline)
        labels = sorted(set(default_labels(current)) | set(default_labels(baseline)))
    cells = [cells_from_aggregate(rows, labels=labels, bins=bins, slice_key=slice_key)
             for rows in (current, baseline)]
    return unpaired_cell_deltas(cells[0], cells[1], confidence=confidence, resamples=resamples,
                                metrics=metrics)


def unpaired_cell_deltas(current: Cells, baseline: Cells, *,
                         confidence: float = DEFAULT_CONFIDENCE,
                         resamples: int = DEFAULT_RESAMPLES,
                         metrics: Sequence[str] | None = None) -> dict[str, DeltaInterval]:
    """:func:`unpaired_deltas` for two runs' :class:`Cells` (over the same label list). Each
    run's bootstrap draws the resamples of its own interval (``mlobs.stats.intervals``)."""
    if current.labels != baseline.labels:
        raise ValueError("both runs' cells must use the same label list")
    check_level(confidence)
    check_resamples(resamples)
    labels = list(current.labels)
    wanted = _wanted(metrics, labels)
    n1, n2 = current.total, baseline.total
    out: dict[str, DeltaInterval] = {}
    if not n1 or not n2:
        return out
    sides = (Side(current), Side(baseline))
    boot: dict[str, tuple[Evaluator, Evaluator]] = {}
    for name in wanted:
        function, method = _metric(name)
        ev_cur, ev_base = (Evaluator(function, side) for side in sides)
        if math.isnan(ev_cur.point) or math.isnan(ev_base.point):
            continue
        if method == "wilson":
            k1, k2 = (int(side.cells.n[successes(function, side, name)].sum()) for side in sides)
            out[name] = _unpaired_proportion(name, k1, n1, k2, n2, confidence)
        elif method == "bootstrap":
            boot[name] = (ev_cur, ev_base)
        else:
            out[name] = _point_delta(name, ev_cur.point, ev_base.point, confidence, False, n1, n2)
    if boot:
        reps: list[dict[str, np.ndarray]] = []
        for k, side in enumerate(sides):
            cells = side.cells
            got: dict[str, list[np.ndarray]] = {name: [] for name in boot}
            for W in _engine.multinomial_blocks(cells.n, resamples,
                                                cells.rng("metrics", resamples)):
                batch = side.batch(W)
                for name, pair in boot.items():
                    got[name].append(pair[k](batch))
            reps.append({name: np.concatenate(values) for name, values in got.items()})
        for name, (ev_cur, ev_base) in boot.items():
            out[name] = _bootstrap_delta(name, (ev_cur.point, ev_base.point),
                                         reps[0][name] - reps[1][name], confidence, False,
                                         resamples, n1, n2)
    return {m: out[m] for m in wanted if m in out}


def _joint_fingerprint(joint: JointCounts, labels: Sequence[str]) -> int:
    import hashlib

    digest = hashlib.sha256(repr((joint.tokens, tuple(labels), joint.bins)).encode())
    for name in ("label", "pred_cur", "pred_base", "error_cur", "error_base", "bin_cur",
                 "bin_base", "n"):
        digest.update(np.ascontiguousarray(getattr(joint, name), dtype=np.int64).tobytes())
    for name in ("conf_cur", "conf_base"):
        digest.update(np.ascontiguousarray(getattr(joint, name), dtype=np.float64).tobytes())
    return int.from_bytes(digest.digest()[:8], "big")


@dataclass(frozen=True)
class Comparison:
    deltas: dict[str, DeltaInterval]
    paired: bool
    why_unpaired: str  # "" when paired


def compare_runs(
    current_aggregate: Any,
    baseline_aggregate: Any,
    joint: JointCounts | None = None,
    *,
    same_dataset: bool,
    labels: Sequence[str] | None = None,
    bins: int = 10,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    metrics: Sequence[str] | None = None,
) -> Comparison:
    """The run against its baseline, paired when it can be: ``same_dataset`` (equal dataset
    hashes) and ``joint`` (from ``joint_counts`` over both runs' rows) pairs every sample id once;
    otherwise unpaired from the two aggregates, with the reason. The label list defaults to the
    union of both aggregates' (the same list either way, so per-class deltas line up)."""
    from mlobs.stats.cells import aggregate_rows

    current_rows, baseline_rows = aggregate_rows(current_aggregate), aggregate_rows(
        baseline_aggregate)
    if labels is None:
        labels = sorted(set(default_labels(current_rows)) | set(default_labels(baseline_rows)))
    if not same_dataset:
        why = "the runs scored different golden sets (dataset hashes differ)"
    elif joint is None:
        why = "the runs' rows were not joined by sample id"
    elif not joint.pairable:
        why = joint.reason
    else:
        return Comparison(paired_deltas(joint, labels=labels, confidence=confidence,
                                        resamples=resamples, metrics=metrics), True, "")
    return Comparison(unpaired_deltas(current_rows, baseline_rows, labels=labels, bins=bins,
                                      confidence=confidence, resamples=resamples,
                                      metrics=metrics), False, why)
