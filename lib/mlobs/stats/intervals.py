"""Confidence intervals for every headline metric of an evaluation run, from the lake's counts.

The metrics, and how each one's interval is computed, are the metric registry's
(:mod:`mlobs.evaluate.registry`: ``interval="wilson"`` or ``"bootstrap"``):

- ``wilson`` (accuracy, error rate — shares of samples): Wilson score intervals (scipy's
  ``binomtest(...).proportion_ci``) on the samples that count as successes;
- ``bootstrap`` (macro F1, weighted F1, ECE) and per-class precision/recall/F1: a percentile
  bootstrap over the rows, run on the aggregate's cells — each resample is one multinomial draw of
  the run's row count over its cells (see ``mlobs.stats.cells``), so the cost does not grow with
  the rows. Every metric is evaluated on the same resamples (:mod:`mlobs.stats.batch`).

The bootstrap is seeded from a hash of the counts (and the level and resample count): the same
counts give the same intervals, byte for byte, on the same numpy. Within a cell every row is
taken to have the cell's mean confidence — a confidence bin is 1/bins wide, so the variance this
leaves out is at most 1/(12·bins²) per row against up to 1/4 for the correctness it keeps.

Coverage, measured (tests/test_stats_intervals.py): over 1,000 simulated golden sets of 480 and
2,000 samples the 95 % intervals of accuracy, macro F1 and ECE cover the true population value in
94.7–95.8 % of them. One known limit, shared by every bootstrap of the binned ECE (BCa, bias-
corrected and basic intervals were tried and did no better): the plug-in ECE sums |accuracy −
confidence| per bin, which is biased upward when a bin's true gap is small against its noise, so
for a model that is nearly calibrated in thinly populated bins the interval sits too high (87 %
coverage measured at 480 samples for gaps shrinking to 0 at low confidence; 95 % again at 2,000).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlobs.stats import _engine
from mlobs.stats.batch import Evaluator, Side, successes
from mlobs.stats.cells import WHOLE_RUN, Cells, cells_from_aggregate

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
CLASS_KINDS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class Interval:
    value: float  # the point estimate (NaN when undefined)
    low: float  # NaN: no interval (the metric is registered without one)
    high: float
    confidence: float
    method: str  # "Wilson" or "bootstrap percentile, 2000 resamples"; "" without an interval

    def __str__(self) -> str:
        from mlobs.stats.format import format_interval

        return format_interval(self)


@dataclass(frozen=True)
class ClassIntervals:
    label: str
    support: int
    precision: Interval
    recall: Interval
    f1: Interval


@dataclass(frozen=True)
class MetricIntervals:
    """One run's (or slice's) headline metrics with their intervals, keyed like the registry.

    A headline metric that is undefined for the run (no sample; ECE without any confidence) has
    no entry value: ``None``. ``iv.accuracy`` is ``iv.headline_intervals["accuracy"]``."""

    n: int
    errors: int
    confidence: float
    resamples: int
    headline_intervals: dict[str, Interval | None]
    per_class: tuple[ClassIntervals, ...]

    def headline(self) -> dict[str, Interval | None]:
        """Keyed like ``mlobs.evaluate.metrics.Metrics.headline`` (the registry's order)."""
        return dict(self.headline_intervals)

    def __getattr__(self, name: str) -> Interval | None:
        headline = self.__dict__.get("headline_intervals")
        if headline is not None and name in headline:
            return headline[name]
        raise AttributeError(name)

    def get(self, metric: str) -> Interval | None:
        """A headline metric, or ``f1[<class>]`` / ``precision[<class>]`` / ``recall[<class>]``."""
        if "[" in metric and metric.endswith("]"):
            kind, label = metric[:-1].split("[", 1)
            for c in self.per_class:
                if c.label == label and kind in CLASS_KINDS:
                    return getattr(c, kind)
            return None
        return self.headline_intervals.get(metric)


def check_level(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {confidence!r}")
    return float(confidence)


def check_resamples(resamples: int) -> int:
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 100:
        raise ValueError(f"resamples must be an integer ≥ 100, got {resamples!r}")
    return resamples


def wilson(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval for a proportion (scipy); NaN for n = 0."""
    check_level(confidence)
    if n <= 0:
        return Interval(math.nan, math.nan, math.nan, confidence, "Wilson")
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                         method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), confidence, "Wilson")


def bootstrap_method(resamples: int) -> str:
    return f"bootstrap percentile, {resamples} resamples"


def metric_intervals(
    aggregate: Any,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 10,
    slice_key: tuple[str, str] = WHOLE_RUN,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    metrics: Sequence[str] | None = None,
    per_class: bool = True,
) -> MetricIntervals:
    """Point estimates and intervals of every headline and per-class metric of one slice (default:
    the whole run) of a lake aggregate (a pyarrow Table from ``engine.aggregate`` or its rows)."""
    cells = cells_from_aggregate(aggregate, labels=labels, bins=bins, slice_key=slice_key)
    return cell_intervals(cells, confidence=confidence, resamples=resamples, metrics=metrics,
                          per_class=per_class)


def _registered(metrics: Sequence[str] | None):
    from mlobs.evaluate import registry

    entries = registry.metrics()
    if metrics is None:
        return entries
    unknown = [m for m in metrics if registry.get(m) is None]
    if unknown:
        raise ValueError(f"unknown headline metric(s) {', '.join(unknown)}; known: "
                         f"{', '.join(registry.names())}")
    return tuple(m for m in entries if m.name in metrics)


def cell_intervals(cells: Cells, *, confidence: float = DEFAULT_CONFIDENCE,
                   resamples: int = DEFAULT_RESAMPLES, metrics: Sequence[str] | None = None,
                   per_class: bool = True) -> MetricIntervals:
    """:func:`metric_intervals` for counts already turned into :class:`Cells`. ``metrics``
    limits the headline metrics (default: every registered one); ``per_class`` False skips the
    per-class intervals."""
    check_level(confidence)
    check_resamples(resamples)
    entries = _registered(metrics)
    n = cells.total
    errors = int(cells.n[cells.error].sum())
    boot = bootstrap_method(resamples)
    if n == 0:
        nan = Interval(math.nan, math.nan, math.nan, confidence, boot)
        return MetricIntervals(0, 0, confidence, resamples, {m.name: None for m in entries},
                               tuple(ClassIntervals(label, 0, nan, nan, nan)
                                     for label in cells.labels) if per_class else ())

    side = Side(cells)
    functions: dict[str, Any] = {}
    points: dict[str, float] = {}
    for m in entries:
        evaluator = Evaluator(m.value, side)
        points[m.name] = evaluator.point
        if m.interval == "bootstrap" and not math.isnan(evaluator.point):
            functions[m.name] = evaluator
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in functions}
    class_reps: list[dict[str, np.ndarray]] = []
    point_batch = side.batch(side.point)
    if functions or (per_class and cells.labels):
        for W in _engine.multinomial_blocks(cells.n, resamples, cells.rng("metrics", resamples)):
            batch = side.batch(W)
            for name, evaluate in functions.items():
                replicates[name].append(evaluate(batch))
            if per_class:
                class_reps.append({f"{kind}{i}": getattr(c, kind)
                                   for i, c in enumerate(batch.per_class) for kind in CLASS_KINDS})

    def from_replicates(value: float, sample: np.ndarray) -> Interval:
        low, high = _engine.percentile_interval(sample, confidence)
        return Interval(float(value), low, high, confidence, boot)

    headline: dict[str, Interval | None] = {}
    for m in entries:
        value = points[m.name]
        if math.isnan(value):
            headline[m.name] = None
        elif m.interval == "wilson":
            hits = successes(m.value, side, m.name)
            headline[m.name] = wilson(int(cells.n[hits].sum()), n, confidence)
        elif m.interval == "bootstrap":
            headline[m.name] = from_replicates(value, np.concatenate(replicates[m.name]))
        else:
            headline[m.name] = Interval(value, math.nan, math.nan, confidence, "")

    classes: tuple[ClassIntervals, ...] = ()
    if per_class:
        stacked = {key: np.concatenate([r[key] for r in class_reps]) for key in class_reps[0]} \
            if class_reps else {}
        classes = tuple(
            ClassIntervals(c.label, int(round(float(c.support[0]))),
                           *(from_replicates(float(getattr(c, kind)[0]), stacked[f"{kind}{i}"])
                             for kind in CLASS_KINDS))
            for i, c in enumerate(point_batch.per_class))
    return MetricIntervals(n=n, errors=errors, confidence=confidence, resamples=resamples,
                           headline_intervals=headline, per_class=classes)
