"""Every registered metric over many weightings of one run's cells at once.

The metric registry (:mod:`mlobs.evaluate.registry`) defines each headline metric as a function of
a run's :class:`~mlobs.evaluate.metrics.Metrics`. The statistics need the same metric for
thousands of weightings of the run's cells (bootstrap resamples; single samples for the Wilson
and McNemar counts), so this module offers a :class:`MetricsBatch`: the same attributes as
``Metrics`` (``n``, ``errors``, ``accuracy``, ``macro_f1``, ``weighted_f1``, ``ece``,
``error_rate``, ``per_class``, ``reliability``, ``confusion``, ``labels``), each an array with one
entry per weighting, computed with a few sparse products (see :mod:`mlobs.stats._engine`).

A registered metric is evaluated on the batch as it is (most are arithmetic on those fields, which
numpy broadcasts). A metric whose function does not broadcast — it branches on a value, calls
``max`` or ``sorted`` — is recognised (it raises, returns another shape, or disagrees with the
scalar evaluation at the point estimate) and evaluated once per weighting on a plain ``Metrics``
built from the batch instead: slower, never wrong. So a metric added to the registry gets its
interval and its deltas without a line here.

Definitions follow ``mlobs.evaluate.metrics`` (scikit-learn over an explicit label list): an error
row is wrong for every class; ECE is over the rows with a confidence that are not errors. Within a
cell every row is taken at the cell's mean confidence (see ``mlobs.stats.intervals``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlobs.stats import _engine
from mlobs.stats.cells import Cells


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


class Side:
    """One run's cells as indicator matrices; :meth:`batch` turns weights into metrics."""

    def __init__(self, cells: Cells):
        from scipy.sparse import csr_matrix, hstack

        self.cells = cells
        self.labels = tuple(cells.labels)
        self.k = k = len(self.labels)
        self.bins = bins = cells.bins
        f1 = _engine.F1Side(cells.true, cells.pred, k)
        correct = cells.correct.astype(np.float64)
        rows = np.flatnonzero(cells.conf_bin >= 0)
        columns = cells.conf_bin[rows]
        mean_conf = np.divide(cells.conf_sum, cells.n, out=np.zeros(len(cells.n)),
                              where=cells.n > 0)
        shape = (len(cells.n), bins)
        parts = [
            f1.tp, f1.predicted, f1.support,
            csr_matrix(correct[:, None]), csr_matrix(cells.error.astype(np.float64)[:, None]),
            csr_matrix((np.ones(len(rows)), (rows, columns)), shape=shape),
            csr_matrix((mean_conf[rows], (rows, columns)), shape=shape),
            csr_matrix((correct[rows], (rows, columns)), shape=shape),
        ]
        # One (columns × cells) matrix: a weighting's every count is one sparse product.
        self._indicators = hstack(parts, format="csr").T.tocsr()
        offsets = np.cumsum([0, *(part.shape[1] for part in parts)])
        self._slices = {name: slice(int(a), int(b)) for name, a, b in zip(
            ("tp", "predicted", "support", "correct", "error", "bin_n", "bin_conf",
             "bin_correct"), offsets[:-1], offsets[1:], strict=True)}
        # confusion: rows = labels, columns = labels + the error column (rows of other labels and
        # predictions outside the list are in no cell of it, as in scikit-learn's matrix)
        column = np.where(cells.error, k, cells.pred)
        keep = (cells.true >= 0) & (column >= 0)
        self._confusion_index = np.where(keep, cells.true * (k + 1) + column, -1)
        self.class_index = {label: i for i, label in enumerate(self.labels)}
        self._point: MetricsBatch | None = None

    @property
    def point(self) -> np.ndarray:
        """The run's own counts as one weighting (1 × cells)."""
        return self.cells.n[None, :].astype(np.float64)

    def point_batch(self) -> MetricsBatch:
        """The metrics of the run's own counts (computed once)."""
        if self._point is None:
            self._point = self.batch(self.point)
        return self._point

    def counts(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Every count of every weighting (rows of ``W``), by name (replicates × columns)."""
        dense = np.asarray((self._indicators @ W.T).T)
        return {name: dense[:, where] for name, where in self._slices.items()}

    def batch(self, W) -> MetricsBatch:
        return MetricsBatch(self, W)

    def singles(self) -> Iterator[tuple[slice, MetricsBatch]]:
        """Each cell on its own, as one sample (blocks of an identity weighting, whose counts are
        the indicator columns themselves: no product needed)."""
        from scipy.sparse import identity

        cells = len(self.cells.n)
        columns = self._indicators.shape[0]
        per_block = max(1, _engine._BLOCK_ELEMENTS // max(1, columns))
        eye = identity(cells, format="csr")
        for start in range(0, cells, per_block):
            stop = min(cells, start + per_block)
            counts = self._indicators[:, start:stop].T.toarray()
            yield slice(start, stop), MetricsBatch(self, eye[start:stop], counts)


@dataclass
class ClassBatch:
    label: str
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


@dataclass
class BinBatch:
    low: float
    high: float
    n: np.ndarray
    mean_confidence: np.ndarray  # NaN where the bin is empty
    accuracy: np.ndarray


class MetricsBatch:
    """``Metrics`` with an array (one entry per weighting) in place of every number."""

    def __init__(self, side: Side, W, counts: np.ndarray | None = None):
        self.side = side
        self.W = W  # replicates × cells, dense (resamples) or sparse (single cells)
        self.size = W.shape[0]
        c = side.counts(W) if counts is None else {
            name: counts[:, where] for name, where in side._slices.items()}
        n = np.asarray(W.sum(axis=1)).reshape(-1)
        self.n = n
        self.errors = c["error"][:, 0]
        self.accuracy = _ratio(c["correct"][:, 0], n)
        empty = n <= 0
        scores = _engine.f1_scores(c["tp"], c["predicted"], c["support"])
        self.macro_f1 = np.where(empty, np.nan, scores["macro_f1"])
        self.weighted_f1 = np.where(empty, np.nan, scores["weighted_f1"])
        self.labels = list(side.labels)
        self.per_class = [ClassBatch(label, scores["precision"][:, i], scores["recall"][:, i],
                                     scores["f1"][:, i], c["support"][:, i])
                          for i, label in enumerate(side.labels)]
        bin_n, bin_conf, bin_correct = c["bin_n"], c["bin_conf"], c["bin_correct"]
        self.ece = _ratio(np.abs(bin_correct - bin_conf).sum(axis=1), bin_n.sum(axis=1))
        self._bins = (bin_n, bin_conf, bin_correct)
        self._reliability: list[BinBatch] | None = None
        self._confusion: list[list[np.ndarray]] | None = None

    @property
    def reliability(self) -> list[BinBatch]:
        """Per confidence bin: rows, mean confidence and accuracy (computed when first asked)."""
        if self._reliability is None:
            bin_n, bin_conf, bin_correct = self._bins
            bins = self.side.bins
            self._reliability = [BinBatch(b / bins, (b + 1) / bins, bin_n[:, b],
                                          _ratio(bin_conf[:, b], bin_n[:, b]),
                                          _ratio(bin_correct[:, b], bin_n[:, b]))
                                 for b in range(bins)]
        return self._reliability

    @property
    def error_rate(self) -> np.ndarray:
        return np.where(self.n > 0, _ratio(self.errors, self.n), 0.0)

    @property
    def confusion(self) -> list[list[np.ndarray]]:
        """Rows: true label; columns: labels + the error column (computed when first asked)."""
        if self._confusion is None:
            k = self.side.k
            indicator = _engine.onehot(self.side._confusion_index, k * (k + 1))
            product = (indicator.T @ self.W.T).T
            counts = product.toarray() if hasattr(product, "toarray") else np.asarray(product)
            self._confusion = [[counts[:, i * (k + 1) + j] for j in range(k + 1)]
                               for i in range(k)]
        return self._confusion

    def headline(self) -> dict[str, Any]:
        from mlobs.evaluate import registry

        return {m.name: m.value(self) for m in registry.metrics()}

    def one(self, r: int):
        """The weighting ``r`` as a plain :class:`~mlobs.evaluate.metrics.Metrics`."""
        from mlobs.evaluate.metrics import ClassMetrics, Metrics, ReliabilityBin

        def number(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        n = int(round(float(self.n[r])))
        ece = float(self.ece[r])
        return Metrics(
            n=n, errors=int(round(float(self.errors[r]))), accuracy=float(self.accuracy[r]),
            macro_f1=float(self.macro_f1[r]), weighted_f1=float(self.weighted_f1[r]),
            ece=None if math.isnan(ece) else ece, labels=list(self.labels),
            per_class=[ClassMetrics(c.label, float(c.precision[r]), float(c.recall[r]),
                                    float(c.f1[r]), int(round(float(c.support[r]))))
                       for c in self.per_class],
            confusion=_LazyMatrix(self, r),  # type: ignore[arg-type]
            reliability=[ReliabilityBin(b.low, b.high, int(round(float(b.n[r]))),
                                        number(float(b.mean_confidence[r])),
                                        number(float(b.accuracy[r])))
                         for b in self.reliability])


class _LazyMatrix(Sequence):
    """One weighting's confusion matrix as lists of ints, computed only if a metric reads it."""

    def __init__(self, batch: MetricsBatch, r: int):
        self._batch, self._r = batch, r
        self._rows: list[list[int]] | None = None

    def _matrix(self) -> list[list[int]]:
        if self._rows is None:
            self._rows = [[int(round(float(v[self._r]))) for v in row]
                          for row in self._batch.confusion]
        return self._rows

    def __getitem__(self, index):
        return self._matrix()[index]

    def __len__(self) -> int:
        return self._batch.side.k

    def __eq__(self, other: object) -> bool:
        return list(self._matrix()) == other


def _as_numbers(values: Sequence[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _vectorised(function, batch: MetricsBatch) -> np.ndarray | None:
    """``function(batch)`` as one float per weighting, or None when it does not broadcast."""
    try:
        with np.errstate(all="ignore"):
            value = function(batch)
        if value is None:
            return None
        out = np.asarray(value, dtype=np.float64)
    except Exception:  # noqa: BLE001 - any failure means "evaluate it one weighting at a time"
        return None
    if out.shape != (batch.size,):
        return None
    return out


def _one_by_one(function, batch: MetricsBatch) -> np.ndarray:
    return _as_numbers([function(batch.one(r)) for r in range(batch.size)])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=1e-12)))


