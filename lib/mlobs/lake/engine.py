"""The engine interface both lake engines implement, and how to open one.

`pyiceberg` (default) runs in-process on pyarrow; `spark` runs the same operations through a
SparkSession on the same catalog and tables, for data that outgrows one machine. Engines are
imported lazily so that `mlobs --help` and the pyiceberg path never load pyspark.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mlobs.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.runs import Admission

ENGINES = ("pyiceberg", "spark")


@dataclass(frozen=True)
class RunInfo:
    """One evaluation run: the snapshot its single commit produced and the run's identity."""

    run_id: str
    snapshot_id: int
    model_version: str
    commit_sha: str
    dataset_hash: str
    committed_at: datetime  # UTC, from the snapshot's timestamp
    rows: int
    table: str
    errors: int | None = None  # rows whose prediction failed; None for runs that did not record it


@runtime_checkable
class Engine(Protocol):
    """Read and write runs of one predictions table. Use as a context manager or call close()."""

    kind: str
    table: str

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
        accept: Admission | None = None,
    ) -> tuple[RunInfo, bool]:
        """Append the run as one snapshot; (info, False) without writing if it already exists.

        Streams: one batch at a time is held. Before the commit the run must pass
        ``mlobs.lake.runs.admit`` (with `accept`); if it does not, nothing is committed, what was
        written is deleted and the error propagates. A run id already committed for another
        model version, dataset or commit raises ``RunIdConflict``.
        """
        ...

    def find_run(self, run_id: str) -> RunInfo | None: ...

    def latest_run(self, model_version: str) -> RunInfo | None: ...

    def resolve(self, ref: str) -> RunInfo:
        """``mlobs.lake.runs.resolve_run``: a model version (→ its latest run), run id, tag or
        snapshot id; else ConfigError."""
        ...

    def tags(self) -> dict[str, int]:
        """The table's tags: name → snapshot id."""
        ...

    def runs(self) -> list[RunInfo]:
        """Every run in the table, oldest first."""
        ...

    def read_run(self, info: RunInfo, columns: list[str] | None = None) -> pa.Table: ...

    def iter_run(
        self, info: RunInfo, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]: ...

    def aggregate(self, info: RunInfo, bins: int = 10) -> pa.Table:
        """The run's counts (see mlobs.lake.aggregate) — identical across engines."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


def open_engine(kind: str, catalog: CatalogConfig, spark_master: str = "local[*]", *,
                spark_jars: Path | None = None, spark_staging: Path | None = None) -> Engine:
    """The engine named by the `engine` input, on `catalog` (its table included); the spark engine
    also takes the `spark-jars` and `spark-staging` inputs."""
    kind = (kind or "pyiceberg").strip().lower()
    if kind == "pyiceberg":
        from mlobs.lake.pyiceberg_engine import PyIcebergEngine

        return PyIcebergEngine(catalog)
    if kind == "spark":
        from mlobs.lake.spark_engine import SparkEngine

        return SparkEngine(catalog, master=spark_master, jars_dir=spark_jars, staging_dir=spark_staging)
    raise ConfigError(f"unknown engine {kind!r}: expected one of {', '.join(ENGINES)}")
