"""The predictions table: one schema for every engine and every model.

Per-class scores and slice values are maps, so one table holds any model's classes and any
dataset's slice columns without schema changes; the run's identity (run id, model version,
commit) is on every row and in the snapshot summary of the run's single commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlobs.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_DEFAULT = "mlobs.predictions"

# Snapshot summary properties every run's commit carries.
PROP_RUN_ID = "mlobs.run-id"
PROP_MODEL_VERSION = "mlobs.model-version"
PROP_COMMIT_SHA = "mlobs.commit-sha"
PROP_DATASET_HASH = "mlobs.dataset-hash"
PROP_ACTION_VERSION = "mlobs.action-version"
PROP_ROWS = "mlobs.rows"
PROP_ERRORS = "mlobs.errors"  # rows whose prediction failed (absent on runs written before it)

# The libraries' own commit retries (pyiceberg 0.12 and Java Iceberg) re-apply an append onto the
# new table state: they cannot re-check that the run id is still absent, and pyiceberg's drops
# the tag update of the same transaction. So the table turns them off (a table property both
# engines set) and the engines retry themselves (mlobs.retry), re-checking the run id and
# re-creating the tag each time.
NO_LIBRARY_RETRIES = ("commit.retry.num-retries", "0")

# Columns the evaluation runner produces for each sample (an Arrow RecordBatch per client batch).
SAMPLE_COLUMNS = ("sample_id", "label", "prediction", "confidence", "scores", "slices", "error")
# Columns the lake adds for the run.
RUN_COLUMNS = ("run_id", "model_version", "commit_sha", "evaluated_at")


def iceberg_schema():
    """The table schema (pyiceberg types), with the ids a catalog assigns on creation: top-level
    fields first (1–11), then the maps' keys and values (12–15), breadth-first."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        DoubleType,
        MapType,
        NestedField,
        StringType,
        TimestamptzType,
    )

    return Schema(
        NestedField(1, "run_id", StringType(), required=True),
        NestedField(2, "model_version", StringType(), required=True),
        NestedField(3, "commit_sha", StringType(), required=False),
        NestedField(4, "evaluated_at", TimestamptzType(), required=True),
        NestedField(5, "sample_id", StringType(), required=True),
        NestedField(6, "label", StringType(), required=False),
        NestedField(7, "prediction", StringType(), required=False),
        NestedField(8, "confidence", DoubleType(), required=False),
        NestedField(9, "scores", MapType(12, StringType(), 13, DoubleType(), value_required=False),
                    required=False),
        NestedField(10, "slices", MapType(14, StringType(), 15, StringType(), value_required=False),
                    required=False),
        NestedField(11, "error", StringType(), required=False),
    )


def sample_arrow_schema():
    """The Arrow schema of the runner's batches (SAMPLE_COLUMNS)."""
    import pyarrow as pa

    return pa.schema([
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("slices", pa.map_(pa.string(), pa.string())),
        pa.field("error", pa.string()),
    ])


def table_schema():
    """THE schema with the field ids a catalog assigns on create (breadth-first), so files either
    engine writes carry the ids the table will have."""
    from pyiceberg.schema import assign_fresh_schema_ids

    return assign_fresh_schema_ids(iceberg_schema())


def table_arrow_schema(columns: list[str] | None = None) -> pa.Schema:
    """Arrow schema of table rows as both engines return them (field ids included)."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    full = schema_to_pyarrow(table_schema())
    return full if columns is None else pa_select(full, columns)


def pa_select(full: pa.Schema, columns: list[str]) -> pa.Schema:
    import pyarrow as pa

    unknown = [name for name in columns if name not in full.names]
    if unknown or not columns:
        raise ConfigError(
            f"unknown columns {unknown or columns}: the table has {', '.join(full.names)}"
        )
    return pa.schema([full.field(name) for name in columns])
