"""Gates under `significance`: fail only on a breach that is significant, inconclusive on one that
is not (with the samples that would settle it), today's point gates when off — and, over
simulated golden sets, few false alarms without a regression and few misses with one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlobs.errors import ConfigError
from mlobs.evaluate import compare
from mlobs.evaluate.metrics import from_aggregate
from mlobs.lake.aggregate import aggregate_batches
from mlobs.stats.cells import cells_from_aggregate
from mlobs.stats.deltas import DeltaInterval, paired_deltas, unpaired_cell_deltas
from mlobs.stats.gates import decide_gate, parse_significance, samples_to_settle
from statsim import CLASSES, Model, batch, joint_from_arrays, paired_samples, sample

LABELS = sorted(CLASSES)


@pytest.mark.parametrize(("text", "expected"), [
    (None, 0.05), ("", 0.05), ("0.05", 0.05), ("0.01", 0.01), ("5%", 0.05), (" OFF ", None),
    ("off", None), (0.1, 0.1)])
def test_parse_significance(text, expected):
    assert parse_significance(text) == expected


@pytest.mark.parametrize("text", ["0", "1", "0.7", "-0.05", "nan", "five", "5%%"])
def test_bad_significance_is_a_config_error(text):
    with pytest.raises(ConfigError, match="significance"):
        parse_significance(text)


def _delta(metric, current, baseline, *, p_worse=0.5, se=0.01, n=1000, higher=True):
    return DeltaInterval(metric, current, baseline, current - baseline, math.nan, math.nan, 0.95,
                         p_worse, p_worse, se, True, "McNemar exact", "", n, n, higher)


def test_off_is_todays_point_estimate_gate():
    """With significance off, every verdict equals compare.check_gates' on the same numbers."""
    rng = np.random.default_rng(3)
    rows = [[{"slice_name": "", "slice_value": "", "label": label, "prediction": pred,
              "conf_bin": int(rng.integers(0, 10)), "is_error": False,
              "n": int(rng.integers(1, 40)), "conf_sum": 0.0}
             for label in ("a", "b") for pred in ("a", "b")] for _ in range(40)]
    gates = compare.parse_gates("accuracy=0.01,accuracy=2%,macro_f1=0.02,error_rate=0,f1[a]=5%")
    for cur_rows, base_rows in zip(rows[::2], rows[1::2], strict=True):
        for r in cur_rows + base_rows:
            r["conf_sum"] = (r["conf_bin"] + 0.5) / 10 * r["n"]
        cur, base = (from_aggregate(r).overall for r in (cur_rows, base_rows))
        expected = compare.check_gates(gates, cur, base)
        for gate, result in zip(gates, expected, strict=True):
            higher = gate.metric != "error_rate"
            delta = _delta(gate.metric, compare.metric_value(cur, gate.metric),
                           compare.metric_value(base, gate.metric), higher=higher)
            decision = decide_gate(gate.metric, gate.limit, gate.relative, delta,
                                   significance=None)
            assert decision.passed == result.passed
            assert decision.regression == pytest.approx(result.regression)


def test_a_breach_fails_only_when_significant():
    breach = _delta("accuracy", 0.80, 0.83, p_worse=0.01)
    assert decide_gate("accuracy", 0.01, False, breach).verdict == "fail"
    noisy = _delta("accuracy", 0.80, 0.83, p_worse=0.2, se=0.025, n=480)
    decision = decide_gate("accuracy", 0.01, False, noisy)
    assert decision.verdict == "inconclusive" and decision.passed is None
    # n' = n · ((z_.95 + z_.80) / (d / se))² = 480 · (2.486 / 1.2)² ≈ 2060
    assert decision.samples_needed == math.ceil(480 * ((1.6448536 + 0.8416212) / 1.2) ** 2)
    assert "about 2,061 samples would settle it" in decision.reason
    assert decide_gate("accuracy", 0.05, False, breach).verdict == "pass"  # within the limit
    # relative limits and lower-is-better metrics keep compare's semantics
    ece = _delta("ece", 0.08, 0.05, p_worse=0.001, higher=False)
    assert decide_gate("ece", 0.5, True, ece).verdict == "fail"  # 60 % worse > 50 %
    assert decide_gate("ece", 0.7, True, ece).verdict == "pass"
    missing = decide_gate("f1[cat]", 0.1, False, None)
    assert missing.verdict == "inconclusive" and "could not be compared" in missing.reason


def test_identical_runs_pass_zero_tolerance_gates():
    rows = sample(Model(), np.random.default_rng(1), 2000)
    deltas = paired_deltas(joint_from_arrays(rows, rows), labels=LABELS)
    for name, delta in deltas.items():
        assert delta.delta == 0 and delta.p_worse == 1.0, name
        assert decide_gate(name, 0.0, False, delta).verdict == "pass"


