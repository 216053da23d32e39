"""Regression gates that know when the golden set is too small.

A gate allows a metric to get worse by at most ``limit`` — absolute (``accuracy=0.01``) or
relative to the baseline (``macro_f1=2%``) — exactly as ``mlobs.evaluate.compare`` reads it.
With ``significance`` α (default 0.05):

- **fail** when the point estimate breaches the limit AND the regression is significant at α —
  the one-sided test of :class:`~mlobs.stats.deltas.DeltaInterval` (``p_worse ≤ α``; McNemar or
  the two-proportion z test for accuracy and error rate, the bootstrap for F1 and ECE);
- **inconclusive** when the point estimate breaches the limit but the regression is not
  significant: the golden set cannot tell a regression from noise. The decision says roughly how
  many samples would settle it (below);
- **pass** when the point estimate does not breach the limit.

With ``significance`` off (None) the decision is today's point-estimate gate: fail on a breach.

Samples that would settle it: taking the observed regression d (in the metric's units) as the
truth, the delta's standard error se shrinks as 1/√n, so a one-sided level-α test has power
1 − β once n' = n · ((z₁₋α + z₁₋β) / (d / se))². With β = 0.2 (80 % power) and α = 0.05 that is
n · 6.18 / z², z = d/se the observed z-score. For unpaired runs n' is the size of each run's
golden set. It is rough by design — the observed d is itself noisy — and never less than n + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlobs.errors import ConfigError
from mlobs.stats.deltas import DeltaInterval, metric_direction

DEFAULT_SIGNIFICANCE = 0.05
DEFAULT_POWER = 0.8
_FLOAT_TOLERANCE = 1e-12  # identical runs must never fail a zero-tolerance gate
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def parse_significance(text: str | float | None) -> float | None:
    """The ``significance`` input: a level in (0, 0.5] (``0.05``, ``5%``), empty for the default,
    or ``off`` for point-estimate gates (returns None)."""
    if text is None:
        return DEFAULT_SIGNIFICANCE
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip().lower()
        if raw == "":
            return DEFAULT_SIGNIFICANCE
        if raw in ("off", "none", "false", "no"):
            return None
        try:
            value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise ConfigError(f"significance: {text!r} is not a level like 0.05 or 5%, "
                              "nor 'off'") from None
    if not 0 < value <= 0.5 or math.isnan(value):
        raise ConfigError(f"significance: {text!r} must be in (0, 0.5], e.g. 0.05; "
                          "'off' compares point estimates")
    return value


@dataclass(frozen=True)
class GateDecision:
    metric: str
    limit: float
    relative: bool
    current: float | None
    baseline: float | None
    regression: float | None  # how much worse (absolute, or relative to the baseline)
    breached: bool | None  # the point estimate is worse than the limit allows
    verdict: str  # "pass", "fail" or "inconclusive"
    significance: float | None  # α; None: point-estimate gate
    p_value: float | None  # one-sided p of "the current run is worse"
    method: str  # e.g. "McNemar, paired"; "" for point-estimate gates
    samples_needed: int | None  # for an inconclusive breach: samples that would settle it
    reason: str

    @property
    def passed(self) -> bool | None:
        """Like ``GateResult.passed``: True, False, or None when not settled."""
        return {PASS: True, FAIL: False}.get(self.verdict)


def regression_of(metric: str, current: float, baseline: float, relative: bool) -> float:
    """How much worse ``current`` is than ``baseline`` (compare.check_gates' definition)."""
    worse_by = (baseline - current) if metric_direction(metric) else (current - baseline)
    if relative:
        return worse_by / abs(baseline) if baseline else (math.inf if worse_by > 0 else 0.0)
    return worse_by


def samples_to_settle(delta: DeltaInterval, significance: float,
                      power: float = DEFAULT_POWER) -> int | None:
    """Golden-set size at which the observed regression would be significant with ``power``
    (see the module docstring); None when the delta is not a regression or has no spread."""
    from scipy.stats import norm

    d = delta.worse_by
    se = delta.se
    if not (d > 0) or not (se > 0) or math.isnan(se):
        return None
    z_observed = d / se
    factor = ((norm.ppf(1 - significance) + norm.ppf(power)) / z_observed) ** 2
    n = max(delta.n_current, delta.n_baseline)
    return max(n + 1, math.ceil(n * factor))


def decide_gate(metric: str, limit: float, relative: bool, delta: DeltaInterval | None, *,
                significance: float | None = DEFAULT_SIGNIFICANCE,
                power: float = DEFAULT_POWER) -> GateDecision:
    """The verdict of one gate (``metric`` worse by at most ``limit``) on one delta."""
    kind = f"{limit * 100:g}%" if relative else f"{limit:g}"
    if delta is None or _missing(delta.current) or _missing(delta.baseline):
        return GateDecision(metric, limit, relative, getattr(delta, "current", None),
                            getattr(delta, "baseline", None), None, None, INCONCLUSIVE,
                            significance, None, "", None,
                            f"{metric} could not be compared with the baseline.")
    regression = regression_of(metric, delta.current, delta.baseline, relative)
    breached = regression > limit + _FLOAT_TOLERANCE
    unit = "relative " if relative else ""
    common = dict(metric=metric, limit=limit, relative=relative, current=delta.current,
                  baseline=delta.baseline, regression=regression, breached=breached,
                  significance=significance)
    worse = f"{_amount(regression, relative)} worse than the baseline (allowed {kind})"
    if not breached:
        return GateDecision(**common, verdict=PASS, p_value=delta.p_worse if significance else None,
                            method=delta.label if significance else "", samples_needed=None,
                            reason=f"{metric} is {worse if regression > 0 else 'not worse'}.")
    if significance is None:
        return GateDecision(**common, verdict=FAIL, p_value=None, method="", samples_needed=None,
                            reason=f"{metric} is {worse}.")
    if not delta.test:  # registered without an interval: nothing to test, the point decides
        return GateDecision(**common, verdict=FAIL, p_value=None, method=delta.label,
                            samples_needed=None,
                            reason=f"{metric} is {worse} (it has no interval to test "
                                   "significance with: point estimates).")
    p = delta.p_worse
    if not _missing(p) and p <= significance:
        return GateDecision(**common, verdict=FAIL, p_value=p, method=delta.label,
                            samples_needed=None,
                            reason=f"{metric} is {worse}, a significant {unit}regression "
                                   f"(one-sided {_p(p)} ≤ {significance:g}, {delta.label}).")
    needed = samples_to_settle(delta, significance, power)
    settle = (f"; about {needed:,} samples would settle it" if needed else "")
    return GateDecision(**common, verdict=INCONCLUSIVE, p_value=p, method=delta.label,
                        samples_needed=needed,
                        reason=f"{metric} is {worse}, but that is within the noise of "
                               f"{max(delta.n_current, delta.n_baseline):,} samples "
                               f"(one-sided {_p(p)} > {significance:g}, {delta.label}){settle}.")


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _amount(regression: float, relative: bool) -> str:
    return f"{regression * 100:.3g}%" if relative else f"{regression:.3g}"


def _p(p: float) -> str:
    from mlobs.stats.format import format_p

    return format_p(p)
