"""Golden datasets (Parquet, CSV, JSON lines) read as a stream of Arrow batches.

Nothing here loads a file whole: Parquet is read by row groups, CSV and JSON lines by blocks,
and the batches are re-cut to ``batch_size`` rows. Each batch holds ``sample_id`` (the id column
as text, else the 0-based row index in the file), the input columns as read, the label in its
canonical spelling (:mod:`mlobs.evaluate.labels`) and the slice columns as text — the shapes the
predictions table stores.

Before anything is sent, :meth:`Dataset.check` reads the id and label columns once: duplicate ids
are refused, rows without a usable label are counted (they are never sent, stored or scored —
a missing label is not a class), and the set of label values is kept for the label checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mlobs.errors import ConfigError, first_line
from mlobs.evaluate.labels import ClassNames, canonical

__all__ = ["FORMATS", "SAMPLE_ID", "Dataset", "LabelCheck", "detect_format", "open_dataset"]

SAMPLE_ID = "sample_id"
# Extensions by format; a trailing .gz/.bz2/.zst is decompressed on the fly by pyarrow.
FORMATS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv",),
    "jsonl": (".jsonl", ".ndjson", ".json"),
}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
_BLOCK_SIZE = 4 << 20  # bytes per CSV/JSON block: big enough that type inference sees many rows
_HASH_CHUNK = 1 << 20
_MAX_CLASSES = 100_000  # distinct label values: beyond this it is not a classification set
_SHOWN = 5  # duplicate ids named in the error


@dataclass(frozen=True)
class LabelCheck:
    """What one pass over the id and label columns found."""

    rows: int  # in the file
    unlabeled: int  # rows without a usable label: not sent, not stored, not scored
    labels: frozenset[str]  # canonical label values (after class-names, when they were indices)
    mapped: bool = False  # integer labels were mapped to class-names

    @property
    def labeled(self) -> int:
        return self.rows - self.unlabeled


def detect_format(path: Path) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file name; ConfigError for anything else."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    for fmt, exts in FORMATS.items():
        if ext in exts:
            return fmt
    known = ", ".join(e for exts in FORMATS.values() for e in exts)
    raise ConfigError(f"dataset {path.name}: unsupported file type {ext or '(none)'!r}; use one of {known}")


@dataclass
class Dataset:
    """An opened, validated dataset. Iterate with :meth:`iter_batches`; hash with :meth:`sha256`."""

    path: Path
    format: str
    input_columns: list[str]
    label_column: str
    slice_columns: list[str]
    id_column: str | None
    batch_size: int
    schema: pa.Schema  # file columns with the types the readers will produce
    _row_count: int | None = field(default=None, repr=False)  # known up front for Parquet only
    _label_names: dict[str, str] | None = field(default=None, repr=False)  # index → class name

    @property
    def columns(self) -> list[str]:
        """The columns each batch carries, in order (``sample_id`` first)."""
        return _unique([SAMPLE_ID, *self.input_columns, self.label_column, *self.slice_columns])

    @cached_property
    def rows(self) -> int:
        """Number of samples: free for Parquet, one streamed pass (label column only) otherwise."""
        if self._row_count is not None:
            return self._row_count
        return sum(b.num_rows for b in self._raw_batches([self.label_column]))

    def check(self, class_names: ClassNames | None = None) -> LabelCheck:
        """One pass over the id and label columns, before anything is sent.

        Raises ConfigError for duplicate ids, a label column that cannot be read as one type, a
        set without any labelled row, or more than 100,000 distinct labels. With ``class_names``,
        integer labels that are all indices into it (and none a class name) are mapped to the
        names, so that they compare with predictions mapped the same way.
        """
        columns = _unique([c for c in (self.id_column, self.label_column) if c])
        rows = unlabeled = 0
        labels: set[str] = set()
        ids: list[pa.Array] = []
        for raw in self._raw_batches(columns):
            rows += raw.num_rows
            label = self._canonical_label(raw.column(self.label_column), mapped=False)
            unlabeled += label.null_count
            labels.update(v for v in pc.unique(label).to_pylist() if v is not None)
            if len(labels) > _MAX_CLASSES:
                raise ConfigError(f"dataset {self.path.name}: label column {self.label_column!r} "
                                  f"has more than {_MAX_CLASSES:,} distinct values; evaluate "
                                  "measures classifiers")
            if self.id_column:
                ids.append(_as_text(raw.column(self.id_column), self.id_column, self.path))
        if self._row_count is None:
            self._row_count = rows
        if self.id_column:
            self._check_ids(pa.chunked_array(ids, pa.string()) if ids else pa.chunked_array([], pa.string()))
        if rows == unlabeled:
            raise ConfigError(f"dataset {self.path.name}: no row has a label in column "
                              f"{self.label_column!r} (null, NaN and empty labels are not scored)")
        mapped = False
        if class_names is not None:
            indices = {str(i): n for i, n in enumerate(class_names.names)}
            if labels <= indices.keys() and not labels & set(class_names.names):
                self._label_names, mapped = indices, True
                labels = {indices[v] for v in labels}
        return LabelCheck(rows=rows, unlabeled=unlabeled, labels=frozenset(labels), mapped=mapped)

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Batches of ``batch_size`` labelled rows (the last may be shorter), in file order.

        Rows without a usable label are left out; ``sample_id`` stays the row's index in the file.
        """
        needed = _unique([c for c in (self.id_column, *self.input_columns, self.label_column,
                                      *self.slice_columns) if c])

        def shaped() -> Iterator[pa.RecordBatch]:
            offset = 0
            for raw in self._raw_batches(needed):
                out = self._shape(raw, offset)
                offset += raw.num_rows
                if out.num_rows:
                    yield out

        yield from _rebatch(shaped(), self.batch_size)

    def _canonical_label(self, array: pa.Array, *, mapped: bool = True) -> pa.Array:
        try:
            label = canonical(array)
        except ConfigError as exc:
            raise ConfigError(f"dataset {self.path.name}: label column {self.label_column!r}: "
                              f"{exc.message}") from None
        if mapped and self._label_names is not None:
            names = self._label_names
            label = pa.array([names.get(v, v) if v is not None else None for v in label.to_pylist()],
                             pa.string())
        return label

    def _check_ids(self, ids: pa.ChunkedArray) -> None:
        if ids.null_count:
            raise ConfigError(f"dataset {self.path.name}: id column {self.id_column!r} has "
                              f"{ids.null_count} empty value(s); every sample needs an id")
        counts = pc.value_counts(ids)
        repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
        if len(repeated):
            shown = ", ".join(f"{v['values']!r} ×{v['counts']}" for v in repeated[:_SHOWN].to_pylist())
            more = f" and {len(repeated) - _SHOWN} more" if len(repeated) > _SHOWN else ""
            raise ConfigError(f"dataset {self.path.name}: id column {self.id_column!r} repeats "
                              f"{len(repeated)} id(s): {shown}{more}; ids must be unique (each row "
                              "is one sample in the table)")

    def sha256(self) -> str:
        """Hex SHA-256 of the file's bytes (as stored, compressed or not), read in chunks."""
        return self._sha256

    @cached_property
    def _sha256(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _shape(self, raw: pa.RecordBatch, offset: int) -> pa.RecordBatch:
        if self.id_column:
            sample_id = _as_text(raw.column(self.id_column), self.id_column, self.path)
            if sample_id.null_count:
                raise ConfigError(f"dataset {self.path.name}: id column {self.id_column!r} has empty "
                                  f"values near row {offset}; every sample needs an id")
        else:
            sample_id = pc.cast(pa.array(range(offset, offset + raw.num_rows), pa.int64()), pa.string())
        arrays: dict[str, pa.Array] = {SAMPLE_ID: sample_id}
        for name in self.input_columns:
            arrays[name] = raw.column(name)
        arrays[self.label_column] = self._canonical_label(raw.column(self.label_column))
        for name in self.slice_columns:
            if name != self.label_column:
                arrays[name] = _as_text(raw.column(name), name, self.path)
        batch = pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays))
        labelled = pc.is_valid(arrays[self.label_column])
        return batch if labelled.false_count == 0 else batch.filter(labelled)

    def _raw_batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            yield from _read(self.path, self.format, columns, self.schema, self.batch_size)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            hint = ("write each column's values one way (all numbers or all text)"
                    if "changed from" in str(exc) else None)
            raise ConfigError(f"dataset {self.path.name}: could not read it: {first_line(exc)}",
                              hint=hint) from exc


