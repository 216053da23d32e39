"""Intervals for every headline metric from the lake's counts: the point estimates are evaluate's
own (scikit-learn), Wilson is Wilson, the cell bootstrap is the row bootstrap, results are
byte-stable, and the 95 % intervals cover the truth of known simulated classifiers."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from mlobs.evaluate.metrics import from_aggregate
from mlobs.lake.aggregate import aggregate_batches
from mlobs.stats.cells import cells_from_aggregate
from mlobs.stats.intervals import cell_intervals, metric_intervals, wilson
from statsim import CLASSES, Model, batch, sample
from synthetic import synthetic_batches


def _row(label, prediction, n, conf=0.9, error=False, slice_=("", "")):
    return {"slice_name": slice_[0], "slice_value": slice_[1], "label": label,
            "prediction": None if error else prediction,
            "conf_bin": -1 if (error or conf is None) else min(int(conf * 10), 9),
            "is_error": error, "n": n, "conf_sum": 0.0 if (error or conf is None) else conf * n}


CORPUS = {
    # the lake's own synthetic runs: 3 classes, ~1 % error rows, two slice columns
    "synthetic": lambda: aggregate_batches(synthetic_batches(5000, seed=3)),
    # binary string labels as pandas writes them; a class predicted but never labelled
    "binary+unlabelled-class": lambda: [
        _row("0", "0", 40, 0.8), _row("0", "1", 7, 0.6), _row("1", "1", 30, 0.95),
        _row("1", "0", 5, 0.55), _row("1", "2", 3, 0.51), _row("0", None, 2, error=True)],
    # a class absent from a slice; confidences missing for some rows (Bentos without scores)
    "absent-class+no-confidence": lambda: [
        _row("pos", "pos", 8), _row("pos", "neg", 1, conf=None), _row("pos", None, 1, error=True),
        _row("neg", "neg", 5, conf=0.7), _row("neg", "pos", 1, conf=0.6),
        _row("neg", "neg", 2, conf=0.7, slice_=("language", "de"))],
    # many classes, one never predicted (per-class 0s and zero-division)
    "ten-classes": lambda: [
        _row(f"c{i}", f"c{(i + (j % 3 == 0)) % 9}", 3 + i + j, 0.5 + 0.05 * j)
        for i in range(10) for j in range(5)],
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_point_estimates_are_evaluates_own_metrics(name):
    aggregate = CORPUS[name]()
    rows = aggregate.to_pylist() if hasattr(aggregate, "to_pylist") else aggregate
    run = from_aggregate(rows)
    slices = [("", "", run.overall)] + [(s.name, s.value, s.metrics) for s in run.slices]
    for slice_name, slice_value, m in slices:
        iv = metric_intervals(aggregate, labels=run.overall.labels,
                              slice_key=(slice_name, slice_value), resamples=200)
        assert iv.n == m.n and iv.errors == m.errors
        for metric, value in m.headline().items():
            got = iv.headline()[metric]
            if value is None or math.isnan(value):
                assert got is None  # undefined (no sample, no confidence): no interval
            else:
                assert got.value == pytest.approx(value, abs=1e-12), (slice_name, metric)
                assert got.low <= got.value + 1e-12 or metric == "ece"
        for mine, theirs in zip(iv.per_class, m.per_class, strict=True):
            assert mine.label == theirs.label and mine.support == theirs.support
            assert mine.precision.value == pytest.approx(theirs.precision, abs=1e-12)
            assert mine.recall.value == pytest.approx(theirs.recall, abs=1e-12)
            assert mine.f1.value == pytest.approx(theirs.f1, abs=1e-12)
            assert iv.get(f"f1[{mine.label}]") is mine.f1


def test_wilson_is_the_closed_form_score_interval():
    for k, n, level in ((0, 10, 0.95), (335, 480, 0.95), (480, 480, 0.95), (7, 1000, 0.9),
                        (123_456, 1_000_000, 0.99)):
        from scipy.stats import norm

        z = norm.ppf(1 - (1 - level) / 2)
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        got = wilson(k, n, level)
        assert (got.low, got.high) == (pytest.approx(max(0.0, centre - half), abs=1e-12),
                                       pytest.approx(min(1.0, centre + half), abs=1e-12))


def test_demo_sized_accuracy_interval_is_about_plus_minus_three_points():
    # the premise: on 480 samples a 95 % interval is ~±2.8 points wide at ~70 % accuracy
    iv = wilson(335, 480)
    assert 0.026 < (iv.high - iv.low) / 2 < 0.043


def test_cell_bootstrap_is_the_row_bootstrap():
    """Resampling cells multinomially = resampling rows: compare with a row-level bootstrap that
    recomputes macro F1 with scikit-learn on resampled rows."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(11)
    label, pred, conf, error = sample(Model(), rng, 400)
    aggregate = aggregate_batches([batch(label, pred, conf, error)])
    cells = cells_from_aggregate(aggregate, labels=list(CLASSES))
    # replicate the bootstrap distribution of the cells
    from mlobs.stats import _engine

    (t, p), n, _ = _engine.reduce_cells([cells.true, cells.pred], cells.n)
    side = _engine.F1Side(t, p, 3)
    cell_reps = np.concatenate([side.scores(w)["macro_f1"] for w in
                                _engine.multinomial_blocks(n, 2000, np.random.default_rng(1))])
    y_true = np.array(CLASSES)[label]
    y_pred = np.where(error, "<error>", np.array(CLASSES)[pred])
    row_reps = []
    for _ in range(600):
        i = rng.integers(0, len(label), len(label))
        row_reps.append(f1_score(y_true[i], y_pred[i], labels=list(CLASSES), average="macro",
                                 zero_division=0))
    row_reps = np.array(row_reps)
    assert cell_reps.mean() == pytest.approx(row_reps.mean(), abs=0.004)
    assert cell_reps.std() == pytest.approx(row_reps.std(), rel=0.12)


