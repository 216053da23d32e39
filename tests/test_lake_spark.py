"""Spark and pyiceberg on the same SQLite catalog: each reads, aggregates and resolves the other's
runs identically. Slow (one local SparkSession for the module) but always run: a machine without
Java or the jars fails here with the command that fixes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mlobs.errors import ConfigError
from mlobs.lake import schema
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.pyiceberg_engine import PyIcebergEngine
from mlobs.lake.runs import tag_for_version
from synthetic import synthetic_batches

pytestmark = pytest.mark.slow

WHEN = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    # One catalog for the module: Spark caches a catalog per name for the session's lifetime.
    return tmp_path_factory.mktemp("spark-lake")


@pytest.fixture(scope="module")
def spark():
    from mlobs.lake.spark_engine import build_session

    try:
        session = build_session("local[2]")
    except ConfigError as exc:
        pytest.fail(f"Spark engine unavailable: {exc.one_line()}", pytrace=False)
    yield session
    session.stop()


def engines(lake, spark, table: str, staging: Path | None = None):
    from mlobs.lake.spark_engine import SparkEngine

    config = CatalogConfig.parse("", table, lake)
    return PyIcebergEngine(config), SparkEngine(config, session=spark, staging_dir=staging)


def write(engine, batches, run_id, version="v1"):
    return engine.write_run(batches, run_id=run_id, model_version=version, commit_sha="f" * 40,
                            dataset_hash="sha256:d", evaluated_at=WHEN, action_version="0.1.0")


def by_id(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: row["sample_id"])


def test_pyiceberg_writes_spark_reads_and_aggregates_identically(lake, spark):
    py, sp = engines(lake, spark, "mlobs.from_pyiceberg")
    first, _ = write(py, synthetic_batches(3000, batch_rows=250), "run-a", "v1")
    second, _ = write(py, synthetic_batches(1000, prefix="b"), "run-b", "v2")

    assert sp.runs() == py.runs() == [first, second]
    assert sp.resolve("model-v1") == first and sp.resolve("v2") == second
    assert sp.resolve(str(first.snapshot_id)) == first

    spark_rows = sp.read_run(first)
    assert spark_rows.schema == py.read_run(first).schema
    assert by_id(spark_rows) == by_id(py.read_run(first))
    assert set(spark_rows.column("evaluated_at").to_pylist()) == {WHEN}

    spark_agg = sp.aggregate(first, bins=10)
    assert spark_agg.equals(py.aggregate(first, bins=10))  # bit-identical, same order
    assert sum(spark_agg.filter(pa.compute.equal(spark_agg["slice_name"], ""))["n"].to_pylist()) == 3000
    assert sp.aggregate(second, bins=4).equals(py.aggregate(second, bins=4))
    py.close()

    _, missing = engines(lake, spark, "mlobs.not_there")
    assert missing.runs() == [] and missing.find_run("run-a") is None
    with pytest.raises(ConfigError, match="no runs"):
        missing.resolve("v1")


def test_spark_writes_pyiceberg_reads_with_the_run_properties(lake, spark):
    py, sp = engines(lake, spark, "mlobs.from_spark")
    batches = list(synthetic_batches(2000, batch_rows=300))
    info, written = write(sp, batches, "run-s", "v3")
    assert written and info.rows == 2000 and info.model_version == "v3"

    again, written_again = write(sp, synthetic_batches(2000), "run-s", "v3")
    assert not written_again and again == info

    assert py.runs() == [info]
    table = py.catalog.load_table(("mlobs", "from_spark"))
    assert len(table.snapshots()) == 1
    summary = table.snapshots()[0].summary
    assert {key: summary[key] for key in (
        schema.PROP_RUN_ID, schema.PROP_MODEL_VERSION, schema.PROP_COMMIT_SHA,
        schema.PROP_DATASET_HASH, schema.PROP_ACTION_VERSION, schema.PROP_ROWS)} == {
        schema.PROP_RUN_ID: "run-s", schema.PROP_MODEL_VERSION: "v3",
        schema.PROP_COMMIT_SHA: "f" * 40, schema.PROP_DATASET_HASH: "sha256:d",
        schema.PROP_ACTION_VERSION: "0.1.0", schema.PROP_ROWS: "2000"}
    assert py.resolve(tag_for_version("v3")) == info

    back = py.read_run(info)
    assert by_id(back.select(list(schema.SAMPLE_COLUMNS))) == by_id(pa.Table.from_batches(batches))
    assert set(back.column("evaluated_at").to_pylist()) == {WHEN}
    assert set(back.column("run_id").to_pylist()) == {"run-s"}
    assert py.aggregate(info).equals(sp.aggregate(info))

    # And pyiceberg appends to the Spark-created table: same schema, ids and partitioning.
    later, _ = write(py, synthetic_batches(500, prefix="p"), "run-p", "v3")
    assert sp.latest_run("v3") == later and sp.resolve("model-v3") == later
    assert sp.read_run(later).num_rows == 500
    assert [f.name for f in table.spec().fields] == ["model_version", "evaluated_at_day"]
    py.close()


def test_spark_admits_runs_checks_run_ids_and_resolves_like_pyiceberg(lake, spark, tmp_path):
    from mlobs.lake import runs as runlib

    staging = tmp_path / "staging"  # the spark-staging input (created on first use)
    py, sp = engines(lake, spark, "mlobs.history", staging)

    # Every sample failed: refused before the commit, staged files gone, nothing in the table.
    with pytest.raises(runlib.RunRefused, match="every one of its 300 samples failed"):
        write(sp, synthetic_batches(300, batch_rows=64, error_every=1), "broken", "v1")
    assert sp.runs() == [] == py.runs() and list(staging.iterdir()) == []

    # The caller's check sees the counts; refusing keeps the table as it was.
    seen = []

    def refuse(counts):
        seen.append(counts)
        raise runlib.RunRefused("too many errors")

    with pytest.raises(runlib.RunRefused, match="too many errors"):
        write_checked(sp, synthetic_batches(700, batch_rows=100, error_every=5), "broken", refuse)
    errors = sum(1 for i in range(700) if i % 5 == 4)
    assert seen == [runlib.RunCounts(700, errors)] and sp.runs() == []

    # The fixed retry under the same run id lands, with its error count, readable by both.
    fixed, written = write_checked(sp, synthetic_batches(700, batch_rows=100), "broken", seen.append)
    assert written and fixed.errors == sum(1 for i in range(700) if i % 97 == 96)
    assert py.runs() == [fixed] and py.find_run("broken").errors == fixed.errors

    # A reused run id for another model version is refused by Spark as by pyiceberg.
    for engine in (sp, py):
        with pytest.raises(runlib.RunIdConflict, match="'v1'.*'v2'"):
            write(engine, synthetic_batches(10), "broken", "v2")

    later, _ = write(py, synthetic_batches(200, prefix="l"), "later", "v1")
    other, _ = write(sp, synthetic_batches(200, prefix="o"), "other", "v2")
    assert sp.tags() == py.tags()
    for ref, exclude in [("v1", None), ("v1", "later"), ("v2", None), ("broken", None),
                         ("model-v1", None), (str(fixed.snapshot_id), None), ("v9", None)]:
        assert runlib.resolve_run(sp, ref, exclude_run_id=exclude, required=False) == \
            runlib.resolve_run(py, ref, exclude_run_id=exclude, required=False), ref
    assert runlib.resolve_run(sp, "v1") == later
    assert runlib.resolve_run(sp, "v1", exclude_run_id="later") == fixed
    py.close()


def write_checked(engine, batches, run_id, accept, version="v1"):
    return engine.write_run(batches, run_id=run_id, model_version=version, commit_sha="f" * 40,
                            dataset_hash="sha256:d", evaluated_at=WHEN, action_version="0.1.0",
                            accept=accept)


def test_spark_and_pyiceberg_processes_write_a_fresh_table_at_once(lake, spark):
    from lakeprocs import Writers

    table = "mlobs.parallel"
    jobs = [(f"py-{i}", 80 + i) for i in range(4)]
    with Writers(lake, jobs, table=table) as writers:
        writers.go()
        _, sp = engines(lake, spark, table)
        spark_run, written = write(sp, synthetic_batches(90, prefix="spark"), "spark-0", "v1")
        outcomes = writers.wait()
    assert written and [code for code, *_ in outcomes] == [0] * 4, outcomes
    expected = {**dict(jobs), "spark-0": 90}
    runs = sp.runs()
    assert sorted(r.run_id for r in runs) == sorted(expected)
    assert all(r.rows == expected[r.run_id] for r in runs)
    assert sp.read_run(spark_run, columns=["sample_id"]).num_rows == 90
