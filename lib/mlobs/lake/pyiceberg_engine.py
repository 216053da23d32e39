"""The default engine: pyiceberg + pyarrow in this process, any pyiceberg catalog.

Writes stream: batches are written to Parquet data files in the table's data location as they
arrive (one row group in memory at a time), then all files are committed in ONE fast-append
transaction that also carries the run's snapshot properties and moves the version's tag.

Crash safety: until that single catalog commit, the table's metadata does not reference the
new files, so a process killed mid-run leaves the table exactly as it was — no rows visible, no
snapshot. The data files it had written stay behind unreferenced (an orphan-file clean-up such as
Spark's ``remove_orphan_files`` reclaims them). Failures this process sees are cleaned up.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlobs.errors import ConfigError, MlobsError
from mlobs.lake import aggregate as agg
from mlobs.lake import runs as runlib
from mlobs.lake import schema
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import RunInfo
from mlobs.lake.parquet_stream import (
    DEFAULT_FILE_BYTES,
    DEFAULT_ROW_GROUP_BYTES,
    RollingParquetWriter,
    with_run_columns,
)
from mlobs.retry import Backoff

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

# Commits are optimistic: a commit that loses to another writer's is retried on the new table
# state. Every lost attempt means another run landed, so parallel jobs always progress; the budget
# is time, not a count of attempts (16 writers at once need more than 8 rounds).
DEFAULT_COMMIT_TIMEOUT_S = 120.0
COMMIT_RETRY = Backoff(base=0.1, cap=2.0, deadline=DEFAULT_COMMIT_TIMEOUT_S)
# Setting the table property on a table created elsewhere races only with other first writers.
_PROPERTY_RETRY = Backoff(base=0.02, cap=0.2, attempts=8)
class PyIcebergEngine:
    kind = "pyiceberg"

    def __init__(
        self,
        catalog: CatalogConfig,
        *,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        file_bytes: int = DEFAULT_FILE_BYTES,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT_S,
    ) -> None:
        self.config = catalog
        self.table = catalog.table
        self._row_group_bytes = row_group_bytes
        self._file_bytes = file_bytes
        self._commit_timeout = commit_timeout
        self._catalog: Catalog | None = None
        self._attempt_files: list[str] = []  # files the current commit attempt wrote

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self.config.load()
        return self._catalog

    def close(self) -> None:
        engine = getattr(self._catalog, "engine", None)  # SqlCatalog's SQLAlchemy engine
        if engine is not None:
            engine.dispose()
        self._catalog = None

    def __enter__(self) -> PyIcebergEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def write_run(
        self,
        batches: Iterable[pa.RecordBatch],
        *,
        run_id: str,
        model_version: str,
        commit_sha: str,
        dataset_hash: str,
        evaluated_at: datetime,
        action_version: str,
        accept: runlib.Admission | None = None,
    ) -> tuple[RunInfo, bool]:
        """Append the run as one snapshot; (existing info, False) if the run id is already there.

        The run must pass ``runs.admit`` (with `accept`) once written; a refused run's files are
        deleted and nothing is committed. See the module docstring for what a crash before the
        commit leaves behind.
        """
        runlib.validate_run_args(run_id, model_version, evaluated_at)
        identity = {"model_version": model_version, "dataset_hash": dataset_hash,
                    "commit_sha": commit_sha}
        table = self._ensure_table()
        existing = self._find(table, run_id)
        if existing is not None:
            runlib.check_identity(existing, **identity)
            return existing, False

        from pyiceberg.io.pyarrow import schema_to_pyarrow

        target = schema_to_pyarrow(table.schema())
        writer = RollingParquetWriter(
            target,
            self._file_opener(table, model_version, evaluated_at),
            row_group_bytes=self._row_group_bytes,
            file_bytes=self._file_bytes,
        )
        errors = 0
        try:
            for batch in batches:
                row_batch = with_run_columns(
                    batch, target, run_id=run_id, model_version=model_version,
                    commit_sha=commit_sha, evaluated_at=evaluated_at,
                )
                errors += row_batch.num_rows - row_batch.column("error").null_count
                writer.write(row_batch)
            files = writer.close()
            runlib.admit(run_id, runlib.RunCounts(writer.rows, errors), accept)
        except BaseException as exc:
            writer.abort()
            self._delete(table, writer.locations)
            _name_the_file(exc, writer.locations)
            raise
        log.info("run %s: %d rows in %d data files, committing", run_id, writer.rows, len(files))
        properties = runlib.snapshot_properties(
            run_id=run_id, model_version=model_version, commit_sha=commit_sha,
            dataset_hash=dataset_hash, action_version=action_version, rows=writer.rows,
            errors=errors,
        )
        return self._commit_with_retry(
            [f.location for f in files], properties, runlib.tag_for_version(model_version), identity
        )

    def _commit_with_retry(
        self, locations: list[str], properties: dict[str, str], tag: str, identity: dict[str, str]
    ) -> tuple[RunInfo, bool]:
        from pyiceberg.exceptions import CommitFailedException

        run_id = properties[schema.PROP_RUN_ID]
        last: list[Table] = []  # the table as the latest attempt saw it

        def attempt() -> tuple[RunInfo, bool]:
            table = self._load_table(required=True)
            last[:] = [table]
            existing = self._find(table, run_id)
            if existing is not None:  # another writer committed this run meanwhile
                self._delete(table, locations)
                runlib.check_identity(existing, **identity)
                return existing, False
            # _commit notes here the manifests, manifest list and metadata file it writes.
            written = self._attempt_files = []
            try:
                return self._commit(table, locations, properties, tag), True
            except CommitFailedException:
                self._delete(table, written)  # the data files are kept for the next attempt
                raise
            except BaseException:
                # A full disk, a read-only warehouse, a catalog gone mid-commit: unless the commit
                # went through after all, nothing of this run may stay behind — neither its data
                # files nor the manifests and metadata written for it.
                committed = self._committed_meanwhile(run_id)
                if committed is not None:
                    return committed, True
                self._delete(table, [*written, *locations])
                _name_the_file(sys.exc_info()[1], written or locations)
                raise

        def on_retry(error: BaseException, retry: int, wait: float) -> None:
            log.info("run %s: commit conflict (attempt %d), retrying", run_id, retry)

        retrying = COMMIT_RETRY.within(self._commit_timeout).retrying(CommitFailedException,
                                                                      on_retry=on_retry)
        try:
            return retrying(attempt)
        except CommitFailedException as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            self._delete(last[0], locations)
            raise MlobsError(
                f"could not commit run {run_id} to {self.table} within "
                f"{self._commit_timeout:g} s: {attempts} attempts each lost to another "
                f"writer (last: {exc})"
            ) from exc

    def _committed_meanwhile(self, run_id: str) -> RunInfo | None:
        try:
            return self._find(self._load_table(), run_id)
        except Exception:  # the catalog is unreadable too: treat the commit as not done
            return None

    def _commit(
        self, table: Table, locations: list[str], properties: dict[str, str], tag: str
    ) -> RunInfo:
        from pyiceberg.table.update.snapshot import ManageSnapshots

        written = self._attempt_files
        # Record every file the commit writes (manifests and the manifest list go through the
        # table's FileIO, the new metadata file through the catalog), so a failed commit can
        # remove exactly its own files and nothing a concurrent writer is writing.
        table.io = _RecordingIO(table.io, written)
        tx = table.transaction()
        # Our file names are fresh UUIDs, so skip the duplicate check (it scans every manifest).
        tx.add_files(locations, snapshot_properties=properties, check_duplicate_files=False)
        snapshot = tx.table_metadata.current_snapshot()
        assert snapshot is not None
        # The tag moves in the same commit: a reader never sees the run without its tag.
        with ManageSnapshots(tx) as refs:
            refs.create_tag(snapshot.snapshot_id, tag)
        with _recording_metadata_writes(self.catalog, written):
            tx.commit_transaction()
        info = runlib.run_from_summary(
            properties, snapshot_id=snapshot.snapshot_id, timestamp_ms=snapshot.timestamp_ms,
            table=self.table,
        )
        assert info is not None
        return info

    def _file_opener(self, table: Table, model_version: str, evaluated_at: datetime):
        write_id = uuid.uuid4().hex
        key = _partition_key(table, {"model_version": model_version, "evaluated_at": evaluated_at})
        provider = table.location_provider()

        def open_file(index: int) -> tuple[str, Any]:
            location = provider.new_data_location(f"00000-{index}-{write_id}.parquet", key)
            return location, table.io.new_output(location).create(overwrite=False)

        return open_file

    @staticmethod
    def _delete(table: Table, locations: list[str]) -> None:
        for location in locations:
            try:
                table.io.delete(location)
            except Exception as exc:  # an orphan file is harmless; say so
                log.warning("could not delete unreferenced data file %s: %s", location, exc)

    # -- tables and runs ---------------------------------------------------------------------

    def _identifier(self) -> tuple[str, str]:
        return (self.config.namespace, self.config.table_name)

    def _load_table(self, required: bool = False) -> Table | None:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog.load_table(self._identifier())
        except (NoSuchTableError, NoSuchNamespaceError):
            if required:
                raise ConfigError(f"table {self.table} does not exist") from None
            return None

    def _ensure_table(self) -> Table:
        """The table, created on first use. Several first runs may race to create the namespace
        and the table (parallel jobs on a fresh catalog): whoever loses uses the winner's."""
        from pyiceberg.exceptions import CommitFailedException
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.table import TableProperties
        from pyiceberg.transforms import DayTransform, IdentityTransform

        table = self._load_table()
        if table is None:
            fresh = schema.table_schema()
            spec = PartitionSpec(
                PartitionField(fresh.find_field("model_version").field_id, 1000,
                               IdentityTransform(), "model_version"),
                PartitionField(fresh.find_field("evaluated_at").field_id, 1001, DayTransform(),
                               "evaluated_at_day"),
            )
            self._ensure_namespace()
            table = self.catalog.create_table_if_not_exists(
                self._identifier(),
                schema=fresh,
                partition_spec=spec,
                properties={
                    "format-version": "2",
                    # add_files would otherwise add this property inside a run's commit.
                    TableProperties.DEFAULT_NAME_MAPPING: fresh.name_mapping.model_dump_json(),
                    schema.NO_LIBRARY_RETRIES[0]: schema.NO_LIBRARY_RETRIES[1],
                },
            )
        if table.properties.get(schema.NO_LIBRARY_RETRIES[0]) == schema.NO_LIBRARY_RETRIES[1]:
            return table

        def set_property() -> Table:
            current = self._load_table(required=True)
            if current.properties.get(schema.NO_LIBRARY_RETRIES[0]) != schema.NO_LIBRARY_RETRIES[1]:
                with current.transaction() as tx:  # a table created elsewhere: one metadata commit
                    tx.set_properties({schema.NO_LIBRARY_RETRIES[0]: schema.NO_LIBRARY_RETRIES[1]})
                current = self._load_table(required=True)
            return current

        try:  # another writer committed first: look again
            return _PROPERTY_RETRY.retrying(CommitFailedException)(set_property)
        except CommitFailedException:
            return self._load_table(required=True)

    def _ensure_namespace(self) -> None:
        # pyiceberg's SQL catalog checks, then inserts: a rival inserting in between makes the
        # insert fail with the database's own error (an IntegrityError on SQLite) rather than
        # NamespaceAlreadyExistsError. Whatever the catalog raised, a namespace that exists now
        # is all this needs.
        try:
            self.catalog.create_namespace_if_not_exists(self.config.namespace)
        except Exception:
            if not self.catalog.namespace_exists(self.config.namespace):
                raise

    def _runs(self, table: Table | None) -> list[RunInfo]:
        if table is None:
            return []
        found = []
        for snapshot in table.snapshots():  # metadata order = commit order
            if snapshot.summary is None:
                continue
            info = runlib.run_from_summary(
                snapshot.summary.additional_properties, snapshot_id=snapshot.snapshot_id,
                timestamp_ms=snapshot.timestamp_ms, table=self.table,
            )
            if info is not None:
                found.append(info)
        return found

    def _find(self, table: Table | None, run_id: str) -> RunInfo | None:
        return runlib.find_run(self._runs(table), run_id)

    def runs(self) -> list[RunInfo]:
        return self._runs(self._load_table())

    def find_run(self, run_id: str) -> RunInfo | None:
        return self._find(self._load_table(), run_id)

    def latest_run(self, model_version: str) -> RunInfo | None:
        return runlib.latest_run(self.runs(), model_version)

    def tags(self) -> dict[str, int]:
        from pyiceberg.table.refs import SnapshotRefType

        table = self._load_table()
        return {} if table is None else {
            name: ref_.snapshot_id for name, ref_ in table.metadata.refs.items()
            if ref_.snapshot_ref_type == SnapshotRefType.TAG
        }

    def resolve(self, ref: str) -> RunInfo:
        info = runlib.resolve_run(self, ref)
        assert info is not None  # required=True raises instead
        return info

    # -- reading -----------------------------------------------------------------------------

    def iter_run(
        self, info: RunInfo, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The run's rows as of its own snapshot (time travel), batch by batch."""
        from pyiceberg.expressions import And, EqualTo

        target = schema.table_arrow_schema(columns)
        table = self._load_table(required=True)
        scan = table.scan(
            # model_version is an identity partition: it prunes other versions' files.
            row_filter=And(EqualTo("model_version", info.model_version),
                           EqualTo("run_id", info.run_id)),
            snapshot_id=info.snapshot_id,
            selected_fields=tuple(target.names),
        )
        for batch in scan.to_arrow_batch_reader():
            if batch.num_rows:
                yield _conform(batch, target)

    def read_run(self, info: RunInfo, columns: list[str] | None = None) -> pa.Table:
        import pyarrow as pa

        target = schema.table_arrow_schema(columns)
        return pa.Table.from_batches(list(self.iter_run(info, columns)), schema=target)

    def aggregate(self, info: RunInfo, bins: int = 10) -> pa.Table:
        agg.check_bins(bins)
        return agg.aggregate_batches(self.iter_run(info, agg.INPUT_COLUMNS), bins)


def _name_the_file(exc: BaseException | None, locations: list[str]) -> None:
    """pyarrow's OS errors (a full disk, a read-only warehouse) carry no file name: give them the
    file being written when it happened, so the one error line can name it."""
    if isinstance(exc, OSError) and not exc.filename and exc.errno and locations:
        exc.filename = locations[-1].removeprefix("file://")


class _RecordingIO:
    """A FileIO that notes the location of every file opened for writing."""

    def __init__(self, io: Any, written: list[str]) -> None:
        self._io = io
        self._written = written

    def new_output(self, location: str) -> Any:
        self._written.append(location)
        return self._io.new_output(location)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


@contextmanager
def _recording_metadata_writes(catalog: Any, written: list[str]) -> Iterator[None]:
    """Note the metadata file a metastore catalog (SQL, Hive, Glue…) writes during one commit.

    pyiceberg's metastore catalogs write it through their ``_write_metadata`` hook; catalogs
    that write it server-side (REST) do not call it, and there is nothing of ours to remove.
    """
    original = getattr(catalog, "_write_metadata", None)
    if original is None:
        yield
        return

    def recording(metadata: Any, io: Any, metadata_path: str) -> None:
        written.append(metadata_path)
        original(metadata, io, metadata_path)

    catalog._write_metadata = recording
    try:
        yield
    finally:
        del catalog._write_metadata  # the class's own method again


def _conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    batch = batch.select(target.names)
    return batch if batch.schema.equals(target, check_metadata=True) else batch.cast(target)


def _partition_key(table: Table, values: dict[str, Any]):
    """The partition of a run's files (for Hive-style paths), or None if the spec is unknown."""
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, partition_record_value

    spec, table_schema_ = table.spec(), table.schema()
    field_values = []
    for field in spec.fields:
        name = table_schema_.find_column_name(field.source_id)
        if name not in values:
            return None
        # PartitionKey wants transformed values (a day ordinal, not a datetime).
        source_type = table_schema_.find_field(field.source_id).field_type
        internal = partition_record_value(field, values[name], table_schema_)
        field_values.append(PartitionFieldValue(field, field.transform.transform(source_type)(internal)))
    if not field_values:
        return None
    return PartitionKey(field_values=field_values, partition_spec=spec, schema=table_schema_)
