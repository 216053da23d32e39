"""A run's counts as integer cells — the shape every interval and bootstrap here works on.

The lake's aggregate (``mlobs.lake.aggregate``) has one row per slice, label, prediction,
confidence bin and error flag, with a count ``n`` and a confidence sum. For one slice those rows
become :class:`Cells`: parallel numpy arrays of class indices, flags and counts. Metrics are
functions of these counts, so a bootstrap that resamples *rows* can be run on the cells instead
(a multinomial draw over them): its cost depends on the number of cells, never on the number of
rows — a million-row run costs what a thousand-row run costs.

The metric definitions are those of ``mlobs.evaluate.metrics`` (scikit-learn over an explicit
label list):

- an error row (``is_error``) counts as wrong for every class: it predicted nothing;
- accuracy is the share of rows whose label equals the prediction, error rows excluded;
- precision, recall and F1 of a class count every row predicted as that class (whatever its
  label) and every row labelled with it (whatever was predicted);
- ECE is over the rows that have a confidence and are not errors, in ``bins`` equal bins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WHOLE_RUN = ("", "")  # (slice_name, slice_value) of the run as a whole
NONE = -1  # index of "no class in the label list" (a null label, an error, an unknown class)


@dataclass(frozen=True, eq=False)
class Cells:
    """One run's (or one slice's) counts. Arrays are parallel, one entry per distinct cell."""

    labels: tuple[str, ...]  # the classes of per-class metrics, in output order
    true: np.ndarray  # int32: index into `labels` of the row's label, NONE if not among them
    pred: np.ndarray  # int32: index into `labels` of the prediction, NONE for errors/others
    correct: np.ndarray  # bool: label == prediction (never for an error row or a null label)
    error: np.ndarray  # bool: the prediction failed
    conf_bin: np.ndarray  # int32: confidence bin, NONE without a confidence (and for errors)
    conf_sum: np.ndarray  # float64: sum of the confidences of the cell's rows
    n: np.ndarray  # int64: rows in the cell
    bins: int

    @property
    def total(self) -> int:
        return int(self.n.sum())

    def fingerprint(self, *extra: object) -> int:
        """A seed derived from the counts: the same counts give the same bootstrap, byte for byte."""
        digest = hashlib.sha256()
        digest.update(repr((self.labels, self.bins, *extra)).encode())
        for array in (self.true, self.pred, self.correct, self.error, self.conf_bin, self.n):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.conf_sum, dtype=np.float64).tobytes())
        return int.from_bytes(digest.digest()[:16], "big")

    def rng(self, family: str, resamples: int) -> np.random.Generator:
        """The bootstrap generator for one metric family ("f1", "ece") of these counts: a run's
        interval and its unpaired deltas draw the same resamples."""
        return np.random.default_rng(self.fingerprint(family, resamples))


def default_labels(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The label list evaluate uses when none is given: every label and every non-error
    prediction seen, sorted (as ``mlobs.evaluate.metrics.from_aggregate`` builds it)."""
    seen: set[str] = set()
    for r in rows:
        if r["label"] is not None:
            seen.add(r["label"])
        if r["prediction"] is not None and not r["is_error"]:
            seen.add(r["prediction"])
    return sorted(seen)


def aggregate_rows(aggregate: Any) -> list[dict]:
    """The aggregate as a list of dicts (accepts a pyarrow Table or the rows already)."""
    if hasattr(aggregate, "to_pylist"):
        return aggregate.to_pylist()
    return [dict(r) for r in aggregate]


def cells_from_aggregate(
    aggregate: Any,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 10,
    slice_key: tuple[str, str] = WHOLE_RUN,
) -> Cells:
    """The cells of one slice ``slice_key`` = (slice_name, slice_value) (default: the whole run) of a lake aggregate table or its rows.

    ``labels`` defaults to :func:`default_labels` over every row of the aggregate, like
    ``from_aggregate``; pass the same list to both runs of a comparison.
    """
    rows = aggregate_rows(aggregate)
    if labels is None:
        labels = default_labels(rows)
    name, value = slice_key
    mine = [r for r in rows if (r["slice_name"] or "", r["slice_value"] or "") == (name, value)
            and int(r["n"]) > 0]
    index = {label: i for i, label in enumerate(labels)}
    true = np.array([index.get(r["label"], NONE) if r["label"] is not None else NONE
                     for r in mine], dtype=np.int32)
    error = np.array([bool(r["is_error"]) or r["prediction"] is None for r in mine], dtype=bool)
    pred = np.array([NONE if err else index.get(r["prediction"], NONE)
                     for r, err in zip(mine, error, strict=True)], dtype=np.int32)
    correct = np.array([not err and r["label"] is not None and r["label"] == r["prediction"]
                        for r, err in zip(mine, error, strict=True)], dtype=bool)
    is_error = np.array([bool(r["is_error"]) for r in mine], dtype=bool)
    conf_bin = np.array([NONE if (r["is_error"] or r["conf_bin"] is None or r["conf_bin"] < 0)
                         else int(r["conf_bin"]) for r in mine], dtype=np.int32)
    if (conf_bin >= bins).any():
        raise ValueError(f"aggregate has confidence bin {int(conf_bin.max())} but bins={bins}: "
                         "pass the bin count the aggregate was made with")
    conf_sum = np.array([float(r["conf_sum"] or 0.0) for r in mine], dtype=np.float64)
    conf_sum[conf_bin < 0] = 0.0
    n = np.array([int(r["n"]) for r in mine], dtype=np.int64)
    return canonical(Cells(tuple(labels), true, pred, correct, is_error, conf_bin, conf_sum, n,
                           bins))


def canonical(cells: Cells) -> Cells:
    """Merge identical cells and sort them, so equal counts give equal arrays (and seeds)."""
    keys = np.stack([cells.true, cells.pred, cells.correct, cells.error, cells.conf_bin]).astype(
        np.int64).T if len(cells.n) else np.zeros((0, 5), np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = np.zeros(len(unique), np.int64)
    np.add.at(n, inverse, cells.n)
    conf = np.zeros(len(unique), np.float64)
    # fsum-like stability is not needed: cells of one key are merged in a fixed (sorted) order
    order = np.argsort(inverse, kind="stable")
    np.add.at(conf, inverse[order], cells.conf_sum[order])
    return Cells(cells.labels, unique[:, 0].astype(np.int32), unique[:, 1].astype(np.int32),
                 unique[:, 2].astype(bool), unique[:, 3].astype(bool),
                 unique[:, 4].astype(np.int32), conf, n, cells.bins)
