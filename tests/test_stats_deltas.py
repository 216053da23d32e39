"""Deltas against a baseline: the joint counts of two runs joined by sample id, paired and unpaired
intervals and tests — checked against published values, scikit-learn and row-level bootstraps."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from mlobs.evaluate.metrics import from_aggregate
from mlobs.lake.aggregate import aggregate_batches
from mlobs.stats.cells import cells_from_aggregate
from mlobs.stats.deltas import (
    mcnemar,
    newcombe_paired,
    newcombe_unpaired,
    paired_deltas,
    two_proportion_z,
    unpaired_deltas,
)
from mlobs.stats.joint import COLUMNS, joint_counts
from statsim import CLASSES, Model, batch, joint_from_arrays, paired_samples, sample

LABELS = sorted(CLASSES)


def test_newcombe_intervals_match_the_published_values():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017):
    # paired 2x2 [[59, 6], [16, 80]] (Cavo et al. 2012): −0.0621 (95 % CI −0.1186 to −0.0046);
    # independent 7/34 vs 1/34 (Perondi et al. 2004): 0.1765 (0.0189 to 0.3404).
    low, high = newcombe_paired(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    low, high = newcombe_unpaired(7, 34, 1, 34)
    assert (round(low, 4), round(high, 4)) == (0.0189, 0.3404)


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    gains, losses = 6, 16
    m = gains + losses
    tail = sum(math.comb(m, k) for k in range(gains + 1)) / 2**m
    both, fewer = mcnemar(gains, losses)
    assert fewer == pytest.approx(tail, rel=1e-12)
    assert both == pytest.approx(min(1.0, 2 * tail), rel=1e-12)
    assert mcnemar(0, 0) == (1.0, 1.0)


def test_two_proportion_z_is_the_pooled_score_test():
    k1, n1, k2, n2 = 400, 480, 420, 480
    pooled = (k1 + k2) / (n1 + n2)
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    both, less, more = two_proportion_z(k1, n1, k2, n2)
    assert both == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert less == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), rel=1e-9)
    assert less + more == pytest.approx(1.0)


def _paired_runs(seed=1, n=3000, current=None, baseline=None):
    return paired_samples(current or Model(shift=0.07), baseline or Model(),
                          np.random.default_rng(seed), n)


def _stream(rows, order, batch_rows=700):
    """The run's rows as the lake streams them: RecordBatches in the lake's order, plus payload
    columns the join must not need to hold."""
    ids = pa.array([f"s{i:07d}" for i in range(len(rows[0]))])
    full = batch(*rows, ids=ids)
    taken = full.take(pa.array(order))
    for start in range(0, len(order), batch_rows):
        yield taken.slice(start, batch_rows)


def test_joint_counts_from_streams_equal_an_independent_numpy_join():
    current, baseline = _paired_runs()
    rng = np.random.default_rng(0)
    joint = joint_counts(_stream(current, rng.permutation(3000)),
                         _stream(baseline, rng.permutation(3000), batch_rows=1100))
    expected = joint_from_arrays(current, baseline)
    assert joint.pairable and joint.reason == "" and joint.matched == 3000
    assert joint.tokens == expected.tokens
    for name in ("label", "pred_cur", "pred_base", "error_cur", "error_base", "bin_cur",
                 "bin_base", "n"):
        assert np.array_equal(getattr(joint, name), getattr(expected, name)), name
    for name in ("conf_cur", "conf_base"):
        assert np.allclose(getattr(joint, name), getattr(expected, name), atol=1e-6)


def test_each_side_of_the_join_is_that_runs_lake_aggregate():
    current, baseline = _paired_runs(seed=2)
    joint = joint_counts(pa.Table.from_batches([batch(*current)]),
                         pa.Table.from_batches([batch(*baseline)]))
    for which, rows in (("current", current), ("baseline", baseline)):
        mine = joint.side(which, LABELS)
        lake = cells_from_aggregate(aggregate_batches([batch(*rows)]), labels=LABELS)
        for name in ("true", "pred", "correct", "error", "conf_bin", "n"):
            assert np.array_equal(getattr(mine, name), getattr(lake, name)), (which, name)
        assert np.array_equal(mine.conf_sum, lake.conf_sum)  # same fixed-point sums, bit for bit


def test_runs_that_cannot_be_paired_say_why():
    current, baseline = _paired_runs(seed=3, n=50)
    ids = [f"s{i:07d}" for i in range(50)]
    cur = batch(*current, ids=pa.array(ids))
    # baseline: one id missing (s0), one extra, one duplicated (s12), one label changed (s20)
    rows = [*range(1, 50), 0, 12]
    base_ids = [ids[i] for i in range(1, 50)] + ["extra", ids[12]]
    base = batch(*(np.asarray(a)[rows] for a in baseline), ids=pa.array(base_ids))
    labels = base.column("label").to_pylist()
    labels[19] = "zebra"
    base = base.set_column(base.schema.get_field_index("label"), "label", pa.array(labels))
    joint = joint_counts([cur], [base])
    assert not joint.pairable
    assert joint.only_current == 1 and joint.only_baseline == 1 and joint.matched == 49
    assert joint.duplicate_baseline == 1 and joint.duplicate_current == 0
    assert joint.label_mismatch == 1
    assert "1 sample id duplicated in the baseline run" in joint.reason
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_deltas(joint)
    with pytest.raises(ValueError, match="lack column"):
        joint_counts([cur.drop_columns(["sample_id"])], [base])


def test_paired_deltas_are_the_difference_of_evaluates_metrics():
    current, baseline = _paired_runs(seed=4)
    joint = joint_from_arrays(current, baseline)
    deltas = paired_deltas(joint, resamples=500)
    m_cur = from_aggregate(aggregate_batches([batch(*current)]).to_pylist(), labels=LABELS).overall
    m_base = from_aggregate(aggregate_batches([batch(*baseline)]).to_pylist(),
                            labels=LABELS).overall
    for name, value in m_cur.headline().items():
        d = deltas[name]
        assert d.paired and d.current == pytest.approx(value, abs=1e-9)
        assert d.baseline == pytest.approx(m_base.headline()[name], abs=1e-9)
        assert d.delta == pytest.approx(value - m_base.headline()[name], abs=1e-9)
    for c, b in zip(m_cur.per_class, m_base.per_class, strict=True):
        assert deltas[f"f1[{c.label}]"].delta == pytest.approx(c.f1 - b.f1, abs=1e-9)
    # accuracy: McNemar on the discordant pairs, an interval that contains the delta
    acc = deltas["accuracy"]
    right_c = current[0] == current[1]
    right_c &= ~current[3]
    right_b = (baseline[0] == baseline[1]) & ~baseline[3]
    gains, losses = int((right_c & ~right_b).sum()), int((~right_c & right_b).sum())
    assert acc.test == "McNemar exact" and acc.delta == pytest.approx((gains - losses) / 3000)
    assert (acc.p_value, acc.p_worse) == mcnemar(gains, losses)
    assert acc.low < acc.delta < acc.high
    assert str(acc).endswith("(McNemar, paired)")
    assert deltas["macro_f1"].label == "bootstrap, paired"


def test_paired_bootstrap_is_the_row_bootstrap_over_sample_ids():
    """Resampling the joint cells = resampling sample ids (both runs' rows together): compare the
    spread of Δ macro F1 with a bootstrap over ids that recomputes scikit-learn's F1."""
    from sklearn.metrics import f1_score

    current, baseline = _paired_runs(seed=5, n=1500)
    deltas = paired_deltas(joint_from_arrays(current, baseline), metrics=["macro_f1"])
    names = np.array(CLASSES)
    y = names[current[0]]
    pc = np.where(current[3], "<error>", names[current[1]])
    pb = np.where(baseline[3], "<error>", names[baseline[1]])
    rng = np.random.default_rng(9)
    reps = []
    for _ in range(500):
        i = rng.integers(0, len(y), len(y))
        reps.append(f1_score(y[i], pc[i], labels=LABELS, average="macro", zero_division=0)
                    - f1_score(y[i], pb[i], labels=LABELS, average="macro", zero_division=0))
    assert deltas["macro_f1"].se == pytest.approx(np.std(reps, ddof=1), rel=0.15)


def test_pairing_narrows_the_interval_of_correlated_runs():
    current, baseline = _paired_runs(seed=6, n=5000, current=Model(), baseline=Model())
    paired = paired_deltas(joint_from_arrays(current, baseline))
    unpaired = unpaired_deltas(aggregate_batches([batch(*current)]),
                               aggregate_batches([batch(*baseline)]))
    for name in ("accuracy", "macro_f1", "ece"):
        assert paired[name].high - paired[name].low < 0.8 * (unpaired[name].high -
                                                              unpaired[name].low), name
        assert paired[name].delta == pytest.approx(unpaired[name].delta, abs=1e-12)
    assert unpaired["accuracy"].label == "Newcombe/z, unpaired"
    assert unpaired["ece"].label == "bootstrap, unpaired"


def test_unpaired_deltas_from_two_aggregates():
    rng = np.random.default_rng(7)
    cur, base = sample(Model(shift=0.08), rng, 2000), sample(Model(), rng, 1500)
    deltas = unpaired_deltas(aggregate_batches([batch(*cur)]), aggregate_batches([batch(*base)]))
    k1 = int(((cur[0] == cur[1]) & ~cur[3]).sum())
    k2 = int(((base[0] == base[1]) & ~base[3]).sum())
    acc = deltas["accuracy"]
    assert (acc.n_current, acc.n_baseline) == (2000, 1500)
    assert acc.delta == pytest.approx(k1 / 2000 - k2 / 1500)
    assert (acc.low, acc.high) == newcombe_unpaired(k1, 2000, k2, 1500)
    assert acc.p_worse == two_proportion_z(k1, 2000, k2, 1500)[1]
    err = deltas["error_rate"]
    e1, e2 = int(cur[3].sum()), int(base[3].sum())
    assert err.p_worse == two_proportion_z(e1, 2000, e2, 1500)[2]  # worse = more errors
    assert not err.higher_is_better and err.worse_by == err.delta


def test_a_runs_interval_and_its_unpaired_deltas_draw_the_same_resamples():
    """Deterministic: the same counts give the same deltas, byte for byte."""
    rng = np.random.default_rng(8)
    a = aggregate_batches([batch(*sample(Model(), rng, 800))])
    b = aggregate_batches([batch(*sample(Model(), rng, 800))])
    first = unpaired_deltas(a, b)
    again = unpaired_deltas(a.to_pylist(), b.to_pylist())
    assert [str(d) for d in first.values()] == [str(d) for d in again.values()]


@pytest.mark.parametrize("paired", [True, False])
def test_accuracy_delta_intervals_cover_the_true_difference(paired):
    """1,000 seeded pairs of runs of 480 samples: the 95 % interval of Δ accuracy (Newcombe,
    paired or not) covers the true difference in 93–97 % of them."""
    current, baseline = Model(shift=0.08), Model()
    truth = current.accuracy - baseline.accuracy
    rng = np.random.default_rng(1998)
    hits = 0
    for _ in range(1000):
        if paired:
            c, b = paired_samples(current, baseline, rng, 480)
        else:
            c, b = sample(current, rng, 480), sample(baseline, rng, 480)
        k_c = (c[0] == c[1]) & ~c[3]
        k_b = (b[0] == b[1]) & ~b[3]
        if paired:
            a, g, loss = int((k_c & k_b).sum()), int((k_c & ~k_b).sum()), int((~k_c & k_b).sum())
            low, high = newcombe_paired(a, g, loss, 480 - a - g - loss)
        else:
            low, high = newcombe_unpaired(int(k_c.sum()), 480, int(k_b.sum()), 480)
        hits += low <= truth <= high
    assert 0.93 <= hits / 1000 <= 0.97


def test_joint_counts_accept_the_columns_iter_run_gives():
    current, baseline = _paired_runs(seed=10, n=100)
    cur = pa.Table.from_batches([batch(*current)]).select(list(COLUMNS))
    base = pa.Table.from_batches([batch(*baseline)]).select(list(COLUMNS))
    joint = joint_counts(cur, base.to_batches(max_chunksize=7))
    assert joint.pairable and int(joint.n.sum()) == 100


def test_compare_runs_pairs_when_it_can_and_says_why_not():
    from mlobs.stats.deltas import compare_runs

    current, baseline = _paired_runs(seed=11, n=600)
    aggs = [aggregate_batches([batch(*rows)]) for rows in (current, baseline)]
    joint = joint_from_arrays(current, baseline)
    paired = compare_runs(*aggs, joint, same_dataset=True, resamples=200)
    assert paired.paired and paired.why_unpaired == ""
    assert paired.deltas["accuracy"].test == "McNemar exact"
    other = compare_runs(*aggs, joint, same_dataset=False, resamples=200)
    assert not other.paired and "different golden sets" in other.why_unpaired
    assert other.deltas["accuracy"].test == "two-proportion z"
    assert other.deltas["accuracy"].delta == pytest.approx(paired.deltas["accuracy"].delta)
    cur = batch(*current)
    base = batch(*(np.asarray(a)[:-1] for a in baseline))
    broken = compare_runs(*aggs, joint_counts([cur], [base]), same_dataset=True, resamples=200)
    assert not broken.paired and "1 sample id only in the current run" in broken.why_unpaired


def test_more_errors_now_is_a_paired_regression_of_the_error_rate():
    current, baseline = _paired_runs(seed=12, n=1000, current=Model(), baseline=Model())
    label, pred, conf, _ = current
    errors = np.zeros(1000, bool)
    errors[:40] = True  # 4 % of calls fail now, none before
    joint = joint_from_arrays((label, pred, conf, errors), (label, pred, conf, np.zeros(1000, bool)))
    d = paired_deltas(joint, metrics=["error_rate", "accuracy"])
    assert d["error_rate"].delta == pytest.approx(0.04) and d["error_rate"].worse_by > 0
    assert d["error_rate"].p_worse == pytest.approx(0.5**40)  # 40 losses, no gains
    right = int(((label == pred)[:40]).sum())
    assert d["accuracy"].p_worse == pytest.approx(0.5**right)