def open_dataset(
    path: Path,
    *,
    input_columns: list[str] | None,
    label_column: str,
    slice_columns: list[str],
    id_column: str | None = None,
    batch_size: int,
) -> Dataset:
    """Open and validate a dataset without reading it whole.

    ``input_columns`` defaults to every column that is not the id, label or a slice column.
    Raises ConfigError for a missing file, an unknown extension, a missing column (naming the
    columns the file has) or a file without rows.
    """
    path = Path(path)
    if batch_size < 1:
        raise ConfigError(f"batch-size must be at least 1, got {batch_size}")
    if not path.is_file():
        raise ConfigError(f"dataset not found: {path}")
    fmt = detect_format(path)
    try:
        schema, row_count, has_rows = _probe(path, fmt)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        if "Empty" in str(exc):  # pyarrow's words for a zero-byte CSV / JSON file
            raise ConfigError(f"dataset {path.name} is empty: no rows to evaluate") from exc
        raise ConfigError(f"dataset {path.name}: not readable as {fmt}: {first_line(exc)}") from exc

    available = list(schema.names)

    def require(column: str, role: str) -> None:
        if column not in available:
            raise ConfigError(f"dataset {path.name} has no {role} column {column!r}; "
                              f"its columns are: {', '.join(available)}")

    require(label_column, "label")
    for c in slice_columns:
        require(c, "slice")
    if id_column:
        require(id_column, "id")
    reserved = {label_column, *slice_columns, *([id_column] if id_column else [])}
    if input_columns is None:
        input_columns = [c for c in available if c not in reserved]
    else:
        for c in input_columns:
            require(c, "input")
    if not input_columns:
        raise ConfigError(f"dataset {path.name} has no input columns left besides id, label and "
                          f"slices; its columns are: {', '.join(available)}")
    if label_column in input_columns:
        raise ConfigError(f"label column {label_column!r} is also an input column: the model "
                          "would see the answer")
    if SAMPLE_ID in available and id_column != SAMPLE_ID and SAMPLE_ID in {*input_columns, *slice_columns}:
        raise ConfigError(f"dataset {path.name} has a {SAMPLE_ID!r} column: pass it as the id "
                          "column (the runner names its own id column so)")
    if not has_rows:
        raise ConfigError(f"dataset {path.name} is empty: no rows to evaluate")
    if fmt == "csv":
        # CSV cells are text already: keep ids like "007" and labels like "1" as written.
        text = reserved
        schema = pa.schema([pa.field(f.name, pa.string()) if f.name in text else f for f in schema])
    return Dataset(path=path, format=fmt, input_columns=list(input_columns),
                   label_column=label_column, slice_columns=list(slice_columns),
                   id_column=id_column, batch_size=batch_size, schema=schema,
                   _row_count=row_count)


