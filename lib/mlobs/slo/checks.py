"""The SLO checks. Each turns measurements into a verdict with the number, threshold and n.

A check is built in two halves: the contract is validated and the measurements it needs are
declared when its step runs (so a run can plan every query before sending one); the verdict is
computed afterwards from the answers (``Check.evaluate``).

Honesty rules: no data, too few samples for the statistic, NaN, or 0/0 is inconclusive — never a
pass; every result carries the exact queries behind it. A contract that cannot mean anything (a
threshold of inf, NaN or below zero, an inverted band, a percentile outside (0, 100)) is refused.

Some checks need a second round of measurements that depends on the first: the latency regression
between versions asks for each version's quantile at the order-statistic bounds of its interval,
whose levels follow from the version's n (:func:`mlobs.stats.quantiles.quantile_plan`). Such a
check names them in ``follow_up``; the runner fetches every check's follow-ups together, in one
planned round, once the first round is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlobs.errors import ConfigError
from mlobs.result import Verdict
from mlobs.slo.model import (
    CheckResult,
    CountRequest,
    DroppedRequest,
    Filter,
    QuantileRequest,
    Request,
    Scope,
    valid_number,
)
from mlobs.slo.source import Source, numeric_filter
from mlobs.stats import distribution_drift, min_samples_for_quantile, wilson_interval


class ContractError(ConfigError):
    """A step whose numbers cannot mean anything; the runner names its file and line."""


@dataclass
class CheckSettings:
    min_requests: int = 100  # for rates, shares and distributions
    quantile_tail: int = 10  # samples beyond a quantile before it counts (p99 ⇒ 1000)
    min_samples: int | None = None  # a floor set by the feature, overriding both
    drift_alpha: float = 0.01  # chi-square p-value below which a difference is significant
    drift_max_js: float = 0.1  # Jensen-Shannon distance (base 2) above which it matters
    confidence: float = 0.95
    # The significance input: a latency regression between versions fails only when the versions'
    # order-statistic intervals at confidence 1 − significance show an increase beyond the
    # allowance (a version that did not regress then fails at most this often); None: compare the
    # point quantiles.
    significance: float | None = 0.05


@dataclass(frozen=True)
class Check:
    """A validated contract: the measurements it needs, and how they become a verdict."""

    requests: tuple[Request, ...]
    evaluate: Callable[[Source], CheckResult]
    # Measurements that depend on the first round's answers (asked once those are in).
    follow_up: Callable[[Source], tuple[Request, ...]] | None = None


# --- contract validation -----------------------------------------------------------------------

def finite(value: float, what: str, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(f"{what} must be a finite number, got {value!r}")
    if value < low:
        raise ContractError(f"{what} must be at least {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ContractError(f"{what} must be at most {high:g}, got {value:g}")
    return float(value)


def percentile_value(percentile: float) -> float:
    finite(percentile, "the percentile")
    if not 0 < percentile < 100:
        raise ContractError(f"a percentile must be between 0 and 100 (exclusive), got p{percentile:g}")
    return float(percentile)


def band(low: float, high: float) -> tuple[float, float]:
    finite(low, "the band's lower bound", high=100)
    finite(high, "the band's upper bound", high=100)
    if low > high:
        raise ContractError(f"the band {low:g}–{high:g} percent is inverted: write the lower bound first")
    return float(low), float(high)


# --- helpers -----------------------------------------------------------------------------------

def _successful(scope: Scope) -> tuple[Filter, ...]:
    return (Filter(scope.fields.status, "<", 400),)


def _queries(*measured) -> list[str]:
    # A measurement answered in sub-windows carries one query per line.
    return list(dict.fromkeys(q for m in measured for q in m.query.splitlines()))


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


# --- the checks --------------------------------------------------------------------------------

def latency_quantile(scope: Scope, settings: CheckSettings, percentile: float, threshold_ms: float,
                     successful_only: bool = False) -> Check:
    percentile = percentile_value(percentile)
    threshold_ms = finite(threshold_ms, "the latency threshold (ms)")
    q = percentile / 100
    name = f"p{percentile:g} latency" + (" (successful requests)" if successful_only else "")
    filters = _successful(scope) if successful_only else ()
    field = scope.fields.latency
    n_request = CountRequest(scope, filters + (valid_number(field),))
    dropped_request = DroppedRequest(scope, field, filters)
    quantile_request = QuantileRequest(scope, q, field, filters)

    def evaluate(source: Source) -> CheckResult:
        n_counted = source.get(n_request)
        n = int(n_counted.total)
        needed = settings.min_samples or min_samples_for_quantile(q, settings.quantile_tail)
        result = CheckResult(name=name, verdict=Verdict.INCONCLUSIVE, threshold=f"< {threshold_ms:g} ms",
                             n=n, window=scope.window)
        dropped = source.get(dropped_request)
        result.queries = _queries(n_counted, dropped)
        note = ""
        if dropped.value:
            note = (f" {int(dropped.value)} line(s) without a usable {field} (a plain number ≥ 0) "
                    "were left out.")
        if n == 0:
            result.reason = f"No requests with a {field} in the last {scope.window}." + note
            return result
        if n < needed:
            result.reason = f"n={n} < {needed} needed for a p{percentile:g}." + note
            return result
        measured = source.get(quantile_request)
        result.queries = _queries(measured, n_counted, dropped)
        if measured.value is None:
            result.reason = (measured.note or "The quantile came back empty or NaN.") + note
            return result
        result.value = measured.value
        result.measured = f"{measured.value:.1f} ms"
        passed = measured.value < threshold_ms
        result.verdict = Verdict.PASS if passed else Verdict.FAIL
        result.reason = (f"p{percentile:g} is {measured.value:.1f} ms, "
                         f"{'below' if passed else 'not below'} {threshold_ms:g} ms.") + note
        return result

    return Check((n_request, dropped_request, quantile_request), evaluate)


def error_rate(scope: Scope, settings: CheckSettings, threshold_pct: float) -> Check:
    """Share of requests answered 5xx. 4xx are the client's errors: reported, not counted."""
    threshold_pct = finite(threshold_pct, "the error-rate threshold (percent)", high=100)
    status = scope.fields.status
    request = CountRequest(scope, (numeric_filter(status),), (status,))

    def evaluate(source: Source) -> CheckResult:
        by_status = source.get(request)
        total = int(by_status.total)
        server = int(sum(v for (code,), v in by_status.groups.items() if _num(code) >= 500))
        client = int(sum(v for (code,), v in by_status.groups.items() if 400 <= _num(code) < 500))
        result = CheckResult(name="5xx error rate", verdict=Verdict.INCONCLUSIVE,
                             threshold=f"< {threshold_pct:g}%", n=total, window=scope.window,
                             queries=_queries(by_status))
        needed = settings.min_samples or settings.min_requests
        if total == 0:
            result.reason = f"No requests in the last {scope.window}: 0/0 is not a rate."
            return result
        rate = server / total
        low, high = wilson_interval(server, total, settings.confidence)
        result.value = rate
        result.measured = _pct(rate)
        context = (f"{server} of {total} requests were 5xx ({_pct(low)}–{_pct(high)} at "
                   f"{settings.confidence:.0%}); {client} were 4xx client errors, not counted.")
        if total < needed:
            result.reason = f"n={total} < {needed} requests needed. " + context
            return result
        passed = rate < threshold_pct / 100
        result.verdict = Verdict.PASS if passed else Verdict.FAIL
        result.reason = context
        return result

    return Check((request,), evaluate)


