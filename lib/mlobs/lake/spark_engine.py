"""The Spark engine: the same tables and catalog as the pyiceberg engine, through Spark SQL.

The SparkSession loads the Iceberg Spark runtime, a relocated Jackson (the runtime jar lacks its
shaded Jackson classes) and Debian's SQLite JDBC driver — all prepared by
``bash scripts/setup-spark`` in the ``spark-jars`` folder (default ``<repo>/.tools/spark-jars``).
The pyiceberg SQLite catalog ``sqlite:///<dir>/catalog.db`` becomes Iceberg's JDBC catalog
``jdbc:sqlite:<dir>/catalog.db`` under the SAME catalog name (the name is part of every catalog
row), so both engines see the same tables; REST and Hive catalogs map one to one.

Writes: batches are staged as local Parquet files (streamed, bounded memory), read back by Spark
and appended with DataFrameWriterV2 in ONE commit carrying the run's snapshot properties. A
process killed before that commit leaves the table unchanged (staged files are in a temporary
directory; any data files Spark had written are unreferenced). With a cluster master, set
``spark-staging`` to a directory every executor sees at the same path. The version tag is
moved in a second, separate commit (Spark SQL has no way to do both at once); it is repaired on
the next write of that version.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlobs.errors import ConfigError, MlobsError, first_line
from mlobs.lake import aggregate as agg
from mlobs.lake import runs as runlib
from mlobs.lake import schema
from mlobs.lake.catalog import CatalogConfig, sqlite_path
from mlobs.lake.engine import RunInfo
from mlobs.lake.parquet_stream import RollingParquetWriter, conform_sample_batch
from mlobs.retry import Backoff

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SETUP_HINT = "run `bash scripts/setup-spark`"
REQUIRED_JARS = {
    "Iceberg Spark runtime": "iceberg-spark-runtime-3.5_2.12-*.jar",
    "relocated Jackson": "iceberg-shaded-jackson.jar",
    "SQLite JDBC driver": "sqlite-jdbc.jar",
}
COMMIT_RETRY = Backoff(base=0.2, cap=2.0, deadline=120.0)  # why: see pyiceberg_engine.COMMIT_RETRY
_ROWS_PER_BATCH = 8192


def default_jars_dir() -> Path:
    """``.tools/spark-jars`` in the checkout this package runs from (scripts/setup-spark's)."""
    return Path(__file__).resolve().parents[3] / ".tools" / "spark-jars"


def spark_jars(jars_dir: Path | None = None) -> list[str]:
    """The jars a local SparkSession needs; ConfigError naming what is missing otherwise."""
    directory = jars_dir or default_jars_dir()
    jars: list[str] = []
    missing: list[str] = []
    for label, pattern in REQUIRED_JARS.items():
        found = sorted(p for p in glob.glob(str(directory / pattern)) if os.path.exists(p))
        if found:
            jars.append(found[-1])
        else:
            missing.append(label)
    if missing:
        raise ConfigError(f"Spark jars missing in {directory}: {', '.join(missing)}", hint=SETUP_HINT)
    return jars


def check_java(env: Mapping[str, str] | None = None) -> str:
    """The java Spark will start: ``$JAVA_HOME/bin/java`` (``env``: the environment the CLI read,
    which pyspark's launcher inherits), else the one on PATH."""
    java_home = (env or {}).get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    found = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not found:
        raise ConfigError("Java not found (the Spark engine needs Java 17)", hint=SETUP_HINT)
    return found


def build_session(master: str = "local[*]", jars_dir: Path | None = None,
                  env: Mapping[str, str] | None = None) -> SparkSession:
    """A SparkSession with Iceberg (local or cluster master), or a Spark Connect client (sc://)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(
            "pyspark is not installed: install the `spark` extra", hint=SETUP_HINT
        ) from exc
    if master.startswith("sc://"):
        # The server must have the Iceberg runtime and extensions; only catalog settings are ours.
        try:
            return SparkSession.builder.remote(master).getOrCreate()
        except ImportError as exc:
            raise ConfigError(f"Spark Connect needs pyspark[connect]: {exc}") from exc
    check_java(env)
    jars = spark_jars(jars_dir)
    builder = SparkSession.builder.master(master)
    if master.startswith("local"):
        # Spark binds to the machine's hostname address otherwise, which containers often lack.
        builder = (builder.config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1"))
        # 200 shuffle partitions (the default) is cluster-sized; one machine wants a few per core.
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    session = (
        builder.appName("mlobs")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions",
                "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_catalog_conf(config: CatalogConfig) -> dict[str, str]:
    """Spark's settings for the pyiceberg catalog `config` (same name, same tables)."""
    props = config.resolved_properties()
    prefix = f"spark.sql.catalog.{config.name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        # Another engine commits to the same tables: never serve stale cached metadata.
        f"{prefix}.cache-enabled": "false",
    }
    uri = props.get("uri", "")
    kind = props.get("type", "").lower()
    db = sqlite_path(uri)
    if db is not None:
        conf[f"{prefix}.type"] = "jdbc"
        conf[f"{prefix}.uri"] = f"jdbc:sqlite:{db.resolve()}"
        # Iceberg's JdbcCatalog, when it finds the catalog tables already there, leaves the
        # metadata ResultSet of that check open: on SQLite the connection then keeps a read
        # transaction forever — stale reads in WAL mode, "database is locked" for pyiceberg's
        # commits otherwise. So pyiceberg creates the tables (SparkEngine._configure_catalog)
        # and Spark is told not to look.
        conf[f"{prefix}.jdbc.init-catalog-tables"] = "false"
    elif kind == "rest" or (not kind and uri.startswith(("http://", "https://"))):
        conf[f"{prefix}.type"] = "rest"
        conf[f"{prefix}.uri"] = uri
    elif kind == "hive" or (not kind and uri.startswith("thrift://")):
        conf[f"{prefix}.type"] = "hive"
        conf[f"{prefix}.uri"] = uri
    else:
        raise ConfigError(
            f"the spark engine supports SQLite (sqlite:///…), REST and Hive catalogs, not "
            f"{kind or uri.split(':', 1)[0] or 'this catalog'}"
        )
    for key, value in props.items():
        if key not in {"type", "uri"} and not key.startswith("py-"):
            conf[f"{prefix}.{key}"] = value  # warehouse, credentials, s3.* share names with Java
    return conf


