"""The counts every metric is computed from, defined once so both engines give identical tables.

Group keys: ``slice_name``, ``slice_value`` ("" and "" for the whole run; otherwise one row group
per entry of the ``slices`` map), ``label``, ``prediction`` (null on error rows), ``conf_bin``,
``is_error``. Measures: ``n`` (rows) and ``conf_sum`` (sum of confidence; null counts as 0).

``conf_bin`` = min(floor(confidence × bins), bins − 1), and −1 when the confidence is null or NaN
(NaN counts as null everywhere). A confidence is a probability: values outside [0, 1] are
clamped into it for both ``conf_bin`` and ``conf_sum``.

``conf_sum`` is summed in fixed point: each confidence is rounded (half up) to a multiple of 2⁻³²
and the int64 units are summed. Floating sums depend on the order of additions, which differs
between engines and partitionings; integer sums do not, so both engines return bit-identical
numbers (scaling by a power of two and adding 0.5 are exact in binary floating point). The error
is at most 1.2e-10 per row.

The pyiceberg engine folds batch-wise partial group-bys (bounded memory); the Spark engine runs
the same definition as SQL (see spark_engine). `normalize` gives both the same types and order.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from mlobs.errors import ConfigError

KEYS = ("slice_name", "slice_value", "label", "prediction", "conf_bin", "is_error")
MEASURES = ("n", "conf_sum")
INPUT_COLUMNS = ["label", "prediction", "confidence", "slices", "error"]
# Re-group the partial results once they hold this many rows, to keep memory bounded.
_COMPACT_ROWS = 200_000
CONF_SCALE = float(2**32)  # fixed-point unit of conf_sum; a power of two, so scaling is exact
UNITS = "conf_units"  # the int64 fixed-point sum engines produce before `finish`


def aggregate_schema() -> pa.Schema:
    return pa.schema([
        pa.field("slice_name", pa.string()),
        pa.field("slice_value", pa.string()),
        pa.field("label", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("conf_bin", pa.int32()),
        pa.field("is_error", pa.bool_()),
        pa.field("n", pa.int64()),
        pa.field("conf_sum", pa.float64()),
    ])


def check_bins(bins: int) -> int:
    if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= 1000:
        raise ConfigError(f"invalid confidence bin count {bins!r}: expected 1..1000")
    return bins


def aggregate_batches(batches: Iterable[pa.RecordBatch], bins: int = 10) -> pa.Table:
    """Stream `batches` (with INPUT_COLUMNS) into the aggregate table."""
    check_bins(bins)
    partials: list[pa.Table] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        for part in _batch_partials(batch, bins):
            partials.append(part)
            pending_rows += part.num_rows
        if pending_rows >= _COMPACT_ROWS:
            partials = [_combine(partials)]
            pending_rows = partials[0].num_rows
    if not partials:
        return aggregate_schema().empty_table()
    return finish(_combine(partials))


def finish(table: pa.Table) -> pa.Table:
    """From KEYS + n + conf_units to the aggregate table: canonical types and row order (keys
    ascending, nulls first)."""
    target = aggregate_schema()
    conf_sum = pc.divide(pc.cast(table.column(UNITS), pa.float64()), CONF_SCALE)
    table = table.select([*KEYS, "n"]).append_column("conf_sum", conf_sum).cast(target)
    order = pc.sort_indices(table, sort_keys=[(key, "ascending", "at_start") for key in KEYS])
    return table.take(order).combine_chunks()


def _batch_partials(batch: pa.RecordBatch, bins: int) -> list[pa.Table]:
    confidence = batch.column("confidence")
    error = batch.column("error")
    is_error = pc.is_valid(error)
    missing = pc.is_null(confidence, nan_is_null=True)
    conf = pc.min_element_wise(pc.max_element_wise(pc.if_else(missing, 0.0, confidence), 0.0), 1.0)
    in_bin = pc.min_element_wise(pc.floor(pc.multiply(conf, float(bins))), float(bins - 1))
    conf_bin = pc.if_else(missing, -1, pc.cast(in_bin, pa.int32()))
    units = pc.cast(pc.floor(pc.add(pc.multiply(conf, CONF_SCALE), 0.5)), pa.int64())
    prediction = pc.if_else(
        is_error, pa.scalar(None, pa.string()), pc.cast(batch.column("prediction"), pa.string())
    )
    base = {
        "label": pc.cast(batch.column("label"), pa.string()),
        "prediction": prediction,
        "conf_bin": pc.cast(conf_bin, pa.int32()),
        "is_error": is_error,
        UNITS: units,
    }
    n = batch.num_rows
    empty = pa.repeat(pa.scalar("", pa.string()), n)
    parts = [_group(pa.table({"slice_name": empty, "slice_value": empty, **base}))]

    slices = batch.column("slices")
    # Maps are cast to list<struct<key, value>>: list kernels crash on map arrays in pyarrow.
    entry_type = pa.struct([slices.type.key_field, slices.type.item_field])
    entries = slices.cast(pa.list_(pa.field("entries", entry_type, nullable=False)))
    parents = pc.list_parent_indices(entries)
    if len(parents):
        flat = pc.list_flatten(entries)
        exploded = {name: pc.take(column, parents) for name, column in base.items()}
        parts.append(_group(pa.table({
            "slice_name": pc.cast(flat.field("key"), pa.string()),
            "slice_value": pc.cast(flat.field("value"), pa.string()),
            **exploded,
        })))
    return parts


def _group(table: pa.Table) -> pa.Table:
    grouped = table.group_by(list(KEYS), use_threads=False).aggregate(
        [([], "count_all"), (UNITS, "sum")]
    )
    return grouped.rename_columns({"count_all": "n", f"{UNITS}_sum": UNITS}).select(
        [*KEYS, "n", UNITS]
    )


def _combine(partials: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(partials)
    grouped = table.group_by(list(KEYS), use_threads=False).aggregate(
        [("n", "sum"), (UNITS, "sum")]
    )
    return grouped.rename_columns({"n_sum": "n", f"{UNITS}_sum": UNITS}).select(
        [*KEYS, "n", UNITS]
    )