def test_same_counts_give_byte_identical_intervals_whatever_the_row_order():
    rng = np.random.default_rng(5)
    rows = sample(Model(), rng, 3000)
    order = rng.permutation(3000)
    first = aggregate_batches([batch(*rows)])
    shuffled = aggregate_batches(
        [batch(*(a[order[i:i + 500]] for a in rows)) for i in range(0, 3000, 500)])
    a, b = metric_intervals(first), metric_intervals(shuffled)
    assert repr(a) == repr(b)
    assert str(a.macro_f1) == str(b.macro_f1)
    assert str(a.ece).count("[") == 1
    # and another run's counts give other resamples (the seed follows the counts)
    c = metric_intervals(aggregate_batches([batch(*sample(Model(), rng, 3000))]))
    assert repr(c.macro_f1) != repr(a.macro_f1)


def test_cost_follows_cells_not_rows():
    """A million-row run has as many cells as a thousand-row one (bins × classes): its intervals
    come from the same small arrays (timing is measured in bench/stats_intervals.py)."""
    small = cells_from_aggregate(aggregate_batches(synthetic_batches(2_000, seed=1)))
    large = cells_from_aggregate(aggregate_batches(synthetic_batches(1_000_000, seed=1,
                                                                     batch_rows=50_000)))
    assert large.total == 1_000_000 and len(large.n) <= 3 * 4 * 11
    assert len(small.n) <= len(large.n) <= 3 * 4 * 11
    iv = cell_intervals(large)
    assert iv.accuracy.high - iv.accuracy.low < 0.002
    assert iv.macro_f1.high - iv.macro_f1.low < 0.004


def test_empty_and_degenerate_runs():
    empty = metric_intervals(pa.table({"slice_name": pa.array([], pa.string())}).to_pylist())
    # no sample: every headline metric is undefined, so none has an interval
    assert empty.n == 0 and empty.accuracy is None and empty.ece is None
    perfect = metric_intervals([_row("a", "a", 50), _row("b", "b", 50, conf=None)])
    assert perfect.accuracy.value == 1.0 and perfect.accuracy.high == 1.0
    assert perfect.macro_f1.low == perfect.macro_f1.high == 1.0
    assert perfect.ece.value == pytest.approx(0.1)  # 50 rows at 0.9, all right; 50 without conf
    with pytest.raises(ValueError, match="confidence level"):
        metric_intervals([_row("a", "a", 5)], confidence=1.5)


@pytest.mark.slow
@pytest.mark.parametrize(("shift", "n"), [(0.1, 480), (0.05, 2000)])
def test_95_percent_intervals_cover_the_truth_of_a_simulated_classifier(shift, n):
    """1,000 seeded golden sets of n samples (480: the demo's size) from a classifier whose true
    accuracy, macro F1 and ECE are known exactly: each 95 % interval covers its truth in 93–97 %
    of them. The classifier is overconfident by `shift` (c − shift right), as uncalibrated
    networks are; the data go through the lake's aggregation like a real run."""
    model = Model(shift=shift)
    rng = np.random.default_rng(2016)
    hits = {"accuracy": 0, "macro_f1": 0, "ece": 0}
    truth = {"accuracy": model.accuracy, "macro_f1": model.macro_f1, "ece": model.ece}
    for _ in range(1000):
        aggregate = aggregate_batches([batch(*sample(model, rng, n))])
        iv = metric_intervals(aggregate, labels=list(CLASSES))
        for name in hits:
            interval = getattr(iv, name)
            hits[name] += interval.low <= truth[name] <= interval.high
    coverage = {name: hit / 1000 for name, hit in hits.items()}
    assert all(0.93 <= c <= 0.97 for c in coverage.values()), coverage


def test_an_error_row_is_wrong_even_without_a_label():
    """Error rows count as wrong for every class, with or without a label (evaluate.metrics agrees
    since it stopped mapping a null label to "<error>": tests/test_evaluate_metrics.py)."""
    rows = [{"slice_name": "", "slice_value": "", "label": None, "prediction": None,
             "conf_bin": -1, "is_error": True, "n": 1, "conf_sum": 0.0}, _row("a", "a", 1, 0.95)]
    assert metric_intervals(rows).accuracy.value == 0.5