def class_counts_request(scope: Scope) -> CountRequest:
    return CountRequest(scope, _successful(scope), (scope.fields.predicted_class,))


def class_share(scope: Scope, settings: CheckSettings, label: str, low_pct: float,
                high_pct: float) -> Check:
    low_pct, high_pct = band(low_pct, high_pct)
    request = class_counts_request(scope)

    def evaluate(source: Source) -> CheckResult:
        counted = source.get(request)
        n = int(counted.total)
        hits = int(counted.groups.get((label,), 0))
        result = CheckResult(name=f"share of {label!r}", verdict=Verdict.INCONCLUSIVE,
                             threshold=f"{low_pct:g}–{high_pct:g}%", n=n, window=scope.window,
                             queries=_queries(counted))
        needed = settings.min_samples or settings.min_requests
        if n == 0:
            result.reason = f"No successful predictions in the last {scope.window}."
            return result
        share = hits / n
        ci_low, ci_high = wilson_interval(hits, n, settings.confidence)
        result.value = share
        result.measured = f"{_pct(share)} ({_pct(ci_low)}–{_pct(ci_high)})"
        context = (f"{hits} of {n} predictions; {settings.confidence:.0%} Wilson interval "
                   f"{_pct(ci_low)}–{_pct(ci_high)}.")
        if n < needed:
            result.reason = f"n={n} < {needed} predictions needed. " + context
            return result
        low, high = low_pct / 100, high_pct / 100
        if low <= share <= high:
            result.verdict, result.reason = Verdict.PASS, "Inside the band. " + context
        elif ci_high < low or ci_low > high:
            result.verdict, result.reason = Verdict.FAIL, "Outside the band, beyond sampling error. " + context
        else:
            result.reason = "Outside the band but within sampling error: more data needed. " + context
        return result

    return Check((request,), evaluate)


