"""Two runs over the same golden set, joined by sample id into joint counts.

A paired comparison needs, for each sample, what both runs predicted. Held row by row that is two
million-row tables; what the statistics need is far smaller: the number of samples in each
combination of (label, current prediction, baseline prediction, current confidence bin, baseline
confidence bin, current error, baseline error), with the confidence sums of each side. That is
:class:`JointCounts` — its size depends on the classes and bins, not on the rows, and the paired
bootstrap resamples its cells like the single-run bootstrap resamples the aggregate's.

:func:`joint_counts` builds it from the two runs' row streams (``engine.iter_run`` batches, or
tables). Each incoming batch is reduced at once to its sample ids and five small integer codes,
so the payload columns (scores, slices, inputs) are never held; the two reduced sides are then
hash-joined by pyarrow and grouped. Memory is about 30 bytes plus the id's length per row and
side (measured in bench/stats_paired.py), time is linear in the rows.

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
        if which not in ("current", "baseline"):
            raise ValueError(f"side must be 'current' or 'baseline', got {which!r}")
        cur = which == "current"
        labels = self.default_labels() if labels is None else list(labels)
        remap = self.class_index(labels)
        pred = self.pred_cur if cur else self.pred_base
        error = self.error_cur if cur else self.error_base
        return canonical(Cells(
            labels=tuple(labels), true=remap[self.label], pred=remap[pred],
            correct=(self.label >= 0) & (pred == self.label),
            error=error, conf_bin=self.bin_cur if cur else self.bin_base,
            conf_sum=self.conf_cur if cur else self.conf_base, n=self.n, bins=self.bins))

    def class_index(self, labels: list[str]) -> np.ndarray:
        """Token index (+1 for -1 at the end) → index into ``labels`` or NONE; use as
        ``remap[token_array]`` (index -1 lands on the trailing NONE)."""
        position = {label: i for i, label in enumerate(labels)}
        return np.array([position.get(t, NONE) for t in self.tokens] + [NONE], dtype=np.int32)


class _Side:
    """One run's rows reduced to sample ids and integer codes, batch by batch."""

    def __init__(self, bins: int, tokens: dict[str, int]):
        self.bins = bins
        self.tokens = tokens
        self.parts: list = []

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
        self.parts.append(pa.table({
            "sample_id": pc.cast(batch.column("sample_id"), pa.string()),
            "label": self._codes(pc.cast(batch.column("label"), pa.string())),
            "pred": self._codes(prediction),
            "err": is_error,
            "bin": pc.cast(conf_bin, pa.int32()),
            "units": pc.cast(units, pa.int64()),
        }))

    def _codes(self, strings):
        """Global token indices (int32, -1 for null) for a string array."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(strings)
        local = [self.tokens.setdefault(value, len(self.tokens))
                 for value in encoded.dictionary.to_pylist()]
        mapping = np.array(local + [_NULL_TOKEN], dtype=np.int32)
        indices = pc.fill_null(encoded.indices, len(local)).to_numpy(zero_copy_only=False)
        return pa.array(mapping[indices])

    def table(self):
        import pyarrow as pa

        schema = pa.schema([("sample_id", pa.string()), ("label", pa.int32()),
                            ("pred", pa.int32()), ("err", pa.bool_()), ("bin", pa.int32()),
                            ("units", pa.int64())])
        if not self.parts:
            return schema.empty_table()
        return pa.concat_tables([p.cast(schema) for p in self.parts]).combine_chunks()


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
    cur, base = sides
    dup_cur = _duplicates(cur)
    dup_base = _duplicates(base)
    joined = cur.join(base, keys="sample_id", join_type="inner", left_suffix="_cur",
                      right_suffix="_base", use_threads=True)
    clean = not (dup_cur or dup_base)
    matched = joined.num_rows if clean else _distinct(joined)
    mismatch = int(pc.sum(pc.not_equal(
        pc.fill_null(joined.column("label_cur"), -1), pc.fill_null(joined.column("label_base"), -1)
    )).as_py() or 0)
    keys = ["label_cur", "pred_cur", "pred_base", "err_cur", "err_base", "bin_cur", "bin_base"]
    grouped = joined.group_by(keys, use_threads=False).aggregate(
        [([], "count_all"), ("units_cur", "sum"), ("units_base", "sum")])
    order = pc.sort_indices(grouped, sort_keys=[(k, "ascending") for k in keys])
    grouped = grouped.take(order)

    # Tokens are renumbered in sorted order so the counts do not depend on batch order.
    names = sorted(tokens)
    renumber = np.empty(len(tokens) + 1, dtype=np.int32)
    for new, name in enumerate(names):
        renumber[tokens[name]] = new
    renumber[-1] = -1

    def column(name: str, dtype) -> np.ndarray:
        return grouped.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    def token(name: str) -> np.ndarray:
        return renumber[column(name, np.int64)]

    n = column("count_all", np.int64)
    units = {side: column(f"units_{side}_sum", np.int64) for side in ("cur", "base")}
    joint = JointCounts(
        tokens=tuple(names), label=token("label_cur"), pred_cur=token("pred_cur"),
        pred_base=token("pred_base"), error_cur=column("err_cur", bool),
        error_base=column("err_base", bool), bin_cur=column("bin_cur", np.int32),
        bin_base=column("bin_base", np.int32),
        conf_cur=units["cur"].astype(np.float64) / CONF_SCALE,
        conf_base=units["base"].astype(np.float64) / CONF_SCALE, n=n, bins=bins,
        matched=matched,
        only_current=cur.num_rows - matched if clean else _only(cur, base),
        only_baseline=base.num_rows - matched if clean else _only(base, cur),
        duplicate_current=dup_cur, duplicate_baseline=dup_base, label_mismatch=mismatch)
    return _sorted(joint)


def _duplicates(table) -> int:
    """Rows beyond the first of each sample id."""
    import pyarrow.compute as pc

    return table.num_rows - pc.count_distinct(table.column("sample_id")).as_py()


def _distinct(joined) -> int:
    import pyarrow.compute as pc

    return pc.count_distinct(joined.column("sample_id")).as_py()


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
