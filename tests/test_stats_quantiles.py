"""Order-statistic intervals for latency quantiles: the ranks are scipy's, the levels make Loki's
linear interpolation return exactly those order statistics, the intervals cover the true
quantile, and the regression decision fails, passes or stays inconclusive as documented."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mlobs.stats.quantiles import (
    interval_from_levels,
    latency_regression,
    min_samples_for_bounds,
    quantile_interval,
    quantile_plan,
)
from servers.loki import _quantile as loki_quantile  # the double's quantile_over_time

GRID = [(n, q) for n in (20, 100, 368, 500, 1000, 2000, 10_000) for q in (0.5, 0.9, 0.95, 0.99)]


@pytest.mark.parametrize(("n", "q"), GRID)
def test_interval_is_scipys_order_statistic_interval(n, q):
    """scipy.stats.quantile_test(...).confidence_interval computes the same distribution-free
    interval from the data; ours must pick the same order statistics from n and q alone."""
    x = np.random.default_rng(n).lognormal(3, 0.5, n)
    plan = quantile_plan(n, q)
    ours = quantile_interval(x, q)
    theirs = stats.quantile_test(x, q=float(np.quantile(x, q)), p=q).confidence_interval(0.95)
    ordered = np.sort(x)
    # (numpy's interpolation at the level may differ from the order statistic in the last ulps)
    if plan.rank_low is None:
        assert np.isnan(theirs.low) and ours.low is None
    else:
        assert theirs.low == ordered[plan.rank_low - 1]
        assert ours.low == pytest.approx(theirs.low, rel=1e-13)
    if plan.rank_high is None:
        assert np.isnan(theirs.high) and ours.high is None
    else:
        assert theirs.high == ordered[plan.rank_high - 1]
        assert ours.high == pytest.approx(theirs.high, rel=1e-13)


@pytest.mark.parametrize(("n", "q"), GRID)
def test_exact_coverage_is_at_least_nominal(n, q):
    plan = quantile_plan(n, q)
    f = stats.binom(n, q).cdf
    lower = f(plan.rank_low - 1) if plan.rank_low else 0.0
    upper = f(plan.rank_high - 1) if plan.rank_high else 1.0
    assert plan.coverage == pytest.approx(upper - lower)
    if plan.complete:
        assert plan.coverage >= 0.95
        assert lower <= 0.025 and upper >= 0.975  # each tail at most 2.5 %


def test_levels_make_lokis_interpolation_return_the_order_statistics():
    for n, q in GRID:
        x = np.random.default_rng(n + 1).exponential(80, n)
        plan = quantile_plan(n, q)
        ordered = np.sort(x)
        for rank, level in ((plan.rank_low, plan.level_low), (plan.rank_high, plan.level_high)):
            if rank is None:
                continue
            # floor(level·(n − 1)) is the order statistic's own index, never the one before
            assert int(level * (n - 1)) == rank - 1 and level * (n - 1) - (rank - 1) < 1e-12
            assert loki_quantile(level, list(x)) == pytest.approx(ordered[rank - 1], rel=1e-13)
            assert float(np.quantile(x, level)) == pytest.approx(ordered[rank - 1], rel=1e-13)
            assert float(repr(level)) == level


def test_minimum_samples_for_both_bounds():
    # a p99's upper bound needs 0.99ⁿ ≤ 2.5 %: n ≥ 368
    assert min_samples_for_bounds(0.99) == 368
    assert quantile_plan(367, 0.99).rank_high is None and quantile_plan(368, 0.99).complete
    assert min_samples_for_bounds(0.5) == 6 and not quantile_plan(5, 0.5).complete


@pytest.mark.parametrize(("n", "q"), [(2000, 0.99), (500, 0.5), (100, 0.9)])
def test_intervals_cover_the_true_quantile(n, q):
    """1,000 seeded samples from a lognormal latency distribution: the 95 % interval covers the
    true quantile in 93–97 % of them. The exact coverage of these plans (≥ 95 % by
    construction, discreteness adds a little) is 95.6–95.8 %; plans whose exact coverage is
    higher (n = 1000 for a p99: 97.6 %) are conservative, not wrong — tested above."""
    truth = float(stats.lognorm(s=0.5, scale=np.exp(3)).ppf(q))
    plan = quantile_plan(n, q)
    assert 0.95 <= plan.coverage <= 0.96
    rng = np.random.default_rng(4)
    samples = np.sort(rng.lognormal(3, 0.5, (1000, n)), axis=1)
    low = samples[:, plan.rank_low - 1]
    high = samples[:, plan.rank_high - 1]
    coverage = float(np.mean((low <= truth) & (truth <= high)))
    assert 0.93 <= coverage <= 0.97


def _iv(values, q=0.99):
    return quantile_interval(values, q)


def test_regression_decision():
    rng = np.random.default_rng(7)
    base = _iv(rng.lognormal(3, 0.5, 5000))
    same = _iv(rng.lognormal(3, 0.5, 5000))
    slower = _iv(rng.lognormal(3, 0.5, 5000) * 1.5)
    few = _iv(rng.lognormal(3, 0.5, 200))
    assert latency_regression(slower, base, 0.10).verdict == "fail"
    decision = latency_regression(same, base, 0.50)
    assert decision.verdict == "pass" and decision.ratio_high <= 1.5
    straddle = latency_regression(same, base, 0.0)
    assert straddle.verdict == "inconclusive" and "straddle" in straddle.reason
    assert straddle.ratio_low < 1 < straddle.ratio_high
    small = latency_regression(few, base, 0.1)
    assert small.verdict == "inconclusive" and "368 needed" in small.reason
    # the ratio interval is the intervals' extreme ratios
    assert decision.ratio_low == pytest.approx(same.low / base.high)
    assert decision.ratio_high == pytest.approx(same.high / base.low)


def test_interval_from_lokis_answers():
    plan = quantile_plan(1000, 0.99)
    iv = interval_from_levels(plan, 120.0, 101.5, 180.25)
    assert (iv.value, iv.low, iv.high, iv.n) == (120.0, 101.5, 180.25, 1000)
    no_upper = interval_from_levels(quantile_plan(300, 0.99), 120.0, 101.5, 999.0)
    assert no_upper.high is None


@pytest.mark.slow
def test_regression_decision_errors_stay_under_5_percent():
    """1,000 seeded version pairs of 3,000 requests each: without a change the p99 gate
    (+10 % allowed) fails ≤ 5 %; with +10 % exactly (the allowance) it fails ≤ 5 %; with +60 %
    it fails ≥ 95 %; a true +30 % never passes more than 5 %."""
    rng = np.random.default_rng(44)
    rates = {}
    for factor in (1.0, 1.1, 1.3, 1.6):
        verdicts = []
        for _ in range(1000):
            base = _iv(rng.lognormal(3, 0.5, 3000))
            cur = _iv(rng.lognormal(3, 0.5, 3000) * factor)
            verdicts.append(latency_regression(cur, base, 0.10).verdict)
        rates[factor] = {v: verdicts.count(v) / 1000 for v in ("pass", "fail", "inconclusive")}
    assert rates[1.0]["fail"] <= 0.05 and rates[1.1]["fail"] <= 0.05
    assert rates[1.3]["pass"] <= 0.05
    assert rates[1.6]["fail"] >= 0.95