class Evaluator:
    """Evaluates one metric function on batches of one run's side: vectorised when the function
    broadcasts (checked once against the scalar evaluation at the run's own counts), one weighting
    at a time otherwise. The per-class metrics of :func:`class_metric` are known to broadcast and
    skip the check (a run with a thousand classes has three thousand of them)."""

    def __init__(self, function, side: Side):
        self.function = function
        point = side.point_batch()
        fast = _vectorised(function, point)
        if fast is not None and getattr(function, "broadcasts", False):
            self.vectorised, self.point = True, float(fast[0])
            return
        slow = _one_by_one(function, point)
        self.vectorised = fast is not None and _same(fast, slow)
        self.point = float(slow[0])

    def __call__(self, batch: MetricsBatch) -> np.ndarray:
        if self.vectorised:
            out = _vectorised(self.function, batch)
            if out is not None:
                return out
        return _one_by_one(self.function, batch)


def class_metric(kind: str, label: str):
    """``f1[cat]`` and the like as a function of Metrics (or a batch)."""
    def value(m):
        if isinstance(m, MetricsBatch):
            i = m.side.class_index.get(label)
            return None if i is None else getattr(m.per_class[i], kind)
        for c in m.per_class:
            if c.label == label:
                return getattr(c, kind)
        return None
    value.__name__ = f"{kind}[{label}]"
    value.broadcasts = True  # type: ignore[attr-defined]
    return value


def successes(function, side: Side, name: str) -> np.ndarray:
    """For a share-of-samples metric (a Wilson interval): whether each cell's samples count as a
    success, by evaluating the metric on each cell alone. Raises when the metric is not a share
    of samples (a single sample must score 0 or 1)."""
    out = np.zeros(len(side.cells.n), dtype=bool)
    evaluator = Evaluator(function, side)
    for where, batch in side.singles():
        values = evaluator(batch)
        bad = ~(np.isnan(values) | (values == 0) | (values == 1))
        if bad.any():
            raise ValueError(f"metric {name!r} is registered with a Wilson interval, but one "
                             f"sample scores {values[bad][0]!r}: a Wilson interval needs a share "
                             "of samples (each sample 0 or 1); register it with 'bootstrap'")
        out[where] = values == 1
    return out