def minimum_requests(scope: Scope, settings: CheckSettings, minimum: int) -> Check:
    finite(minimum, "the minimum number of requests")
    status = scope.fields.status
    request = CountRequest(scope, (numeric_filter(status),), (status,))

    def evaluate(source: Source) -> CheckResult:
        counted = source.get(request)
        n = int(counted.total)
        passed = n >= minimum
        return CheckResult(name="request volume", verdict=Verdict.PASS if passed else Verdict.FAIL,
                           measured=f"{n} requests", threshold=f"≥ {minimum}", n=n, value=float(n),
                           window=scope.window, queries=_queries(counted),
                           reason=f"{n} requests in the last {scope.window}.")

    return Check((request,), evaluate)


def distribution_drift_check(scope: Scope, settings: CheckSettings, baseline_version: str) -> Check:
    base_scope = scope.with_version(baseline_version)
    current_request, baseline_request = class_counts_request(scope), class_counts_request(base_scope)

    def evaluate(source: Source) -> CheckResult:
        current = source.get(current_request)
        baseline = source.get(baseline_request)
        n_cur, n_base = int(current.total), int(baseline.total)
        result = CheckResult(
            name=f"prediction drift vs {baseline_version}", verdict=Verdict.INCONCLUSIVE,
            threshold=f"not (p < {settings.drift_alpha:g} and JS > {settings.drift_max_js:g})",
            n=n_cur, window=scope.window, queries=_queries(current, baseline))
        needed = settings.min_samples or settings.min_requests
        if n_cur < needed or n_base < needed:
            result.reason = (f"n={n_cur} (this version) and n={n_base} ({baseline_version}); "
                             f"{needed} predictions needed on each side.")
            return result
        drift = distribution_drift({k[0]: v for k, v in current.groups.items()},
                                   {k[0]: v for k, v in baseline.groups.items()})
        result.value = drift.js_distance
        result.measured = f"JS {drift.js_distance:.3f}, p={drift.p_value:.2g}"
        significant = drift.p_value < settings.drift_alpha
        large = drift.js_distance > settings.drift_max_js
        pooled = f" Rare classes pooled: {', '.join(drift.pooled)}." if drift.pooled else ""
        detail = (f"χ²={drift.statistic:.1f} (dof {drift.dof}), p={drift.p_value:.3g}; "
                  f"Jensen-Shannon distance {drift.js_distance:.3f}; n={n_cur} vs {n_base}.{pooled}")
        if significant and large:
            result.verdict, result.reason = Verdict.FAIL, "The distribution moved. " + detail
        else:
            why = "not significant" if not significant else "significant but small"
            result.verdict, result.reason = Verdict.PASS, f"No drift ({why}). " + detail
        return result

    return Check((current_request, baseline_request), evaluate)