def _simulate(current: Model, baseline: Model, *, n: int, sims: int, paired: bool,
              gates: dict[str, tuple[float, bool]], seed: int) -> dict[str, dict[str, float]]:
    """Share of simulated comparisons in which each gate fails, under significance 0.05 and
    under today's point-estimate gates."""
    rng = np.random.default_rng(seed)
    metrics = sorted(gates)
    fails = {name: {"significance": 0, "point": 0} for name in gates}
    for _ in range(sims):
        if paired:
            c, b = paired_samples(current, baseline, rng, n)
            deltas = paired_deltas(joint_from_arrays(c, b), labels=LABELS, metrics=metrics)
        else:
            cells = [cells_from_aggregate(aggregate_batches([batch(*sample(model, rng, n))]),
                                          labels=LABELS) for model in (current, baseline)]
            deltas = unpaired_cell_deltas(*cells, metrics=metrics)
        for name, (limit, relative) in gates.items():
            fails[name]["significance"] += decide_gate(name, limit, relative,
                                                       deltas[name]).verdict == "fail"
            fails[name]["point"] += decide_gate(name, limit, relative, deltas[name],
                                                significance=None).verdict == "fail"
    return {name: {k: v / sims for k, v in counts.items()} for name, counts in fails.items()}


# The issue's gates: accuracy may drop by 0.01, macro F1 by 2 % of itself, ECE rise by 0.01.
ISSUE_GATES = {"accuracy": (0.01, False), "macro_f1": (0.02, True), "ece": (0.01, False)}


@pytest.mark.slow
@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_without_a_regression_gates_fail_at_most_5_percent(paired):
    """1,000 seeded pairs of runs of the same classifier on 480 samples (the demo's size): the
    significance gates fail ≤ 5 % of the time, where today's point gates fail far more often."""
    rates = _simulate(Model(), Model(), n=480, sims=1000, paired=paired, gates=ISSUE_GATES,
                      seed=16)
    for name, rate in rates.items():
        assert rate["significance"] <= 0.05, (name, rate)
    assert rates["accuracy"]["point"] > 0.2  # the issue's complaint, measured


@pytest.mark.slow
@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_zero_tolerance_gates_keep_the_level(paired):
    """Limits of 0 leave only the test: without a regression it fails at the level α (5 %, here
    checked with the Monte-Carlo allowance of 2 standard errors over 1,000 runs: ≤ 6.4 %)."""
    gates = {name: (0.0, False) for name in ISSUE_GATES}
    rates = _simulate(Model(), Model(), n=2000, sims=1000, paired=paired, gates=gates, seed=17)
    for name, rate in rates.items():
        assert rate["significance"] <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 1000), (name, rate)
        assert rate["point"] > 0.3  # a zero-tolerance point gate fails on noise alone


@pytest.mark.slow
@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_a_regression_of_twice_the_allowed_drop_fails_at_least_95_percent(paired):
    """10,000 samples; the current model is worse by exactly twice each gate's allowance:
    accuracy −0.02 for `accuracy=0.01` (true values), and macro F1 and ECE gates set to half of
    their true changes."""
    baseline = Model()
    current = Model(shift=baseline.shift + 0.02 / (1 - baseline.error))
    assert current.accuracy - baseline.accuracy == pytest.approx(-0.02, abs=1e-9)
    gates = {"accuracy": (0.01, False),
             "macro_f1": ((1 - current.macro_f1 / baseline.macro_f1) / 2, True),
             "ece": ((current.ece - baseline.ece) / 2, False)}
    rates = _simulate(current, baseline, n=10_000, sims=300, paired=paired, gates=gates, seed=18)
    for name, rate in rates.items():
        assert rate["significance"] >= 0.95, (name, rate)


@pytest.mark.slow
def test_the_samples_that_would_settle_it_roughly_do():
    """Take an inconclusive breach on 480 samples; at the suggested size, with the observed
    regression as the truth, the gate's test is significant in roughly 80 % of runs."""
    rng = np.random.default_rng(21)
    baseline, current = Model(), Model(shift=0.08)
    while True:
        c, b = paired_samples(current, baseline, rng, 480)
        delta = paired_deltas(joint_from_arrays(c, b), labels=LABELS, metrics=["accuracy"])[
            "accuracy"]
        decision = decide_gate("accuracy", 0.01, False, delta)
        if decision.verdict == "inconclusive":
            break
    needed = samples_to_settle(delta, 0.05)
    assert needed == decision.samples_needed and needed > 480
    # a model pair whose true drop equals the observed one, at the suggested size
    truth = Model(shift=baseline.shift + delta.worse_by / (1 - baseline.error))
    significant = 0
    for _ in range(300):
        c, b = paired_samples(truth, baseline, rng, needed)
        d = paired_deltas(joint_from_arrays(c, b), labels=LABELS, metrics=["accuracy"])
        significant += d["accuracy"].p_worse <= 0.05
    assert 0.6 <= significant / 300 <= 0.95
