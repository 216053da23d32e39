"""Statistics for verdicts: confidence intervals, quantiles, drift tests (scipy underneath)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def min_samples_for_quantile(q: float, tail_samples: int = 10) -> int:
    """Samples needed before a q-quantile means something: ``tail_samples`` beyond it.

    A p99 from 37 requests is the 37th value at best; with 1000 requests, 10 lie above it.
    """
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    return math.ceil(tail_samples / (1 - q) - 1e-9)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between closest ranks — what Loki and Prometheus
    compute for ``quantile_over_time`` (and numpy's default method)."""
    import numpy as np

    if not values:
        return math.nan
    return float(np.quantile(np.asarray(values, dtype=float), q))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound near 0 and 1, unlike Wald)."""
    if n <= 0:
        return (math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


@dataclass(frozen=True)
class DriftResult:
    p_value: float
    statistic: float
    dof: int
    js_distance: float  # Jensen-Shannon distance, base 2: 0 identical, 1 disjoint
    categories: tuple[str, ...]
    pooled: tuple[str, ...]  # rare categories merged into "other" for the chi-square test


def distribution_drift(current: Mapping[str, float], baseline: Mapping[str, float],
                       min_expected: float = 5.0) -> DriftResult:
    """Chi-square test of homogeneity between two categorical samples, plus the JS distance.

    Categories whose expected count falls under ``min_expected`` in either sample are pooled into
    one "other" cell so the chi-square approximation holds; the JS distance uses every category.
    """
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    categories = sorted(set(current) | set(baseline))
    table = np.array([[float(current.get(c, 0)) for c in categories],
                      [float(baseline.get(c, 0)) for c in categories]])
    keep = table.sum(axis=0) > 0
    table, categories = table[:, keep], [c for c, k in zip(categories, keep, strict=True) if k]
    p = table[0] / table[0].sum()
    b = table[1] / table[1].sum()
    js = float(jensenshannon(p, b, base=2))

    totals = table.sum(axis=1, keepdims=True)
    expected = totals * table.sum(axis=0, keepdims=True) / table.sum()
    rare = (expected < min_expected).any(axis=0)
    pooled = [c for c, r in zip(categories, rare, strict=True) if r]
    if rare.any():
        other = table[:, rare].sum(axis=1, keepdims=True)
        table = np.hstack([table[:, ~rare], other]) if (~rare).any() else other
    if table.shape[1] < 2:
        return DriftResult(1.0, 0.0, 0, js, tuple(categories), tuple(pooled))
    statistic, p_value, dof, _ = chi2_contingency(table, correction=False)
    return DriftResult(float(p_value), float(statistic), int(dof), js, tuple(categories), tuple(pooled))