def latency_regression(scope: Scope, settings: CheckSettings, percentile: float,
                       max_increase_pct: float, baseline_version: str) -> Check:
    """The q-quantile of this version's latency is at most ``max_increase_pct`` above the
    baseline version's.

    With a significance level α (the default) each version's quantile gets a distribution-free
    interval at confidence 1 − α by order statistics: of its n usable latencies (the count query),
    the ranks whose binomial bounds enclose the quantile, asked of the source as quantiles at the
    levels that return exactly those order statistics (a second round, once n is known). The
    check fails only when even the favourable ends of both intervals show an increase beyond the
    allowance (a version that did not regress fails at most α of the time: one tail of each
    interval), passes when even the unfavourable ends stay within it, and is inconclusive when
    they straddle it (:func:`mlobs.stats.quantiles.latency_regression`). Without α: the point
    quantiles decide, as before.
    """
    from mlobs.stats import quantiles

    percentile = percentile_value(percentile)
    max_increase_pct = finite(max_increase_pct, "the allowed increase (percent)")
    q = percentile / 100
    field = scope.fields.latency
    base_scope = scope.with_version(baseline_version)
    n_cur_request = CountRequest(scope, (valid_number(field),))
    n_base_request = CountRequest(base_scope, (valid_number(field),))
    cur_request = QuantileRequest(scope, q, field)
    base_request = QuantileRequest(base_scope, q, field)
    alpha = settings.significance
    confidence = 1 - alpha if alpha is not None else None
    needed = settings.min_samples or min_samples_for_quantile(q, settings.quantile_tail)

    def plans(source: Source):
        """Each version's order-statistic plan and its bound requests (None: not asked)."""
        out = []
        for version_scope, request in ((scope, n_cur_request), (base_scope, n_base_request)):
            n = int(source.get(request).total)
            plan = quantiles.quantile_plan(n, q, confidence) if n else None
            low = None if plan is None or plan.level_low is None else \
                QuantileRequest(version_scope, plan.level_low, field)
            high = None if plan is None or plan.level_high is None else \
                QuantileRequest(version_scope, plan.level_high, field)
            out.append((plan, low, high))
        return out

    def follow_up(source: Source) -> tuple[Request, ...]:
        if confidence is None:
            return ()
        n_cur = int(source.get(n_cur_request).total)
        n_base = int(source.get(n_base_request).total)
        if n_cur < needed or n_base < needed:
            return ()  # inconclusive on n alone: nothing more to ask
        return tuple(r for _, low, high in plans(source) for r in (low, high) if r is not None)

    def evaluate(source: Source) -> CheckResult:
        counted_cur, counted_base = source.get(n_cur_request), source.get(n_base_request)
        n_cur, n_base = int(counted_cur.total), int(counted_base.total)
        threshold = f"≤ +{max_increase_pct:g}%"
        if confidence is not None:
            threshold += f" ({confidence * 100:g}% intervals)"
        result = CheckResult(name=f"p{percentile:g} latency vs {baseline_version}",
                             verdict=Verdict.INCONCLUSIVE, threshold=threshold,
                             n=n_cur, window=scope.window,
                             queries=_queries(counted_cur, counted_base))
        if n_cur < needed or n_base < needed:
            result.reason = (f"n={n_cur} (this version) and n={n_base} ({baseline_version}); "
                             f"{needed} needed on each side for a p{percentile:g}.")
            return result
        cur = source.get(cur_request)
        base = source.get(base_request)
        result.queries = _queries(cur, base, counted_cur, counted_base)
        if cur.value is None or base.value is None or base.value <= 0:
            result.reason = cur.note or base.note or "A quantile came back empty, NaN or zero."
            return result
        change = cur.value / base.value - 1
        result.value = change
        if confidence is None:
            result.measured = f"{cur.value:.1f} vs {base.value:.1f} ms ({change * 100:+.1f}%)"
            passed = change <= max_increase_pct / 100
            result.verdict = Verdict.PASS if passed else Verdict.FAIL
            result.reason = (f"p{percentile:g} {cur.value:.1f} ms vs {base.value:.1f} ms on "
                             f"{baseline_version}: {change * 100:+.1f}% (point quantiles: "
                             "significance off).")
            return result
        intervals, bound_queries = [], []
        for (plan, low, high), point in zip(plans(source), (cur, base), strict=True):
            got = [source.get(r) if r is not None else None for r in (low, high)]
            bound_queries += [m for m in got if m is not None]
            missing = [m for m in got if m is not None and m.value is None]
            if missing:
                result.queries = _queries(cur, base, *bound_queries, counted_cur, counted_base)
                result.reason = missing[0].note or "A quantile at an interval bound came back empty."
                return result
            intervals.append(quantiles.interval_from_levels(
                plan, point.value, *(m.value if m is not None else None for m in got)))
        result.queries = _queries(cur, base, *bound_queries, counted_cur, counted_base)
        decision = quantiles.latency_regression(intervals[0], intervals[1], max_increase_pct / 100)
        result.verdict = {quantiles.PASS: Verdict.PASS, quantiles.FAIL: Verdict.FAIL}.get(
            decision.verdict, Verdict.INCONCLUSIVE)
        ratio = (f"×{decision.ratio:.3f} [{_bound(decision.ratio_low)}, "
                 f"{_bound(decision.ratio_high)}]") if decision.ratio is not None else ""
        result.measured = (f"{_ms_interval(intervals[0])} vs {_ms_interval(intervals[1])} "
                           f"({change * 100:+.1f}%, {ratio})")
        result.reason = (f"p{percentile:g} {_ms_interval(intervals[0])} (n={n_cur}) vs "
                         f"{_ms_interval(intervals[1])} (n={n_base}) on {baseline_version}, "
                         f"{confidence * 100:g}% order-statistic intervals (coverage "
                         f"{_coverage(intervals[0])} and {_coverage(intervals[1])}). "
                         + decision.reason)
        return result

    return Check((n_cur_request, n_base_request, cur_request, base_request), evaluate, follow_up)


def _bound(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def _ms_interval(iv) -> str:
    """``181.3 ms [176.0, 186.2]``; a missing bound (too few samples) is ``?``."""
    def ms(x: float | None) -> str:
        return "?" if x is None else f"{x:.1f}"
    return f"{iv.value:.1f} ms [{ms(iv.low)}, {ms(iv.high)}]"


def _coverage(iv) -> str:
    return f"{iv.coverage * 100:.1f}%" if iv.low is not None and iv.high is not None else "n/a"


def _num(text: str) -> float:
    from mlobs.loki.logql import parse_go_float

    number = parse_go_float(text)
    return math.nan if number is None else number
