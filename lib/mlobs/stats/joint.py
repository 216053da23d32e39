"""Two runs over the same golden set, joined by sample id into joint counts.

A paired comparison needs, for each sample, what both runs predicted. Held row by row that is two
million-row tables; what the statistics need is far smaller: the number of samples in each
combination of (label, current prediction, baseline prediction, current confidence bin, baseline
confidence bin, current error, baseline error), with the confidence sums of each side. That is
:class:`JointCounts` — its size depends on the classes and bins, not on the rows, and the paired
bootstrap resamples its cells like the single-run bootstrap resamples the aggregate's.

:func:`joint_counts` builds it from the two runs' row streams (``engine.iter_run`` batches, or
tables). Each incoming batch is reduced at once to its sample ids and five small integer codes,
so the payload columns (scores, slices, inputs) are never held: what is kept is the id, one packed
int64 outcome code and an int64 fixed-point confidence — about 20 bytes plus the id per row and
side. The two sides are sorted by id; when they hold the same ids once each (the paired case) the
sorted columns line up and no join is needed, otherwise a pyarrow hash join counts what is
missing, extra or duplicated. Measured at 1M rows per run (bench/stats_intervals.py): ~1 s and
~110 MB of Arrow memory at peak.

Confidence bins and sums follow ``mlobs.lake.aggregate`` exactly (clamped to [0, 1], null/NaN →
no bin, sums in 2⁻³² fixed point), so each side's marginal equals that run's aggregate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mlobs.stats.cells import NONE, Cells, canonical

COLUMNS = ("sample_id", "label", "prediction", "confidence", "error")
_NULL_TOKEN = -1


@dataclass(frozen=True, eq=False)
class JointCounts:
    """Joint cells of two runs joined by sample id ("cur" = the run under test)."""

    tokens: tuple[str, ...]  # every label and prediction seen on either side, sorted
    label: np.ndarray  # int32 index into tokens, -1 for a null label
    pred_cur: np.ndarray  # int32 index into tokens, -1 for a null prediction or an error
    pred_base: np.ndarray
    error_cur: np.ndarray  # bool
    error_base: np.ndarray
    bin_cur: np.ndarray  # int32 confidence bin, -1 without a confidence or for an error
    bin_base: np.ndarray
    conf_cur: np.ndarray  # float64 sum of the current run's confidences in the cell
    conf_base: np.ndarray
    n: np.ndarray  # int64 samples in the cell
    bins: int
    matched: int  # sample ids present on both sides (once each)
    only_current: int  # ids of the current run the baseline lacks
    only_baseline: int
    duplicate_current: int  # rows whose id occurs more than once in the current run
    duplicate_baseline: int
    label_mismatch: int  # matched ids whose label differs between the runs

    @property
    def pairable(self) -> bool:
        """True when the runs scored exactly the same samples with the same labels."""
        return self.matched > 0 and not (self.only_current or self.only_baseline
                                         or self.duplicate_current or self.duplicate_baseline
                                         or self.label_mismatch)

    @property
    def reason(self) -> str:
        """Why the runs cannot be paired ("" when they can)."""
        problems = []
        if not self.matched:
            problems.append("no sample id is common to both runs")
        for count, what in ((self.only_current, "only in the current run"),
                            (self.only_baseline, "only in the baseline run"),
                            (self.duplicate_current, "duplicated in the current run"),
                            (self.duplicate_baseline, "duplicated in the baseline run"),
                            (self.label_mismatch, "labelled differently by the two runs")):
            if count:
                problems.append(f"{count} sample id{'s' if count != 1 else ''} {what}")
        return "; ".join(problems)

    def default_labels(self) -> list[str]:
        """Every label and non-error prediction of either run (``from_aggregate``'s rule)."""
        used = set(self.label[self.label >= 0].tolist())
        used |= set(self.pred_cur[self.pred_cur >= 0].tolist())
        used |= set(self.pred_base[self.pred_base >= 0].tolist())
        return sorted(self.tokens[i] for i in used)

    def side(self, which: str, labels: list[str] | None = None) -> Cells:
        """One run's cells (its marginal), over ``labels`` (default: :meth:`default_labels`)."""
        return canonical(self.aligned(which, labels))

    def aligned(self, which: str, labels: list[str] | None = None) -> Cells:
        """One run's outcomes over the joint cells themselves (cell i here is joint cell i, not
        merged): what a paired comparison evaluates both runs on, with the same weights."""
        if which not in ("current", "baseline"):
            raise ValueError(f"side must be 'current' or 'baseline', got {which!r}")
        cur = which == "current"
        labels = self.default_labels() if labels is None else list(labels)
        remap = self.class_index(labels)
        pred = self.pred_cur if cur else self.pred_base
        error = self.error_cur if cur else self.error_base
        return Cells(
            labels=tuple(labels), true=remap[self.label], pred=remap[pred],
            correct=(self.label >= 0) & (pred == self.label),
            error=error, conf_bin=self.bin_cur if cur else self.bin_base,
            conf_sum=self.conf_cur if cur else self.conf_base, n=self.n, bins=self.bins)

    def class_index(self, labels: list[str]) -> np.ndarray:
        """Token index (+1 for -1 at the end) → index into ``labels`` or NONE; use as
        ``remap[token_array]`` (index -1 lands on the trailing NONE)."""
        position = {label: i for i, label in enumerate(labels)}
        return np.array([position.get(t, NONE) for t in self.tokens] + [NONE], dtype=np.int32)


# A row's outcome packed in one int64: label and prediction tokens (+1, so null is 0), the
# confidence bin (+1, so "none" is 0) and the error flag. Halves what the join carries.
_TOKEN_BITS, _BIN_BITS = 21, 11
_MAX_TOKENS = (1 << _TOKEN_BITS) - 2


def _pack(label: np.ndarray, pred: np.ndarray, conf_bin: np.ndarray, err: np.ndarray) -> np.ndarray:
    return ((((label.astype(np.int64) + 1) << _TOKEN_BITS | (pred.astype(np.int64) + 1))
             << _BIN_BITS | (conf_bin.astype(np.int64) + 1)) << 1) | err.astype(np.int64)


def _unpack(code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    err = (code & 1).astype(bool)
    conf_bin = ((code >> 1) & ((1 << _BIN_BITS) - 1)) - 1
    pred = ((code >> (1 + _BIN_BITS)) & ((1 << _TOKEN_BITS) - 1)) - 1
    label = (code >> (1 + _BIN_BITS + _TOKEN_BITS)) - 1
    return label, pred, conf_bin, err


class _Side:
    """One run's rows reduced to sample ids, one packed outcome code and a confidence in fixed
    point, batch by batch (the payload columns are dropped as each batch arrives)."""

    def __init__(self, bins: int, tokens: dict[str, int]):
        self.bins = bins
        self.tokens = tokens
        self.ids: list = []
        self.codes: list[np.ndarray] = []
        self.units: list[np.ndarray] = []

    def add(self, batch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        from mlobs.lake.aggregate import CONF_SCALE

        if batch.num_rows == 0:
            return
        missing = [c for c in COLUMNS if c not in batch.schema.names]
        if missing:
            raise ValueError(f"rows lack column(s) {', '.join(missing)} needed to pair runs")
        is_error = pc.is_valid(batch.column("error"))
        confidence = batch.column("confidence")
        conf_missing = pc.or_kleene(pc.is_null(confidence, nan_is_null=True), is_error)
        conf = pc.min_element_wise(pc.max_element_wise(
            pc.if_else(conf_missing, 0.0, pc.cast(confidence, pa.float64())), 0.0), 1.0)
        in_bin = pc.min_element_wise(pc.floor(pc.multiply(conf, float(self.bins))),
                                     float(self.bins - 1))
        conf_bin = pc.if_else(conf_missing, -1, pc.cast(in_bin, pa.int32()))
        units = pc.if_else(conf_missing, 0,
                           pc.cast(pc.floor(pc.add(pc.multiply(conf, CONF_SCALE), 0.5)), pa.int64()))
        prediction = pc.if_else(is_error, pa.scalar(None, pa.string()),
                                pc.cast(batch.column("prediction"), pa.string()))
        self.ids.append(pc.cast(batch.column("sample_id"), pa.string()))
        self.codes.append(_pack(self._codes(pc.cast(batch.column("label"), pa.string())),
                                self._codes(prediction), _numpy(conf_bin), _numpy(is_error)))
        self.units.append(_numpy(units))

    def _codes(self, strings) -> np.ndarray:
        """Global token indices (-1 for null) for a string array."""
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(strings)
        local = [self.tokens.setdefault(value, len(self.tokens))
                 for value in encoded.dictionary.to_pylist()]
        if len(self.tokens) > _MAX_TOKENS:
            raise ValueError(f"more than {_MAX_TOKENS:,} distinct labels and predictions: "
                             "too many to pair runs by class")
        mapping = np.array(local + [_NULL_TOKEN], dtype=np.int64)
        return mapping[_numpy(pc.fill_null(encoded.indices, len(local)))]

    def table(self):
        import pyarrow as pa

        return pa.table({
            "sample_id": pa.chunked_array(self.ids, pa.string()),
            "code": pa.chunked_array([pa.array(c) for c in self.codes], pa.int64()),
            "units": pa.chunked_array([pa.array(u) for u in self.units], pa.int64()),
        })


def _numpy(array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _batches(rows) -> Iterable:
    if hasattr(rows, "to_batches"):
        return rows.to_batches()
    return rows


def joint_counts(current, baseline, *, bins: int = 10) -> JointCounts:
    """Join two runs' rows by ``sample_id`` into :class:`JointCounts`.

    ``current`` and ``baseline`` are pyarrow Tables or iterables of RecordBatches with the
    columns ``sample_id, label, prediction, confidence, error`` (``engine.iter_run(info,
    list(COLUMNS))``). Ids on one side only, duplicated ids and labels that differ are counted,
    not raised: check :attr:`JointCounts.pairable` before a paired comparison.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlobs.lake.aggregate import CONF_SCALE, check_bins

    check_bins(bins)
    tokens: dict[str, int] = {}
    sides = []
    for rows in (current, baseline):
        side = _Side(bins, tokens)
        for batch in _batches(rows):
            side.add(batch)
        sides.append(side.table())
        del side
    cur, base = sides
    del sides
    # Sorted by id, two runs over the same samples line up row for row: pairing is then a
    # comparison of the two sorted id columns (no hash table, ~1/3 of a hash join's memory).
    # Anything else (missing, extra or duplicated ids) goes through a hash join that counts it.
    cur, base = _by_id(cur), _by_id(base)
    dup_cur, dup_base = _adjacent_duplicates(cur), _adjacent_duplicates(base)
    aligned = (not dup_cur and not dup_base and cur.num_rows == base.num_rows
               and bool(pc.all(pc.equal(cur.column("sample_id"),
                                        base.column("sample_id"))).as_py() is not False))
    if aligned:
        matched, only_current, only_baseline = cur.num_rows, 0, 0
        joined = pa.table({"code_cur": cur.column("code"), "units_cur": cur.column("units"),
                           "code_base": base.column("code"), "units_base": base.column("units")})
    else:
        joined = cur.join(base, keys="sample_id", join_type="inner", left_suffix="_cur",
                          right_suffix="_base", use_threads=True).drop_columns(["sample_id"])
        clean = not (dup_cur or dup_base)
        matched = joined.num_rows if clean else _distinct(cur, base)
        only_current = cur.num_rows - matched if clean else _only(cur, base)
        only_baseline = base.num_rows - matched if clean else _only(base, cur)
    del cur, base
    grouped = joined.group_by(["code_cur", "code_base"], use_threads=False).aggregate(
        [([], "count_all"), ("units_cur", "sum"), ("units_base", "sum")])
    del joined
    code_cur = _numpy(grouped.column("code_cur").combine_chunks())
    code_base = _numpy(grouped.column("code_base").combine_chunks())
    n = _numpy(grouped.column("count_all").combine_chunks()).astype(np.int64)
    label_cur, pred_cur, bin_cur, err_cur = _unpack(code_cur)
    label_base, pred_base, bin_base, err_base = _unpack(code_base)
    mismatch = int(n[label_cur != label_base].sum())

    # Tokens are renumbered in sorted order so the counts do not depend on batch order.
    names = sorted(tokens)
    renumber = np.empty(len(tokens) + 1, dtype=np.int32)
    for new, name in enumerate(names):
        renumber[tokens[name]] = new
    renumber[-1] = -1

    def conf(name: str) -> np.ndarray:
        units = _numpy(pc.fill_null(grouped.column(name), 0).combine_chunks())
        return units.astype(np.int64).astype(np.float64) / CONF_SCALE

    joint = JointCounts(
        tokens=tuple(names), label=renumber[label_cur], pred_cur=renumber[pred_cur],
        pred_base=renumber[pred_base], error_cur=err_cur, error_base=err_base,
        bin_cur=bin_cur.astype(np.int32), bin_base=bin_base.astype(np.int32),
        conf_cur=conf("units_cur_sum"), conf_base=conf("units_base_sum"), n=n, bins=bins,
        matched=matched, only_current=only_current, only_baseline=only_baseline,
        duplicate_current=dup_cur, duplicate_baseline=dup_base, label_mismatch=mismatch)
    return _sorted(joint)


def _by_id(table):
    """The side sorted by sample id (one contiguous chunk per column)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[("sample_id", "ascending")])
    return table.take(order).combine_chunks()


def _adjacent_duplicates(table) -> int:
    """Rows beyond the first of each sample id, in a side sorted by id."""
    import pyarrow.compute as pc

    ids = table.column("sample_id")
    if len(ids) < 2:
        return 0
    return int(pc.sum(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py() or 0)


def _distinct(left, right) -> int:
    """Distinct ids present on both sides."""
    import pyarrow.compute as pc

    ids = pc.unique(left.column("sample_id"))
    return int(pc.sum(pc.is_in(ids, value_set=pc.unique(right.column("sample_id")))).as_py()
               or 0)


def _only(left, right) -> int:
    """Distinct ids of `left` absent from `right`."""
    import pyarrow.compute as pc

    ids = pc.unique(left.column("sample_id"))
    return int(pc.sum(pc.invert(pc.is_in(ids, value_set=pc.unique(right.column("sample_id")))))
               .as_py() or 0)


def _sorted(joint: JointCounts) -> JointCounts:
    """Canonical cell order after renumbering tokens (so equal counts give equal arrays)."""
    keys = np.stack([joint.label, joint.pred_cur, joint.pred_base, joint.error_cur,
                     joint.error_base, joint.bin_cur, joint.bin_base]).astype(np.int64)
    order = np.lexsort(keys[::-1]) if len(joint.n) else np.zeros(0, np.int64)
    fields = {name: getattr(joint, name)[order] for name in (
        "label", "pred_cur", "pred_base", "error_cur", "error_base", "bin_cur", "bin_base",
        "conf_cur", "conf_base", "n")}
    return JointCounts(tokens=joint.tokens, bins=joint.bins, matched=joint.matched,
                       only_current=joint.only_current, only_baseline=joint.only_baseline,
                       duplicate_current=joint.duplicate_current,
                       duplicate_baseline=joint.duplicate_baseline,
                       label_mismatch=joint.label_mismatch, **fields)
