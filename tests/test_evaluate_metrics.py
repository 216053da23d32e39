"""Metrics from aggregate counts, deltas and regression gates — checked against hand counts."""

from __future__ import annotations

import math

import pytest

from mlobs.errors import ConfigError
from mlobs.evaluate import compare
from mlobs.evaluate.metrics import ERROR_PREDICTION, from_aggregate


def row(label, prediction, n, *, conf=0.9, bins=10, slice_=("", ""), error=False):
    conf_bin = -1 if conf is None else min(int(conf * bins), bins - 1)
    return {"slice_name": slice_[0], "slice_value": slice_[1], "label": label,
            "prediction": None if error else prediction, "conf_bin": -1 if error else conf_bin,
            "is_error": error, "n": n, "conf_sum": 0.0 if (error or conf is None) else conf * n}


def sample_rows():
    # 10 positives: 8 right, 1 wrong, 1 error; 6 negatives: 5 right, 1 wrong
    whole = [row("pos", "pos", 8), row("pos", "neg", 1, conf=0.6), row("pos", None, 1, error=True),
             row("neg", "neg", 5, conf=0.7), row("neg", "pos", 1, conf=0.6)]
    # slice language=de holds only negatives: "pos" is absent there
    de = [row("neg", "neg", 2, conf=0.7, slice_=("language", "de"))]
    return whole + de


def test_overall_metrics_match_hand_counts():
    m = from_aggregate(sample_rows()).overall
    assert m.n == 16 and m.errors == 1
    assert m.accuracy == pytest.approx(13 / 16)
    pos = next(c for c in m.per_class if c.label == "pos")
    assert pos.precision == pytest.approx(8 / 9) and pos.recall == pytest.approx(8 / 10)
    assert pos.support == 10
    assert m.labels == ["neg", "pos"]
    assert m.confusion == [[5, 1, 0], [1, 8, 1]]  # rows neg,pos; columns neg,pos,<error>
    # ECE over the 15 rows with a confidence: bins 0.6 (2 rows, 0 right), 0.7 (5, all right), 0.9 (8, all right)
    expected = (2 * abs(0 - 0.6) + 5 * abs(1 - 0.7) + 8 * abs(1 - 0.9)) / 15
    assert m.ece == pytest.approx(expected)
    assert ERROR_PREDICTION not in m.labels


def test_a_class_absent_from_a_slice_keeps_the_columns():
    run = from_aggregate(sample_rows())
    de = run.slices[0]
    assert (de.name, de.value) == ("language", "de")
    assert de.metrics.labels == run.overall.labels
    assert [c.label for c in de.metrics.per_class] == ["neg", "pos"]
    assert de.metrics.per_class[1].support == 0 and de.metrics.per_class[1].f1 == 0
    assert de.metrics.accuracy == 1.0 and de.metrics.confusion == [[2, 0, 0], [0, 0, 0]]


def test_gates_absolute_relative_and_direction():
    base = from_aggregate([row("a", "a", 90), row("a", "b", 10)]).overall  # accuracy 0.9
    cur = from_aggregate([row("a", "a", 85), row("a", "b", 15)]).overall  # accuracy 0.85
    gates = compare.parse_gates("accuracy=0.01, accuracy=10%, error_rate=0")
    results = compare.check_gates(gates, cur, base)
    assert [r.passed for r in results] == [False, True, True]
    assert results[0].regression == pytest.approx(0.05)
    assert results[1].regression == pytest.approx(0.05 / 0.9)


def test_identical_runs_pass_zero_tolerance_gates():
    m = from_aggregate(sample_rows()).overall
    results = compare.check_gates(compare.parse_gates("accuracy=0,macro_f1=0,ece=0,f1[pos]=0"), m, m)
    assert all(r.passed for r in results)


def test_class_gate_on_a_missing_class_cannot_be_checked():
    m = from_aggregate(sample_rows()).overall
    [result] = compare.check_gates(compare.parse_gates("f1[cat]=0.1"), m, m)
    assert result.passed is None


@pytest.mark.parametrize("text", ["accuracy", "accuracy=x", "recall=0.1", "accuracy=-1"])
def test_bad_gate_specs_are_config_errors(text):
    with pytest.raises(ConfigError):
        compare.parse_gates(text)


def test_deltas_know_which_way_is_better():
    base = from_aggregate([row("a", "a", 9), row("a", "b", 1)]).overall
    cur = from_aggregate([row("a", "a", 10)]).overall
    deltas = {d.metric: d for d in compare.headline_deltas(cur, base)}
    assert deltas["accuracy"].better is True
    assert deltas["accuracy"].change == pytest.approx(0.1)
    assert deltas["error_rate"].better is None  # 0 → 0


def test_empty_run_is_nan_not_a_crash():
    m = from_aggregate([]).overall
    assert m.n == 0 and math.isnan(m.accuracy)


# -- error kinds and the trust gate ---------------------------------------------------------------


