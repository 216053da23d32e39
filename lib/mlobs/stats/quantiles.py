"""Distribution-free intervals for a quantile, by order statistics, and the latency-regression
decision built on them.

Interval. Of n samples from any continuous distribution, the number K that fall at or below the
true q-quantile ξ is Binomial(n, q). With X₍₁₎ ≤ … ≤ X₍ₙ₎ the sorted samples, X₍ₗ₎ ≤ ξ exactly
when K ≥ l, and ξ < X₍ᵤ₎ exactly when K ≤ u − 1, so

    P(X₍ₗ₎ ≤ ξ ≤ X₍ᵤ₎) ≥ F(u − 1) − F(l − 1),   F = the Binomial(n, q) CDF.

:func:`quantile_plan` takes the equal-tailed ranks — the largest l with F(l − 1) ≤ (1 − c)/2 and
the smallest u with F(u − 1) ≥ 1 − (1 − c)/2 — so each tail misses with probability at most
(1 − c)/2 and the coverage is at least c (more, because K is discrete: the plan reports the
exact figure). With ties (latencies in whole milliseconds) the closed interval only covers more.
When n is too small for a bound (no rank l ≥ 1, or none u ≤ n: a p99 needs n ≥ 368 for a 95 %
upper bound) that bound is missing and says so.

Asking Loki. ``quantile_over_time`` (like Prometheus and numpy's default) interpolates linearly
between closest ranks: for level φ over n values it returns v[h] with h = φ·(n − 1), 0-based,
interpolated. So the level (r − 1)/(n − 1) returns exactly the order statistic X₍ᵣ₎ — the plan's
``level_low``/``level_high`` are the quantile levels to send (written with ``repr`` so Loki parses
the same float64), with the same selector, filters and window as the count that gave n (fix the
window's end, or n drifts under live ingestion).

Decision (:func:`latency_regression`) for "p-q latency may grow by at most a" between a baseline
and the current version, each with its c = 95 % interval [lo, hi]:

- fail when cur.lo > base.hi · (1 + a): even the most favourable reading of both intervals shows
  an increase beyond the allowance. A false fail needs cur.lo above the current quantile or
  base.hi below the baseline's — one tail of each interval, at most 2.5 % + 2.5 % = 5 %;
- pass when cur.hi ≤ base.lo · (1 + a): even the least favourable reading stays within it; a
  false pass is likewise at most 5 %;
- inconclusive otherwise: the intervals straddle the allowance (or a bound is missing).
The ratio interval [cur.lo / base.hi, cur.hi / base.lo] is what the report shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_CONFIDENCE = 0.95
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class QuantilePlan:
    n: int
    q: float
    confidence: float
    rank_low: int | None  # 1-based order statistic of the lower bound; None: n too small
    rank_high: int | None
    coverage: float  # exact P(lower ≤ ξ_q ≤ upper) for a continuous distribution

    @property
    def level_low(self) -> float | None:
        """The quantile level whose linear interpolation returns X₍rank_low₎ (ask Loki for it)."""
        return _level(self.rank_low, self.n)

    @property
    def level_high(self) -> float | None:
        return _level(self.rank_high, self.n)

    @property
    def complete(self) -> bool:
        return self.rank_low is not None and self.rank_high is not None


def _level(rank: int | None, n: int) -> float | None:
    """(rank − 1)/(n − 1), nudged by an ulp or two where needed so that level·(n − 1) — what Loki
    and numpy compute in float64 — does not fall below rank − 1: the interpolation then starts at
    the order statistic itself and blends in at most ~1e-14 of the next one (exactly none when
    the product is exact), instead of landing on the previous order statistic's side."""
    if rank is None:
        return None
    if n == 1:
        return 0.0
    level = (rank - 1) / (n - 1)
    below = math.nextafter(level, -1.0)
    if below * (n - 1) == rank - 1:
        level = below
    while level * (n - 1) < rank - 1 and level < 1.0:
        level = math.nextafter(level, 2.0)
    return min(level, 1.0)


def _check(q: float, confidence: float) -> None:
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {confidence!r}")


def quantile_plan(n: int, q: float, confidence: float = DEFAULT_CONFIDENCE) -> QuantilePlan:
    """Ranks (and Loki levels) of the equal-tailed order-statistic interval for the q-quantile
    of n samples."""
    from scipy.stats import binom

    _check(q, confidence)
    if n < 1:
        return QuantilePlan(n, q, confidence, None, None, 0.0)
    tail = (1 - confidence) / 2
    # largest l with F(l − 1) ≤ tail (ppf gives a start; step to be exact under rounding)
    low = int(binom.ppf(tail, n, q))
    while low > 0 and binom.cdf(low - 1, n, q) > tail:
        low -= 1
    while binom.cdf(low, n, q) <= tail:
        low += 1
    # smallest u with F(u − 1) ≥ 1 − tail
    high = int(binom.ppf(1 - tail, n, q)) + 1
    while high > 1 and binom.cdf(high - 2, n, q) >= 1 - tail:
        high -= 1
    while binom.cdf(high - 1, n, q) < 1 - tail:
        high += 1
    rank_low = low if low >= 1 else None
    rank_high = high if high <= n else None
    upper = float(binom.cdf(high - 1, n, q)) if rank_high is not None else 1.0
    lower = float(binom.cdf(low - 1, n, q)) if rank_low is not None else 0.0
    return QuantilePlan(n, q, confidence, rank_low, rank_high, upper - lower)