def spark_type(field_type: Any) -> str:
    """Spark SQL type of a pyiceberg type used in the predictions schema."""
    from pyiceberg.types import DoubleType, MapType, StringType, TimestamptzType

    if isinstance(field_type, StringType):
        return "STRING"
    if isinstance(field_type, DoubleType):
        return "DOUBLE"
    if isinstance(field_type, TimestamptzType):
        return "TIMESTAMP"
    if isinstance(field_type, MapType):
        return f"MAP<{spark_type(field_type.key_type)}, {spark_type(field_type.value_type)}>"
    raise MlobsError(f"no Spark type for {field_type} (extend spark_type with the schema)")


class SparkEngine:
    kind = "spark"

    def __init__(
        self,
        catalog: CatalogConfig,
        *,
        master: str = "local[*]",
        session: SparkSession | None = None,
        jars_dir: Path | None = None,
        staging_dir: Path | None = None,
    ) -> None:
        self.config = catalog
        self.table = catalog.table
        self._staging_dir = staging_dir
        if session is None:
            from pyspark.sql import SparkSession

            # Stop only a session this engine started, never one the caller already had.
            self._owns_session = SparkSession.getActiveSession() is None
            session = build_session(master, jars_dir, catalog.env)
        else:
            self._owns_session = False
        self.spark = session
        self._configure_catalog()
        ns, name = catalog.namespace, catalog.table_name
        self._ident = f"`{catalog.name}`.`{ns}`.`{name}`"

    # -- lifecycle ---------------------------------------------------------------------------

    def _configure_catalog(self) -> None:
        conf = spark_catalog_conf(self.config)
        if conf.get(f"spark.sql.catalog.{self.config.name}.type") == "jdbc":
            # Creates the SQLite catalog's tables (and directories, WAL mode) the pyiceberg way;
            # see spark_catalog_conf for why Spark must not.
            catalog = self.config.load()
            engine = getattr(catalog, "engine", None)
            if engine is not None:
                engine.dispose()
        prefix = f"spark.sql.catalog.{self.config.name}"
        for key in (f"{prefix}.uri", f"{prefix}.warehouse"):
            current = self.spark.conf.get(key, None)
            # Spark caches catalog plugins by name: a second location under one name is ignored.
            if current is not None and key in conf and current != conf[key]:
                raise ConfigError(
                    f"this Spark session already has catalog {self.config.name!r} at another "
                    "location; use another catalog name or a new session"
                )
        for key, value in conf.items():
            self.spark.conf.set(key, value)

    def close(self) -> None:
        if self._owns_session:
            self.spark.stop()
            self._owns_session = False

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tables and runs ---------------------------------------------------------------------

    def _sql(self, query: str, **args: Any) -> DataFrame:
        return self.spark.sql(query, args=args or None)

    def _ensure_table(self) -> None:
        fresh = schema.table_schema()
        columns = ", ".join(
            f"`{f.name}` {spark_type(f.field_type)}{' NOT NULL' if f.required else ''}"
            for f in fresh.fields
        )
        mapping = fresh.name_mapping.model_dump_json().replace("'", "\\'")
        key, value = schema.NO_LIBRARY_RETRIES  # why: see there
        self._sql(f"CREATE NAMESPACE IF NOT EXISTS `{self.config.name}`.`{self.config.namespace}`")
        # Same schema (ids assigned breadth-first, as pyiceberg does) and partitioning as
        # PyIcebergEngine._ensure_table: days() is named evaluated_at_day on both sides.
        self._sql(
            f"CREATE TABLE IF NOT EXISTS {self._ident} ({columns}) USING iceberg "
            "PARTITIONED BY (model_version, days(evaluated_at)) "
            f"TBLPROPERTIES ('format-version'='2', 'schema.name-mapping.default'='{mapping}', "
            f"'{key}'='{value}')"
        )
        shown = self._sql(f"SHOW TBLPROPERTIES {self._ident}").collect()
        current = {row["key"]: row["value"] for row in shown}
        if current.get(key) != value:  # a table created elsewhere
            self._sql(f"ALTER TABLE {self._ident} SET TBLPROPERTIES ('{key}'='{value}')")

    def _metadata_rows(self, suffix: str, columns: str) -> list[Any]:
        from pyspark.errors import AnalysisException

        try:
            return self._sql(f"SELECT {columns} FROM {self._ident}.`{suffix}`").collect()
        except AnalysisException as exc:
            if "TABLE_OR_VIEW_NOT_FOUND" in str(exc) or "NoSuchTable" in str(exc):
                return []
            raise

    def runs(self) -> list[RunInfo]:
        found = []
        # The snapshots metadata table lists snapshots in metadata (= commit) order.
        for row in self._metadata_rows(
            "snapshots", "snapshot_id, unix_millis(committed_at) AS committed_ms, summary"
        ):
            info = runlib.run_from_summary(
                row["summary"] or {}, snapshot_id=row["snapshot_id"],
                timestamp_ms=row["committed_ms"], table=self.table,
            )
            if info is not None:
                found.append(info)
        return found

    def tags(self) -> dict[str, int]:
        return {
            row["name"]: row["snapshot_id"]
            for row in self._metadata_rows("refs", "name, type, snapshot_id")
            if row["type"] == "TAG"
        }

    def find_run(self, run_id: str) -> RunInfo | None:
        return runlib.find_run(self.runs(), run_id)

    def latest_run(self, model_version: str) -> RunInfo | None:
        return runlib.latest_run(self.runs(), model_version)

    def resolve(self, ref: str) -> RunInfo:
        info = runlib.resolve_run(self, ref)
        assert info is not None  # required=True raises instead
        return info

    def _sync_tag(self, model_version: str) -> None:
        """Point the version's tag at its latest run (idempotent; repairs a missed move)."""
        latest = self.latest_run(model_version)
        tag = runlib.tag_for_version(model_version)
        if latest is None or self.tags().get(tag) == latest.snapshot_id:
            return
        try:
            self._sql(
                f"ALTER TABLE {self._ident} CREATE OR REPLACE TAG `{tag}` "
                f"AS OF VERSION {int(latest.snapshot_id)}"
            )
        except Exception as exc:  # the run is committed; a stale tag is repaired next write
            log.warning("could not move tag %s: %s", tag, first_line(exc))

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

        The run must pass ``runs.admit`` (with `accept`) once staged; a refused run never reaches
        the table, and its staged files are deleted.
        """
        from pyspark.sql import functions as F

        runlib.validate_run_args(run_id, model_version, evaluated_at)
        identity = {"model_version": model_version, "dataset_hash": dataset_hash,
                    "commit_sha": commit_sha}
        self._ensure_table()
        existing = self.find_run(run_id)
        if existing is not None:
            runlib.check_identity(existing, **identity)
            self._sync_tag(existing.model_version)
            return existing, False

        if self._staging_dir is not None:
            self._staging_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="mlobs-spark-", dir=self._staging_dir))
        try:
            counts = self._stage(batches, staging)
            runlib.admit(run_id, counts, accept)
            micros = _epoch_micros(evaluated_at)
            sample = self.spark.read.schema(_sample_ddl()).parquet(staging.as_uri())
            frame = sample.select(
                F.lit(run_id).alias("run_id"),
                F.lit(model_version).alias("model_version"),
                F.lit(commit_sha).alias("commit_sha"),
                F.expr(f"timestamp_micros({micros})").alias("evaluated_at"),
                *[F.col(f"`{name}`") for name in schema.SAMPLE_COLUMNS],
            )
            properties = runlib.snapshot_properties(
                run_id=run_id, model_version=model_version, commit_sha=commit_sha,
                dataset_hash=dataset_hash, action_version=action_version, rows=counts.rows,
                errors=counts.errors,
            )
            info, written = self._append_with_retry(frame, properties, identity)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._sync_tag(model_version)
        return info, written

    def _stage(self, batches: Iterable[pa.RecordBatch], staging: Path) -> runlib.RunCounts:
        import pyarrow as pa

        def open_file(index: int) -> tuple[str, Any]:
            path = staging / f"part-{index:05d}.parquet"
            return str(path), pa.OSFile(str(path), "wb")

        writer = RollingParquetWriter(schema.sample_arrow_schema(), open_file)
        errors = 0
        try:
            for batch in batches:
                sample = conform_sample_batch(batch)
                errors += sample.num_rows - sample.column("error").null_count
                writer.write(sample)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return runlib.RunCounts(writer.rows, errors)

    def _append_with_retry(
        self, frame: DataFrame, properties: dict[str, str], identity: dict[str, str]
    ) -> tuple[RunInfo, bool]:
        run_id = properties[schema.PROP_RUN_ID]
        options = {f"snapshot-property.{key}": value for key, value in properties.items()}

        def attempt() -> RunInfo | None:
            existing = self.find_run(run_id)
            if existing is not None:  # another writer committed this run meanwhile
                runlib.check_identity(existing, **identity)
                return existing
            frame.writeTo(self._ident).options(**options).append()
            return None

        def on_retry(error: BaseException, retry: int, wait: float) -> None:
            log.info("run %s: commit conflict (attempt %d), retrying", run_id, retry)

        # Iceberg's own retries are off (schema.NO_LIBRARY_RETRIES): a conflict lands here.
        existing = COMMIT_RETRY.retrying(_commit_conflict, on_retry=on_retry)(attempt)
        if existing is not None:
            return existing, False
        info = self.find_run(run_id)
        if info is None:
            raise MlobsError(f"Spark appended run {run_id} but its snapshot is not in {self.table}")
        return info, True

    # -- reading -----------------------------------------------------------------------------

    def _run_frame(self, info: RunInfo, select: str) -> DataFrame:
        return self._sql(
            f"SELECT {select} FROM {self._ident} VERSION AS OF {int(info.snapshot_id)} "
            "WHERE model_version = :model_version AND run_id = :run_id",
            model_version=info.model_version, run_id=info.run_id,
        )

    def iter_run(
        self, info: RunInfo, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The run's rows as of its snapshot, streamed from Spark in batches of 8192 rows."""
        import pyarrow as pa

        target = schema.table_arrow_schema(columns)
        maps = [f.name for f in target if pa.types.is_map(f.type)]
        select = ", ".join(_row_expression(name, name in maps) for name in target.names)
        chunk: list[dict[str, Any]] = []
        for row in self._run_frame(info, select).toLocalIterator():
            values = row.asDict(recursive=False)
            for name in maps:
                if values[name] is not None:
                    values[name] = [tuple(entry) for entry in values[name]]
            chunk.append(values)
            if len(chunk) >= _ROWS_PER_BATCH:
                yield pa.RecordBatch.from_pylist(chunk, schema=target)
                chunk = []
        if chunk:
            yield pa.RecordBatch.from_pylist(chunk, schema=target)

    def read_run(self, info: RunInfo, columns: list[str] | None = None) -> pa.Table:
        import pyarrow as pa

        target = schema.table_arrow_schema(columns)
        return pa.Table.from_batches(list(self.iter_run(info, columns)), schema=target)

    def aggregate(self, info: RunInfo, bins: int = 10) -> pa.Table:
        """The aggregate table (definition in mlobs.lake.aggregate) as one Spark SQL GROUP BY."""
        import pyarrow as pa

        agg.check_bins(bins)
        keys = "label, prediction, conf_bin, is_error"
        query = f"""
        WITH base AS (
          SELECT label, slices,
                 error IS NOT NULL AS is_error,
                 CASE WHEN error IS NOT NULL THEN NULL ELSE prediction END AS prediction,
                 confidence IS NULL OR isnan(confidence) AS missing,
                 LEAST(GREATEST(CASE WHEN confidence IS NULL OR isnan(confidence) THEN 0D
                                     ELSE confidence END, 0D), 1D) AS conf
          FROM {self._ident} VERSION AS OF {int(info.snapshot_id)}
          WHERE model_version = :model_version AND run_id = :run_id
        ), binned AS (
          SELECT label, prediction, is_error, slices,
                 CASE WHEN missing THEN -1
                      ELSE CAST(LEAST(FLOOR(conf * {float(bins)}D), {bins - 1}) AS INT) END AS conf_bin,
                 CAST(FLOOR(conf * {agg.CONF_SCALE}D + 0.5D) AS BIGINT) AS units
          FROM base
        )
        SELECT '' AS slice_name, '' AS slice_value, {keys},
               COUNT(*) AS n, SUM(units) AS {agg.UNITS}
        FROM binned GROUP BY {keys}
        UNION ALL
        SELECT s.slice_name, s.slice_value, {keys}, COUNT(*) AS n, SUM(units) AS {agg.UNITS}
        FROM binned LATERAL VIEW explode(slices) s AS slice_name, slice_value
        GROUP BY s.slice_name, s.slice_value, {keys}
        """
        rows = self._sql(query, model_version=info.model_version, run_id=info.run_id).collect()
        target = pa.schema([*[agg.aggregate_schema().field(k) for k in (*agg.KEYS, "n")],
                            pa.field(agg.UNITS, pa.int64())])
        return agg.finish(pa.Table.from_pylist([row.asDict() for row in rows], schema=target))


def _commit_conflict(error: BaseException) -> bool:
    """Whether Spark's append lost to another writer's commit (retried on the new table state)."""
    return "CommitFailedException" in str(error)


def _row_expression(name: str, is_map: bool) -> str:
    """How a column crosses from Spark rows to Arrow without losing anything."""
    if name == "evaluated_at":  # epoch micros: Python datetimes from Spark are naive local time
        return "unix_micros(evaluated_at) AS evaluated_at"
    if is_map:  # entries keep the map's order; Python dicts from Spark come in hash order
        return f"map_entries(`{name}`) AS `{name}`"
    return f"`{name}`"


def _sample_ddl() -> str:
    """Spark DDL of the staged sample files, from the table schema (the one source of truth)."""
    fresh = schema.table_schema()
    return ", ".join(
        f"`{name}` {spark_type(fresh.find_field(name).field_type)}" for name in schema.SAMPLE_COLUMNS
    )


def _epoch_micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