# --- readers ---------------------------------------------------------------------------------


def _probe(path: Path, fmt: str) -> tuple[pa.Schema, int | None, bool]:
    """The file's schema as the stream readers will type it, its row count if free, any rows."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        return meta.schema_arrow, meta.metadata.num_rows, meta.metadata.num_rows > 0
    reader = _open_text(path, fmt, None)
    try:
        first = _first_nonempty(reader)
        # A column that is empty in the first block is typed null; read it as text instead so a
        # later block with values does not fail the whole read.
        schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                            for f in reader.schema])
        return schema, None, first is not None
    finally:
        reader.close()


def _read(path: Path, fmt: str, columns: list[str], schema: pa.Schema,
          batch_size: int) -> Iterator[pa.RecordBatch]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)
        return
    reader = _open_text(path, fmt, pa.schema([schema.field(c) for c in columns]))
    try:
        for batch in reader:
            yield batch.select(columns)
    finally:
        reader.close()


def _open_text(path: Path, fmt: str, schema: pa.Schema | None):
    """A streaming CSV / JSON-lines reader; with ``schema``, only those columns, typed so."""
    if fmt == "csv":
        import pyarrow.csv as pcsv

        convert = pcsv.ConvertOptions()
        if schema is not None:
            convert = pcsv.ConvertOptions(include_columns=schema.names,
                                          column_types={f.name: f.type for f in schema})
        return pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=_BLOCK_SIZE),
                             convert_options=convert)
    import pyarrow.json as pjson

    parse = pjson.ParseOptions()
    if schema is not None:
        # Explicit types keep every block like the first; fields we do not need are skipped.
        parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pjson.open_json(path, read_options=pjson.ReadOptions(block_size=_BLOCK_SIZE),
                           parse_options=parse)


def _first_nonempty(reader) -> pa.RecordBatch | None:
    for batch in reader:
        if batch.num_rows:
            return batch
    return None


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of ``size`` rows (zero-copy slices, one concat)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _as_text(array: pa.Array, name: str, path: Path) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type) or pa.types.is_dictionary(array.type):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(array.type):
        # 1.0 → "1": labels written by pandas as floats must still match integer class names.
        as_int = pc.cast(array, pa.int64(), safe=False)
        if pc.all(pc.equal(as_int, array)).as_py() in (True, None):
            array = as_int
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"dataset {path.name}: column {name!r} of type {array.type} cannot be "
                          "read as text (label, slice and id columns must be scalar)") from exc


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