def min_samples_for_bounds(q: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The smallest n for which both bounds of the q-quantile's interval exist."""
    _check(q, confidence)
    tail = (1 - confidence) / 2
    # the upper bound needs P(K = n) = qⁿ ≤ tail, the lower one (1 − q)ⁿ ≤ tail
    n = max(math.ceil(math.log(tail) / math.log(q)), math.ceil(math.log(tail) / math.log(1 - q)))
    while not quantile_plan(n, q, confidence).complete:
        n += 1
    while n > 1 and quantile_plan(n - 1, q, confidence).complete:
        n -= 1
    return n


@dataclass(frozen=True)
class QuantileInterval:
    q: float
    n: int
    value: float  # the point quantile (linear interpolation)
    low: float | None  # None: no lower bound at this n
    high: float | None
    confidence: float
    coverage: float


def interval_from_levels(plan: QuantilePlan, value: float, low_value: float | None,
                         high_value: float | None) -> QuantileInterval:
    """The interval from the quantiles at ``plan.level_low``/``level_high`` (Loki's answers)."""
    return QuantileInterval(plan.q, plan.n, value,
                            low_value if plan.rank_low is not None else None,
                            high_value if plan.rank_high is not None else None,
                            plan.confidence, plan.coverage)


def quantile_interval(values: Sequence[float], q: float,
                      confidence: float = DEFAULT_CONFIDENCE) -> QuantileInterval:
    """The same interval from the values themselves (the embedded log-file source): numpy's
    linear-interpolation quantiles at the plan's levels, as Loki would compute them."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    plan = quantile_plan(len(data), q, confidence)
    if not len(data):
        return QuantileInterval(q, 0, math.nan, None, None, confidence, 0.0)

    def at(level: float | None) -> float | None:
        return None if level is None else float(np.quantile(data, level))

    return interval_from_levels(plan, float(np.quantile(data, q)), at(plan.level_low),
                                at(plan.level_high))


@dataclass(frozen=True)
class LatencyDecision:
    verdict: str  # "pass", "fail" or "inconclusive"
    ratio: float | None  # current / baseline point quantiles
    ratio_low: float | None  # current.low / baseline.high (None: a bound is missing)
    ratio_high: float | None  # current.high / baseline.low
    max_increase: float
    reason: str


def latency_regression(current: QuantileInterval, baseline: QuantileInterval,
                       max_increase: float) -> LatencyDecision:
    """Pass / fail / inconclusive for "the quantile grew by at most ``max_increase``" (a fraction:
    0.1 = 10 %) from the two versions' intervals (see the module docstring)."""
    if not max_increase >= 0:
        raise ValueError(f"max_increase must be ≥ 0, got {max_increase!r}")
    allowed = 1 + max_increase
    ratio = (current.value / baseline.value
             if baseline.value and not math.isnan(baseline.value) else None)
    ratio_low = (current.low / baseline.high
                 if current.low is not None and baseline.high else None)
    ratio_high = (current.high / baseline.low
                  if current.high is not None and baseline.low else None)
    pct = f"{max_increase * 100:g}%"
    level = f"{min(current.confidence, baseline.confidence) * 100:g}%"
    shown = _ratio_text(ratio_low, ratio_high)
    if ratio_low is not None and ratio_low > allowed:
        return LatencyDecision(FAIL, ratio, ratio_low, ratio_high, max_increase,
                               f"The p{current.q * 100:g} grew beyond +{pct} even at the "
                               f"favourable ends of both {level} intervals (ratio {shown}).")
    if ratio_high is not None and ratio_high <= allowed:
        return LatencyDecision(PASS, ratio, ratio_low, ratio_high, max_increase,
                               f"The p{current.q * 100:g} grew by at most +{pct} even at the "
                               f"unfavourable ends of both {level} intervals (ratio {shown}).")
    missing = [f"{name} (n={iv.n})" for name, iv in (("this version", current),
                                                      ("the baseline", baseline))
               if iv.low is None or iv.high is None]
    if missing:
        need = min_samples_for_bounds(current.q, current.confidence)
        why = (f"too few samples for a {level} interval of the p{current.q * 100:g} on "
               f"{' and '.join(missing)}; {need} needed on each side")
    else:
        why = f"the {level} intervals straddle +{pct} (ratio {shown})"
    return LatencyDecision(INCONCLUSIVE, ratio, ratio_low, ratio_high, max_increase,
                           f"Cannot tell: {why}.")


def _ratio_text(low: float | None, high: float | None) -> str:
    def f(x: float | None) -> str:
        return "?" if x is None else f"{x:.3f}"

    return f"[{f(low)}, {f(high)}]"
