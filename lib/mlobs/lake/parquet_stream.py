"""Write a run's batches to Parquet files as they arrive, holding at most one row group in memory.

Client batches are small (tens to hundreds of rows); writing each as its own row group or file
would make thousands of tiny pieces. So batches are buffered up to `row_group_bytes` (Arrow
bytes), then written as one row group, and a new file is started after `file_bytes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlobs.errors import ConfigError
from mlobs.lake import schema

DEFAULT_ROW_GROUP_BYTES = 64 * 1024 * 1024
DEFAULT_FILE_BYTES = 512 * 1024 * 1024  # Iceberg's write.target-file-size-bytes default

# Opens the n-th file of the run: returns its location and a writable binary stream.
FileOpener = Callable[[int], tuple[str, Any]]


@dataclass(frozen=True)
class WrittenFile:
    location: str
    rows: int


def conform_sample_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """The batch with exactly the runner's sample columns, in order, with the runner's types."""
    expected = schema.sample_arrow_schema()
    names = list(batch.schema.names)
    missing = [name for name in expected.names if name not in names]
    extra = [name for name in names if name not in expected.names]
    if missing or extra:
        raise ConfigError(
            f"prediction batch does not match the sample schema: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    selected = batch.select(expected.names)
    if selected.schema.equals(expected):
        return selected
    try:
        return selected.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConfigError(f"prediction batch has wrong column types: {exc}") from exc


def with_run_columns(
    batch: pa.RecordBatch,
    target: pa.Schema,
    *,
    run_id: str,
    model_version: str,
    commit_sha: str,
    evaluated_at: datetime,
) -> pa.RecordBatch:
    """A table row batch: the run columns (constant per run) + the sample columns, cast to `target`."""
    batch = conform_sample_batch(batch)
    n = batch.num_rows
    run_values = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "model_version": pa.repeat(pa.scalar(model_version, pa.string()), n),
        "commit_sha": pa.repeat(pa.scalar(commit_sha, pa.string()), n),
        "evaluated_at": pa.repeat(pa.scalar(evaluated_at, pa.timestamp("us", tz="UTC")), n),
    }
    columns = [
        run_values[name] if name in run_values else batch.column(name) for name in target.names
    ]
    return pa.RecordBatch.from_arrays(columns, names=target.names).cast(target)


class RollingParquetWriter:
    """Buffers batches into row groups and rolls files; `close()` returns what was written."""

    def __init__(
        self,
        schema_: pa.Schema,
        open_file: FileOpener,
        *,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        file_bytes: int = DEFAULT_FILE_BYTES,
        compression: str = "zstd",
    ) -> None:
        self._schema = schema_
        self._open_file = open_file
        self._row_group_bytes = row_group_bytes
        self._file_bytes = file_bytes
        self._compression = compression
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None
        self._location = ""
        self._file_rows = 0
        self._file_bytes_written = 0
        self._files: list[WrittenFile] = []
        self.locations: list[str] = []  # every file opened, closed or not (for clean-up)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._buffered_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._buffered_bytes >= self._row_group_bytes:
            self._flush()

    def close(self) -> list[WrittenFile]:
        self._flush()
        self._close_file()
        return list(self._files)

    def abort(self) -> None:
        """Close open handles without finishing; the caller deletes `locations`."""
        self._buffer.clear()
        for closer in (self._writer, self._stream):
            if closer is not None:
                # Best effort on an already failing path: the original error is what matters.
                with contextlib.suppress(Exception):
                    closer.close()
        self._writer = self._stream = None

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._location, self._stream = self._open_file(len(self.locations))
            self.locations.append(self._location)
            self._writer = pq.ParquetWriter(self._stream, self._schema, compression=self._compression)
        # One row group per flush; Table.from_batches does not copy the buffered batches.
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._file_rows += table.num_rows
        self._file_bytes_written += self._buffered_bytes
        self._buffer = []
        self._buffered_bytes = 0
        if self._file_bytes_written >= self._file_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stream.close()
        self._files.append(WrittenFile(self._location, self._file_rows))
        self._writer = self._stream = None
        self._file_rows = 0
        self._file_bytes_written = 0
