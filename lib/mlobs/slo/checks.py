"""The SLO checks. Each turns measurements into a verdict with the number, threshold and n.

Honesty rules: no data, too few samples for the statistic, NaN, or 0/0 is inconclusive — never a
pass; every result carries the exact queries behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlobs.result import Verdict
from mlobs.slo.model import CheckResult, Filter, Scope
from mlobs.slo.source import Source, numeric_filter
from mlobs.stats import distribution_drift, min_samples_for_quantile, wilson_interval


@dataclass
class CheckSettings:
    min_requests: int = 100  # for rates, shares and distributions
    quantile_tail: int = 10  # samples beyond a quantile before it counts (p99 ⇒ 1000)
    min_samples: int | None = None  # a floor set by the feature, overriding both
    drift_alpha: float = 0.01  # chi-square p-value below which a difference is significant
    drift_max_js: float = 0.1  # Jensen-Shannon distance (base 2) above which it matters
    confidence: float = 0.95


def _successful(scope: Scope) -> tuple[Filter, ...]:
    return (Filter(scope.fields.status, "<", 400),)


def _queries(*measured) -> list[str]:
    return list(dict.fromkeys(m.query for m in measured))


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def latency_quantile(source: Source, scope: Scope, settings: CheckSettings, percentile: float,
                     threshold_ms: float, successful_only: bool = False) -> CheckResult:
    q = percentile / 100
    name = f"p{percentile:g} latency" + (" (successful requests)" if successful_only else "")
    filters = _successful(scope) if successful_only else ()
    field = scope.fields.latency
    n_counted = source.count(scope, filters + (numeric_filter(field),))
    n = int(n_counted.total)
    needed = settings.min_samples or min_samples_for_quantile(q, settings.quantile_tail)
    result = CheckResult(name=name, verdict=Verdict.INCONCLUSIVE, threshold=f"< {threshold_ms:g} ms",
                         n=n, window=scope.window)
    dropped = source.dropped(scope, field, filters)
    result.queries = _queries(n_counted, dropped)
    note = ""
    if dropped.value:
        note = f" {int(dropped.value)} line(s) with a non-numeric {field} were left out."
    if n == 0:
        result.reason = f"No requests with a {field} in the last {scope.window}." + note
        return result
    if n < needed:
        result.reason = f"n={n} < {needed} needed for a p{percentile:g}." + note
        return result
    measured = source.quantile(scope, q, field, filters)
    result.queries = _queries(measured, n_counted, dropped)
    if measured.value is None:
        result.reason = "The quantile came back empty or NaN." + note
        return result
    result.value = measured.value
    result.measured = f"{measured.value:.1f} ms"
    passed = measured.value < threshold_ms
    result.verdict = Verdict.PASS if passed else Verdict.FAIL
    result.reason = (f"p{percentile:g} is {measured.value:.1f} ms, "
                     f"{'below' if passed else 'not below'} {threshold_ms:g} ms.") + note
    return result


def error_rate(source: Source, scope: Scope, settings: CheckSettings, threshold_pct: float) -> CheckResult:
    """Share of requests answered 5xx. 4xx are the client's errors: reported, not counted."""
    status = scope.fields.status
    by_status = source.count(scope, (numeric_filter(status),), by=(status,))
    total = int(by_status.total)
    server = int(sum(v for (code,), v in by_status.groups.items() if _num(code) >= 500))
    client = int(sum(v for (code,), v in by_status.groups.items() if 400 <= _num(code) < 500))
    result = CheckResult(name="5xx error rate", verdict=Verdict.INCONCLUSIVE,
                         threshold=f"< {threshold_pct:g}%", n=total, window=scope.window,
                         queries=[by_status.query])
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


def class_counts(source: Source, scope: Scope):
    return source.count(scope, _successful(scope), by=(scope.fields.predicted_class,))


def class_share(source: Source, scope: Scope, settings: CheckSettings, label: str,
                low_pct: float, high_pct: float) -> CheckResult:
    counted = class_counts(source, scope)
    n = int(counted.total)
    hits = int(counted.groups.get((label,), 0))
    result = CheckResult(name=f"share of {label!r}", verdict=Verdict.INCONCLUSIVE,
                         threshold=f"{low_pct:g}–{high_pct:g}%", n=n, window=scope.window,
                         queries=[counted.query])
    needed = settings.min_samples or settings.min_requests
    if n == 0:
        result.reason = f"No successful predictions in the last {scope.window}."
        return result
    share = hits / n
    ci_low, ci_high = wilson_interval(hits, n, settings.confidence)
    result.value = share
    result.measured = f"{_pct(share)} ({_pct(ci_low)}–{_pct(ci_high)})"
    context = f"{hits} of {n} predictions; {settings.confidence:.0%} Wilson interval {_pct(ci_low)}–{_pct(ci_high)}."
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


def minimum_requests(source: Source, scope: Scope, settings: CheckSettings, minimum: int) -> CheckResult:
    status = scope.fields.status
    counted = source.count(scope, (numeric_filter(status),), by=(status,))
    n = int(counted.total)
    passed = n >= minimum
    return CheckResult(name="request volume", verdict=Verdict.PASS if passed else Verdict.FAIL,
                       measured=f"{n} requests", threshold=f"≥ {minimum}", n=n, value=float(n),
                       window=scope.window, queries=[counted.query],
                       reason=f"{n} requests in the last {scope.window}.")


def distribution_drift_check(source: Source, scope: Scope, settings: CheckSettings,
                             baseline_version: str) -> CheckResult:
    current = class_counts(source, scope)
    base_scope = scope.with_version(baseline_version)
    baseline = class_counts(source, base_scope)
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


def latency_regression(source: Source, scope: Scope, settings: CheckSettings, percentile: float,
                       max_increase_pct: float, baseline_version: str) -> CheckResult:
    q = percentile / 100
    field = scope.fields.latency
    base_scope = scope.with_version(baseline_version)
    n_cur = int(source.count(scope, (numeric_filter(field),)).total)
    n_base = int(source.count(base_scope, (numeric_filter(field),)).total)
    needed = settings.min_samples or min_samples_for_quantile(q, settings.quantile_tail)
    result = CheckResult(name=f"p{percentile:g} latency vs {baseline_version}",
                         verdict=Verdict.INCONCLUSIVE, threshold=f"≤ +{max_increase_pct:g}%",
                         n=n_cur, window=scope.window)
    if n_cur < needed or n_base < needed:
        result.reason = (f"n={n_cur} (this version) and n={n_base} ({baseline_version}); "
                         f"{needed} needed on each side for a p{percentile:g}.")
        return result
    cur = source.quantile(scope, q, field)
    base = source.quantile(base_scope, q, field)
    result.queries = _queries(cur, base)
    if cur.value is None or base.value is None or base.value <= 0:
        result.reason = "A quantile came back empty, NaN or zero."
        return result
    change = cur.value / base.value - 1
    result.value = change
    result.measured = f"{cur.value:.1f} vs {base.value:.1f} ms ({change * 100:+.1f}%)"
    passed = change <= max_increase_pct / 100
    result.verdict = Verdict.PASS if passed else Verdict.FAIL
    result.reason = (f"p{percentile:g} {cur.value:.1f} ms vs {base.value:.1f} ms on "
                     f"{baseline_version}: {change * 100:+.1f}%.")
    return result


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
