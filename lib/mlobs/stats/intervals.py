"""Confidence intervals for every headline metric of an evaluation run, from the lake's counts.

- accuracy and error rate: Wilson score intervals (scipy's ``binomtest(...).proportion_ci``);
- macro F1, weighted F1, per-class precision/recall/F1 and ECE: a percentile bootstrap over the
  rows, run on the aggregate's cells — each resample is one multinomial draw of the run's row
  count over its cells (see ``mlobs.stats.cells``), so the cost does not grow with the rows.

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
from mlobs.stats.cells import WHOLE_RUN, Cells, cells_from_aggregate

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "ece", "error_rate")


@dataclass(frozen=True)
class Interval:
    value: float  # the point estimate (NaN when undefined)
    low: float
    high: float
    confidence: float
    method: str  # "Wilson" or "bootstrap percentile, 2000 resamples"

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
    n: int
    errors: int
    confidence: float
    resamples: int
    accuracy: Interval
    error_rate: Interval
    macro_f1: Interval
    weighted_f1: Interval
    ece: Interval | None  # None: no row has a confidence
    per_class: tuple[ClassIntervals, ...]

    def headline(self) -> dict[str, Interval | None]:
        """Keyed like ``mlobs.evaluate.metrics.Metrics.headline``."""
        return {name: getattr(self, name) for name in HEADLINE}

    def get(self, metric: str) -> Interval | None:
        """A headline metric, or ``f1[<class>]`` / ``precision[<class>]`` / ``recall[<class>]``."""
        if "[" in metric and metric.endswith("]"):
            kind, label = metric[:-1].split("[", 1)
            for c in self.per_class:
                if c.label == label and kind in ("f1", "precision", "recall"):
                    return getattr(c, kind)
            return None
        return self.headline().get(metric)


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


def metric_intervals(
    aggregate: Any,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 10,
    slice_key: tuple[str, str] = WHOLE_RUN,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
) -> MetricIntervals:
    """Point estimates and intervals of every headline and per-class metric of one slice (default:
    the whole run) of a lake aggregate (a pyarrow Table from ``engine.aggregate`` or its rows)."""
    cells = cells_from_aggregate(aggregate, labels=labels, bins=bins, slice_key=slice_key)
    return cell_intervals(cells, confidence=confidence, resamples=resamples)


def cell_intervals(cells: Cells, *, confidence: float = DEFAULT_CONFIDENCE,
                   resamples: int = DEFAULT_RESAMPLES) -> MetricIntervals:
    """:func:`metric_intervals` for counts already turned into :class:`Cells`."""
    check_level(confidence)
    check_resamples(resamples)
    n = cells.total
    errors = int(cells.n[cells.error].sum())
    correct = int(cells.n[cells.correct].sum())
    k = len(cells.labels)
    boot = f"bootstrap percentile, {resamples} resamples"
    nan = Interval(math.nan, math.nan, math.nan, confidence, boot)
    if n == 0:
        return MetricIntervals(0, 0, confidence, resamples, wilson(0, 0, confidence),
                               wilson(0, 0, confidence), nan, nan, None,
                               tuple(ClassIntervals(label, 0, nan, nan, nan) for label in cells.labels))

    # F1 family: only (label, prediction) matter.
    (true, pred), f1_n, _ = _engine.reduce_cells([cells.true, cells.pred], cells.n)
    f1_side = _engine.F1Side(true, pred, k)
    point = f1_side.scores(f1_n[None, :].astype(np.float64))
    reps = [f1_side.scores(w) for w in
            _engine.multinomial_blocks(f1_n, resamples, cells.rng("f1", resamples))]
    stacked = {key: np.concatenate([r[key] for r in reps]) for key in point}

    def interval(key: str, column: int | None = None) -> Interval:
        value = point[key][0] if column is None else point[key][0, column]
        sample = stacked[key] if column is None else stacked[key][:, column]
        low, high = _engine.percentile_interval(sample, confidence)
        return Interval(float(value), low, high, confidence, boot)

    support_counts = np.asarray(_engine.weighted(f1_n[None, :].astype(np.float64),
                                                 f1_side.support)).reshape(-1)
    per_class = tuple(
        ClassIntervals(label, int(support_counts[i]), interval("precision", i),
                       interval("recall", i), interval("f1", i))
        for i, label in enumerate(cells.labels))

    ece = _ece_interval(cells, confidence, resamples, boot)
    return MetricIntervals(
        n=n, errors=errors, confidence=confidence, resamples=resamples,
        accuracy=wilson(correct, n, confidence), error_rate=wilson(errors, n, confidence),
        macro_f1=interval("macro_f1") if k else nan,
        weighted_f1=interval("weighted_f1") if k else nan,
        ece=ece, per_class=per_class)


def _ece_interval(cells: Cells, confidence: float, resamples: int, method: str) -> Interval | None:
    has_conf = cells.conf_bin >= 0
    if not cells.n[has_conf].sum():
        return None
    (conf_bin, correct), ece_n, (conf_sum,) = _engine.reduce_cells(
        [np.where(has_conf, cells.conf_bin, -1), cells.correct & has_conf], cells.n,
        [cells.conf_sum])
    side = _engine.EceSide(conf_bin, correct, conf_sum, ece_n, cells.bins)
    value = float(side.ece(ece_n[None, :].astype(np.float64))[0])
    blocks = _engine.multinomial_blocks(ece_n, resamples, cells.rng("ece", resamples))
    sample = np.concatenate([side.ece(w) for w in blocks])
    low, high = _engine.percentile_interval(sample, confidence)
    return Interval(value, low, high, confidence, method)