def test_error_texts_that_differ_only_in_values_are_one_kind():
    from mlobs.evaluate.trust import ErrorTally

    tally = ErrorTally()
    # What clients and Bentos say, with the numbers, ids and values that vary per sample.
    tally.add_messages([f"unreadable prediction [{p:.2f}, {1 - p:.2f}]" for p in (0.74, 0.12, 0.5)])
    tally.add_messages([f"unreadable prediction [{p}, {q}, {1 - p - q:.3f}]" for p, q in ((0.1, 0.2),)])
    tally.add_messages(["HTTP 500: An unexpected error has occurred, please check the server log."] * 4)
    tally.add_messages(["HTTP 503: overloaded (gave up after 7 attempts)",
                        "HTTP 503: overloaded (gave up after 9 attempts)"])
    tally.add_messages([f"could not convert string to float: {v!r}" for v in ("abc", "n/a", "?")])
    tally.add_messages([f'prediction item has no label: {{"id": "s{i:05d}", "score": 0.{i}}}'
                        for i in range(1, 6)])
    tally.add_messages(["request 3f2a9c1e-1b2c-4d5e-8f90-123456789abc failed",
                        "request 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0 failed"])
    tally.add_messages(["can't score the model's input 'x'", "can't score the model's input 'y z'"])
    summary = tally.summary()
    assert [(k.count, k.example) for k in summary.kinds] == [
        (5, 'prediction item has no label: {"id": "s00001", "score": 0.1}'),
        (4, "HTTP 500: An unexpected error has occurred, please check the server log."),
        (4, "unreadable prediction [0.74, 0.26]"),
        (3, "could not convert string to float: 'abc'"),
        (2, "HTTP 503: overloaded (gave up after 7 attempts)"),
        (2, "can't score the model's input 'x'"),
        (2, "request 3f2a9c1e-1b2c-4d5e-8f90-123456789abc failed"),
    ]
    assert summary.errors == summary.rows == 22 and summary.more_kinds == 0
    assert summary.lines()[0] == '5 × prediction item has no label: {"id": "s00001", "score": 0.1}'


def test_status_codes_and_keys_keep_kinds_apart():
    from mlobs.evaluate.trust import kind_of

    assert kind_of("HTTP 500: boom") != kind_of("HTTP 503: boom")
    assert kind_of('no label: {"scores": [0.1]}') != kind_of('no label: {"probs": [0.1]}')
    assert kind_of("the Bento answered a dict") != kind_of("the Bento answered a list")


def test_kinds_are_bounded_and_counted_from_arrow_batches():
    import pyarrow as pa

    from mlobs.evaluate.trust import ErrorTally

    tally = ErrorTally(max_kinds=3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    batch = pa.record_batch({"error": [f"{w} failed" for w in words] * 2 + [None] * 5})
    tally.add(batch)
    tally.add(batch)
    summary = tally.summary(top=2)
    assert (summary.rows, summary.errors) == (30, 20)
    # 3 kinds kept (4 each); the two beyond the bound count together (8), never lost.
    assert [(k.count, k.example) for k in summary.kinds] == [(4, "alpha failed"), (4, "beta failed")]
    assert (summary.more_kinds, summary.more_errors) == (2, 4 + 8)
    assert sum(k.count for k in summary.kinds) + summary.more_errors == summary.errors


@pytest.mark.parametrize("text, rate", [("", 0.05), ("0", 0.0), ("0.1", 0.1), ("12.5%", 0.125),
                                        (" 1 ", 1.0), ("100%", 1.0)])
def test_max_error_rate_values(text, rate):
    from mlobs.evaluate.trust import parse_max_error_rate

    assert parse_max_error_rate(text) == pytest.approx(rate)


def test_the_gate_admits_up_to_the_limit_and_refuses_beyond():
    from mlobs.evaluate.trust import TrustGate, UntrustedRun
    from mlobs.lake.runs import RunCounts

    gate = TrustGate(0.05)
    gate.accept(RunCounts(rows=100, errors=5))  # exactly the limit: admitted
    with pytest.raises(UntrustedRun) as err:
        gate.accept(RunCounts(rows=100, errors=6))
    assert err.value.one_line() == ("6 of 100 samples failed (6 %, more than max-error-rate 5 %): "
                                    "the run was not committed")
    TrustGate(0.0).accept(RunCounts(rows=10, errors=0))
    with pytest.raises(UntrustedRun):
        TrustGate(0.0).accept(RunCounts(rows=10, errors=1))


def test_an_error_row_without_a_label_is_wrong():
    """Tables written by earlier versions can hold unlabelled rows. One right row plus one error
    row without a label is accuracy 0.5, not 1.0 (both used to become "<error>" and match); an
    unlabelled row that did predict a class is a false positive of that class, in no support."""
    right = row("a", "a", 1, conf=0.95)
    failed = {**row(None, None, 1, error=True)}
    m = from_aggregate([right, failed]).overall
    assert (m.n, m.errors, m.accuracy) == (2, 1, 0.5)
    assert m.labels == ["a"] and m.per_class[0].support == 1 and m.per_class[0].recall == 1.0
    assert m.confusion == [[1, 0]]
    guessed = from_aggregate([right, row(None, "a", 1, conf=0.7)]).overall
    assert guessed.accuracy == 0.5 and guessed.per_class[0].precision == 0.5
    # the statistics engine, which never had the bug, agrees
    from mlobs.stats.intervals import metric_intervals

    assert metric_intervals([right, failed]).accuracy.value == 0.5
    assert metric_intervals([right, row(None, "a", 1, conf=0.7)]).accuracy.value == 0.5
