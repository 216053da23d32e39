"""Vectorised metric arithmetic over many weightings of the same cells at once.

A weighting is one row of a matrix ``W`` (replicates × cells): the original counts, or one
bootstrap resample of them. Every metric is a few sparse products ``W @ indicator`` followed by
elementwise arithmetic, so 2,000 resamples cost a handful of matrix products. The formulas are
scikit-learn's (``precision_recall_fscore_support`` with ``zero_division=0``): F1 = 2·tp /
(predicted + support), 0 when both are 0; macro = unweighted mean over the label list; weighted =
mean weighted by support.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

# Upper bound on the size of one block of bootstrap weights (float64 elements: 32 MiB).
_BLOCK_ELEMENTS = 1 << 22


def onehot(index: np.ndarray, k: int):
    """Sparse (cells × k) indicator of ``index`` (entries < 0 select nothing)."""
    from scipy.sparse import csr_matrix

    rows = np.flatnonzero(index >= 0)
    return csr_matrix((np.ones(len(rows)), (rows, index[rows])), shape=(len(index), k))


def weighted(W: np.ndarray, indicator) -> np.ndarray:
    """``W @ indicator`` as a dense (replicates × columns) array."""
    return np.asarray((indicator.T @ W.T).T)


def reduce_cells(keys: Sequence[np.ndarray], n: np.ndarray,
                 sums: Sequence[np.ndarray] = ()) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Merge cells that agree on ``keys``: fewer cells, the same distribution of every metric that
    depends only on those keys (a multinomial merged over cells is the multinomial of the merge)."""
    if not len(n):
        return [np.zeros(0, np.int64) for _ in keys], np.zeros(0, np.int64), [
            np.zeros(0, np.float64) for _ in sums]
    stacked = np.stack([np.asarray(k, dtype=np.int64) for k in keys], axis=1)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.zeros(len(unique), np.int64)
    np.add.at(counts, inverse, n)
    merged = []
    for s in sums:
        out = np.zeros(len(unique), np.float64)
        np.add.at(out, inverse, s)
        merged.append(out)
    return [unique[:, i] for i in range(unique.shape[1])], counts, merged


def multinomial_blocks(n: np.ndarray, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Bootstrap weights: ``resamples`` multinomial draws of sum(n) rows over the cells, in
    blocks of bounded size (each block: replicates × cells, float64)."""
    total = int(n.sum())
    p = n / total
    per_block = max(1, _BLOCK_ELEMENTS // max(1, len(n)))
    for start in range(0, resamples, per_block):
        yield rng.multinomial(total, p, size=min(per_block, resamples - start)).astype(np.float64)


def f1_scores(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (replicates × K) and macro/weighted F1 (replicates)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denominator = predicted + support
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
        k = f1.shape[-1]
        macro = f1.mean(axis=-1) if k else np.full(f1.shape[:-1], np.nan)
        total_support = support.sum(axis=-1)
        weighted_f1 = np.where(total_support > 0, (f1 * support).sum(axis=-1) / total_support, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "macro_f1": macro,
            "weighted_f1": weighted_f1}


class F1Side:
    """Indicators for one run's F1 family over a set of cells."""

    def __init__(self, true: np.ndarray, pred: np.ndarray, k: int):
        self.support = onehot(true, k)
        self.predicted = onehot(pred, k)
        self.tp = onehot(np.where(true == pred, true, -1), k)

    def scores(self, W: np.ndarray) -> dict[str, np.ndarray]:
        return f1_scores(weighted(W, self.tp), weighted(W, self.predicted), weighted(W, self.support))


class EceSide:
    """Indicators for one run's ECE over a set of cells (bin < 0: not in the ECE)."""

    def __init__(self, conf_bin: np.ndarray, correct: np.ndarray, conf_sum: np.ndarray,
                 n: np.ndarray, bins: int):
        from scipy.sparse import csr_matrix

        rows = np.flatnonzero(conf_bin >= 0)
        mean_conf = np.divide(conf_sum, n, out=np.zeros(len(n)), where=n > 0)
        columns = conf_bin[rows]
        shape = (len(n), bins)
        self.count = csr_matrix((np.ones(len(rows)), (rows, columns)), shape=shape)
        self.gap = csr_matrix((correct[rows].astype(np.float64) - mean_conf[rows],
                               (rows, columns)), shape=shape)

    def ece(self, W: np.ndarray) -> np.ndarray:
        """Σ_bins |correct − confidence| / rows with a confidence; NaN without any."""
        count = weighted(W, self.count).sum(axis=1)
        gap = np.abs(weighted(W, self.gap)).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, gap / count, np.nan)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap replicates (NaN replicates left out)."""
    finite = replicates[~np.isnan(replicates)]
    if not len(finite):
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return (float(low), float(high))
