"""Simulated classifiers whose population metrics are known exactly, for the statistics tests.

A model: K classes with priors; each sample's confidence c is drawn from a class-specific
distribution on [lo, 1] (lo + (1 − lo)·Beta(a, b)); the prediction is right with probability
g(c) = c − shift (overconfident by `shift` everywhere), otherwise one of the other classes
uniformly; with probability `error` the call fails (no prediction, no confidence). Population
accuracy, per-class F1, macro/weighted F1 and the binned ECE follow by numerical integration
(scipy.integrate.quad), independently of the code under test.

Paired runs share each sample's label and confidence and, with probability `rho`, the uniform
that decides correctness (common random numbers): each run's marginal is exactly its model, and
the runs agree more than chance, as two versions of one model do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

CLASSES = ("cat", "dog", "bird")


@dataclass(frozen=True)
class Model:
    shift: float = 0.05
    lo: float = 0.6
    beta: tuple = ((6.0, 1.2), (5.0, 1.5), (4.0, 1.5))
    priors: tuple = (0.5, 0.3, 0.2)
    error: float = 0.01
    bins: int = 10

    def _pdf(self, k: int):
        from scipy.stats import beta

        a, b = self.beta[k]
        return lambda c: beta.pdf((c - self.lo) / (1 - self.lo), a, b) / (1 - self.lo)

    def _expect(self, k: int, f, lo: float | None = None, hi: float = 1.0) -> float:
        from scipy.integrate import quad

        pdf = self._pdf(k)
        return quad(lambda c: f(c) * pdf(c), self.lo if lo is None else lo, hi, limit=200)[0]

    def g(self, c):
        return c - self.shift

    @cached_property
    def class_accuracy(self) -> np.ndarray:
        return np.array([self._expect(k, self.g) for k in range(len(self.priors))])

    @cached_property
    def accuracy(self) -> float:
        return float((1 - self.error) * np.dot(self.priors, self.class_accuracy))

    @cached_property
    def f1(self) -> np.ndarray:
        k = len(self.priors)
        joint = np.zeros((k, k))  # P(label = i, prediction = j)
        for i in range(k):
            for j in range(k):
                right = self.class_accuracy[i]
                joint[i, j] = self.priors[i] * (1 - self.error) * (
                    right if i == j else (1 - right) / (k - 1))
        tp = np.diag(joint)
        return 2 * tp / (joint.sum(axis=0) + np.array(self.priors))

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    @cached_property
    def ece(self) -> float:
        edges = np.linspace(0, 1, self.bins + 1)
        total = 0.0
        for b in range(self.bins):
            lo, hi = max(edges[b], self.lo), edges[b + 1]
            if hi <= lo:
                continue
            total += abs(sum(p * self._expect(k, lambda c: self.g(c) - c, lo, hi)
                             for k, p in enumerate(self.priors)))
        return total


def _draw(model: Model, rng: np.random.Generator, n: int, shared=None):
    k = len(model.priors)
    if shared is None:
        label = rng.choice(k, size=n, p=model.priors)
        a = np.array([ab[0] for ab in model.beta])[label]
        b = np.array([ab[1] for ab in model.beta])[label]
        conf = model.lo + (1 - model.lo) * rng.beta(a, b)
        u = rng.random(n)
        other = (label + rng.integers(1, k, n)) % k
        error = rng.random(n) < model.error
    else:
        label, conf, u, other, error = shared
    pred = np.where(u < model.g(conf), label, other)
    return label, pred, conf, error, (label, conf, u, other, error)


def sample(model: Model, rng: np.random.Generator, n: int):
    """One simulated golden set: (label, prediction, confidence, error) arrays."""
    label, pred, conf, error, _ = _draw(model, rng, n)
    return label, pred, conf, error


def paired_samples(current: Model, baseline: Model, rng: np.random.Generator, n: int,
                   rho: float = 0.7):
    """Both runs over one simulated golden set (see the module docstring)."""
    label, pred_b, conf, err_b, shared = _draw(baseline, rng, n)
    _, conf, u, other, _ = shared
    own = rng.random(n) >= rho
    u_cur = np.where(own, rng.random(n), u)
    err_c = rng.random(n) < current.error
    _, pred_c, _, _, _ = _draw(current, rng, n, (label, conf, u_cur, other, err_c))
    return (label, pred_c, conf, err_c), (label, pred_b, conf, err_b)


def batch(label, pred, conf, error, ids=None) -> pa.RecordBatch:
    """The rows as the runner writes them (sample schema columns the statistics read)."""
    n = len(label)
    classes = pa.array(CLASSES)
    ids = ids if ids is not None else pa.array([f"s{i:07d}" for i in range(n)])
    return pa.RecordBatch.from_pydict({
        "sample_id": ids,
        "label": classes.take(pa.array(label)),
        "prediction": classes.take(pa.array(pred, mask=error)),
        "confidence": pa.array(conf, mask=error),
        "slices": pa.array([[]] * n, pa.map_(pa.string(), pa.string())),
        "error": pa.array(np.where(error, "HTTP 500", None).tolist(), pa.string()),
    })


def joint_from_arrays(current, baseline, bins: int = 10):
    """JointCounts of two runs over the same samples (row i = the same sample on both sides),
    built with numpy alone — an independent route to what ``joint_counts`` builds with Arrow,
    and a fast one for simulations."""
    from mlobs.stats.joint import JointCounts

    label, pred_c, conf_c, err_c = current
    label_b, pred_b, conf_b, err_b = baseline
    assert np.array_equal(label, label_b)
    order = np.argsort(np.array(CLASSES))  # tokens are sorted names
    rank = np.empty(len(CLASSES), np.int64)
    rank[order] = np.arange(len(CLASSES))

    def side(pred, conf, err):
        p = np.where(err, -1, rank[pred])
        b = np.where(err, -1, np.minimum(np.floor(conf * bins), bins - 1)).astype(np.int64)
        return p, b, np.where(err, 0.0, conf)

    pc, bc, cc = side(pred_c, conf_c, err_c)
    pb, bb, cb = side(pred_b, conf_b, err_b)
    keys = np.stack([rank[label], pc, pb, err_c, err_b, bc, bb], axis=1).astype(np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = np.bincount(inverse, minlength=len(unique)).astype(np.int64)
    sums = [np.bincount(inverse, weights=c, minlength=len(unique)) for c in (cc, cb)]
    return JointCounts(
        tokens=tuple(sorted(CLASSES)), label=unique[:, 0].astype(np.int32),
        pred_cur=unique[:, 1].astype(np.int32), pred_base=unique[:, 2].astype(np.int32),
        error_cur=unique[:, 3].astype(bool), error_base=unique[:, 4].astype(bool),
        bin_cur=unique[:, 5].astype(np.int32), bin_base=unique[:, 6].astype(np.int32),
        conf_cur=sums[0], conf_base=sums[1], n=n, bins=bins, matched=len(label),
        only_current=0, only_baseline=0, duplicate_current=0, duplicate_baseline=0,
        label_mismatch=0)
