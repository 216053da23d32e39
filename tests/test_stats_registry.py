"""The statistics engine reads its metrics from the metric registry: a metric registered there —
one entry — gets its interval and its deltas by the method the entry names, whether its function
broadcasts over resamples or not; an entry that names the wrong method is refused, not computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlobs.evaluate import registry
from mlobs.lake.aggregate import aggregate_batches
from mlobs.stats.cells import cells_from_aggregate
from mlobs.stats.deltas import paired_deltas, unpaired_cell_deltas
from mlobs.stats.gates import decide_gate
from mlobs.stats.intervals import cell_intervals, wilson
from statsim import CLASSES, Model, batch, joint_from_arrays, paired_samples, sample

LABELS = sorted(CLASSES)


@pytest.fixture
def register():
    added = []

    def add(metric: registry.Metric) -> registry.Metric:
        registry.register(metric)
        added.append(metric.name)
        return metric

    yield add
    for name in added:
        registry.unregister(name)


def answered(m):
    """The share of samples that got an answer: a proportion of rows (1 − error rate)."""
    return 1 - m.error_rate


def top_recall(m):
    """Branches and calls max(): does not broadcast over resamples."""
    recalls = [c.recall for c in m.per_class if c.support]
    return max(recalls) if recalls else None


def top_recall_vector(m):
    """The same metric, written so that it broadcasts."""
    return np.maximum.reduce([c.recall for c in m.per_class])


def cells(seed: int = 1, n: int = 1500, model: Model | None = None):
    rows = sample(model or Model(error=0.04), np.random.default_rng(seed), n)
    return rows, cells_from_aggregate(aggregate_batches([batch(*rows)]), labels=LABELS)


def test_a_registered_share_of_samples_gets_a_wilson_interval_and_mcnemar(register):
    register(registry.Metric("answered", "answered", True, answered, interval="wilson"))
    rows, c = cells()
    iv = cell_intervals(c, resamples=200)
    k = int((~rows[3]).sum())
    assert iv.answered == wilson(k, 1500)
    current, baseline = paired_samples(Model(error=0.06), Model(error=0.02),
                                       np.random.default_rng(2), 2000)
    d = paired_deltas(joint_from_arrays(current, baseline), labels=LABELS, metrics=["answered"])
    gains = int((~current[3] & baseline[3]).sum())
    losses = int((current[3] & ~baseline[3]).sum())
    assert d["answered"].test == "McNemar exact" and d["answered"].delta == pytest.approx(
        (gains - losses) / 2000)
    from scipy.stats import binomtest

    assert d["answered"].p_worse == pytest.approx(
        binomtest(gains, gains + losses, 0.5, alternative="less").pvalue)


def test_a_metric_that_does_not_broadcast_is_bootstrapped_one_resample_at_a_time(register):
    register(registry.Metric("top_recall", "top recall", True, top_recall, interval="bootstrap"))
    register(registry.Metric("top_recall_v", "top recall", True, top_recall_vector,
                             interval="bootstrap"))
    _, c = cells()
    iv = cell_intervals(c, resamples=300)
    assert iv.top_recall.value == pytest.approx(max(x.recall.value for x in iv.per_class))
    # the same resamples, evaluated both ways: the same interval to the last bit
    assert (iv.top_recall.low, iv.top_recall.high) == (iv.top_recall_v.low, iv.top_recall_v.high)
    other = cells_from_aggregate(aggregate_batches([batch(*sample(
        Model(shift=0.1, error=0.04), np.random.default_rng(3), 1500))]), labels=LABELS)
    d = unpaired_cell_deltas(c, other, resamples=300, metrics=["top_recall", "top_recall_v"])
    assert str(d["top_recall"]) == str(d["top_recall_v"]).replace("top_recall_v", "top_recall")
    assert d["top_recall"].label == "bootstrap, unpaired"


def test_a_wilson_entry_that_is_no_share_of_samples_is_refused(register):
    register(registry.Metric("macro_again", "macro F1", True, lambda m: m.macro_f1,
                             interval="wilson"))
    _, c = cells()
    with pytest.raises(ValueError, match="not .*share of samples|needs a share of samples"):
        cell_intervals(c, resamples=200)


def test_a_metric_without_an_interval_gets_a_point_delta_and_a_point_gate(register):
    register(registry.Metric("plain", "plain accuracy", True, lambda m: m.accuracy))
    rows, c = cells()
    iv = cell_intervals(c, resamples=200)
    assert iv.plain.value == iv.accuracy.value and math.isnan(iv.plain.low)
    current, baseline = paired_samples(Model(shift=0.12), Model(), np.random.default_rng(4), 600)
    d = paired_deltas(joint_from_arrays(current, baseline), labels=LABELS, metrics=["plain"])
    assert d["plain"].test == "" and math.isnan(d["plain"].p_worse)
    assert d["plain"].label == "point estimates, no interval"
    decision = decide_gate("plain", 0.01, False, d["plain"])
    assert decision.verdict == "fail" and "no interval" in decision.reason


def test_directions_come_from_the_registry(register):
    register(registry.Metric("miss_rate", "miss rate", False, lambda m: 1 - m.accuracy,
                             interval="wilson"))
    current, baseline = paired_samples(Model(shift=0.12), Model(), np.random.default_rng(5), 2000)
    d = paired_deltas(joint_from_arrays(current, baseline), labels=LABELS,
                      metrics=["accuracy", "miss_rate"])
    assert d["miss_rate"].delta == pytest.approx(-d["accuracy"].delta)
    assert not d["miss_rate"].higher_is_better and d["miss_rate"].worse_by > 0
    assert d["miss_rate"].p_worse == pytest.approx(d["accuracy"].p_worse)
