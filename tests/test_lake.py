"""The lake layer with the pyiceberg engine: a real SQLite catalog and file warehouse in tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from mlobs.errors import ConfigError
from mlobs.lake import schema
from mlobs.lake.catalog import CatalogConfig, validate_table_identifier
from mlobs.lake.engine import RunInfo, open_engine
from mlobs.lake.pyiceberg_engine import PyIcebergEngine
from mlobs.lake.runs import tag_for_version
from synthetic import synthetic_batches

WHEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def config(tmp_path: Path, table: str = "mlobs.predictions") -> CatalogConfig:
    return CatalogConfig.parse("", table, tmp_path / "lake")


@pytest.fixture
def engine(tmp_path):
    with PyIcebergEngine(config(tmp_path)) as eng:
        yield eng


def write(eng, batches, run_id="run-1", version="v1", when=WHEN, **extra):
    kwargs = dict(run_id=run_id, model_version=version, commit_sha="c" * 40,
                  dataset_hash="sha256:abc", evaluated_at=when, action_version="0.1.0")
    kwargs.update(extra)
    return eng.write_run(batches, **kwargs)


def iceberg_table(eng: PyIcebergEngine):
    return eng.catalog.load_table(("mlobs", "predictions"))


def rows_by_id(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: row["sample_id"])


# -- catalog configuration ------------------------------------------------------------------


def test_default_catalog_is_sqlite_under_the_directory(tmp_path):
    cfg = CatalogConfig.parse(None, "mlobs.predictions", tmp_path / ".mlobs")
    assert cfg.name == "mlobs"
    assert cfg.properties["uri"] == f"sqlite:///{tmp_path / '.mlobs' / 'catalog.db'}"
    assert cfg.properties["warehouse"] == (tmp_path / ".mlobs" / "warehouse").as_uri()
    assert not (tmp_path / ".mlobs").exists()  # created on demand, not by parsing
    cfg.load()
    assert (tmp_path / ".mlobs" / "catalog.db").is_file()
    assert (tmp_path / ".mlobs" / "warehouse").is_dir()


def test_catalog_properties_are_parsed_and_secrets_never_shown(tmp_path):
    cfg = CatalogConfig.parse(
        f"uri=sqlite:///{tmp_path}/c.db, warehouse=file://{tmp_path}/w,token=s3cr3t,"
        "s3.secret-access-key=hunter2,name=lab",
        "ns.t", tmp_path,
    )
    assert cfg.name == "lab"
    assert cfg.properties == {"uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"file://{tmp_path}/w",
                              "token": "s3cr3t", "s3.secret-access-key": "hunter2"}
    shown = repr(cfg) + str(cfg)
    assert "s3cr3t" not in shown and "hunter2" not in shown
    pg = CatalogConfig.parse("uri=postgresql+psycopg2://u:pw123@db/x", "ns.t", tmp_path)
    assert "pw123" not in repr(pg)


@pytest.mark.parametrize("text", ["uri=a,b", "uri=a,=b", "warehouse=file:///w", "uri=a,uri=b"])
def test_bad_catalog_settings_are_config_errors(tmp_path, text):
    with pytest.raises(ConfigError):
        CatalogConfig.parse(text, "ns.t", tmp_path)


def test_bad_secret_setting_is_reported_masked(tmp_path):
    with pytest.raises(ConfigError) as err:
        CatalogConfig.parse("uri=x,token", "ns.t", tmp_path)
    assert "token" not in err.value.one_line() or "***" in err.value.one_line()


def test_named_catalog_from_pyiceberg_yaml(tmp_path, monkeypatch):
    (tmp_path / ".pyiceberg.yaml").write_text(textwrap.dedent(f"""
        catalog:
          lab:
            uri: sqlite:///{tmp_path}/named/catalog.db
            warehouse: file://{tmp_path}/named/warehouse
    """))
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    cfg = CatalogConfig.parse("lab", "ns.t", tmp_path / "unused")
    assert cfg.name == "lab" and cfg.properties == {}
    with open_engine("pyiceberg", cfg) as eng:
        info, written = write(eng, synthetic_batches(10))
    assert written and info.table == "ns.t"
    assert (tmp_path / "named" / "catalog.db").is_file()


def test_unknown_named_catalog_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="nope"):
        CatalogConfig.parse("nope", "ns.t", tmp_path).load()


@pytest.mark.parametrize("bad", ["predictions", "a.b.c", "ns.ta-ble", "ns.t;drop", "", "ns.",
                                 ".t", "1ns.t", "ns.t ble", "ns.`t`"])
def test_table_identifier_validation_names_the_bad_value(tmp_path, bad):
    with pytest.raises(ConfigError) as err:
        CatalogConfig.parse("", bad, tmp_path)
    assert repr(bad) in err.value.one_line()


def test_valid_table_identifiers():
    assert validate_table_identifier("mlobs.predictions") == ("mlobs", "predictions")
    assert validate_table_identifier("_ns.T_2") == ("_ns", "T_2")


def test_unknown_engine_kind(tmp_path):
    with pytest.raises(ConfigError, match="unknown engine"):
        open_engine("duckdb", config(tmp_path))


def test_missing_spark_jars_say_to_run_the_setup_script(tmp_path):
    from mlobs.lake.spark_engine import spark_jars

    with pytest.raises(ConfigError) as err:
        spark_jars(tmp_path)
    assert "bash scripts/setup-spark" in err.value.one_line()


# -- writing and reading ----------------------------------------------------------------------


def test_run_written_and_read_back_equal(engine):
    batches = list(synthetic_batches(2500, batch_rows=300))
    info, written = write(engine, batches)
    assert written
    assert info == engine.find_run("run-1")
    assert info.rows == 2500 and info.model_version == "v1" and info.commit_sha == "c" * 40
    assert info.dataset_hash == "sha256:abc" and info.table == "mlobs.predictions"
    assert info.committed_at.tzinfo is not None

    back = engine.read_run(info)
    expected = pa.Table.from_batches(batches)
    got = back.select(list(schema.SAMPLE_COLUMNS))
    assert rows_by_id(got) == rows_by_id(expected)
    for name, value in [("run_id", "run-1"), ("model_version", "v1"), ("commit_sha", "c" * 40),
                        ("evaluated_at", WHEN)]:
        assert set(back.column(name).to_pylist()) == {value}
    assert back.schema.names == list(schema.RUN_COLUMNS + schema.SAMPLE_COLUMNS)

    streamed = list(engine.iter_run(info, columns=["sample_id", "confidence"]))
    assert sum(b.num_rows for b in streamed) == 2500
    assert all(b.schema.names == ["sample_id", "confidence"] for b in streamed)


def test_one_snapshot_per_run_with_the_properties(engine):
    first, _ = write(engine, synthetic_batches(1000, batch_rows=64), run_id="run-1")
    second, _ = write(engine, synthetic_batches(700, batch_rows=64), run_id="run-2", version="v2")
    snapshots = iceberg_table(engine).snapshots()
    assert [s.snapshot_id for s in snapshots] == [first.snapshot_id, second.snapshot_id]
    summary = snapshots[1].summary
    assert summary.operation.value == "append"
    assert {key: summary[key] for key in (
        schema.PROP_RUN_ID, schema.PROP_MODEL_VERSION, schema.PROP_COMMIT_SHA,
        schema.PROP_DATASET_HASH, schema.PROP_ACTION_VERSION, schema.PROP_ROWS)} == {
        schema.PROP_RUN_ID: "run-2", schema.PROP_MODEL_VERSION: "v2",
        schema.PROP_COMMIT_SHA: "c" * 40, schema.PROP_DATASET_HASH: "sha256:abc",
        schema.PROP_ACTION_VERSION: "0.1.0", schema.PROP_ROWS: "700"}
    assert summary["added-records"] == "700"
    assert engine.runs() == [first, second]


def test_table_is_partitioned_by_version_and_day(engine):
    write(engine, synthetic_batches(10))
    table = iceberg_table(engine)
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == [
        ("model_version", "identity"), ("evaluated_at_day", "day")]
    files = [task.file.file_path for task in table.scan().plan_files()]
    assert files and all("model_version=v1/evaluated_at_day=2026-11-24/" in f for f in files)


def test_same_run_id_twice_writes_once(engine):
    info, written = write(engine, synthetic_batches(500))
    consumed = []

    def never_read():
        consumed.append(True)
        yield from synthetic_batches(500)

    again, written_again = write(engine, never_read())
    assert (written, written_again) == (True, False)
    assert again == info
    assert consumed == []  # the retry did not even pull the batches
    assert len(iceberg_table(engine).snapshots()) == 1
    assert engine.read_run(info).num_rows == 500


def test_commit_conflict_is_retried(tmp_path, engine):
    rival = PyIcebergEngine(config(tmp_path))
    write(engine, synthetic_batches(10), run_id="run-0")  # the table exists for both
    attempts = []
    original = engine._commit

    def commit_after_a_rival(table, locations, properties, tag):
        if not attempts:  # `table` is now stale: the real commit below must conflict
            write(rival, synthetic_batches(20, prefix="r"), run_id="rival", version="v1")
        attempts.append(table.metadata.current_snapshot_id)
        return original(table, locations, properties, tag)

    engine._commit = commit_after_a_rival
    info, written = write(engine, synthetic_batches(30), run_id="run-1")
    assert written and len(attempts) == 2 and attempts[0] != attempts[1]
    assert [r.run_id for r in engine.runs()] == ["run-0", "rival", "run-1"]
    assert engine.read_run(info).num_rows == 30
    assert engine.resolve(tag_for_version("v1")) == info  # the tag followed the retry
    rival.close()


def test_rival_committing_the_same_run_wins_cleanly(tmp_path, engine):
    rival = PyIcebergEngine(config(tmp_path))
    write(engine, synthetic_batches(10), run_id="run-0")
    original = engine._commit
    staged: list[str] = []

    def rival_first(table, locations, properties, tag):
        staged.extend(locations)
        write(rival, synthetic_batches(30), run_id="run-1")
        return original(table, locations, properties, tag)

    engine._commit = rival_first
    info, written = write(engine, synthetic_batches(30), run_id="run-1")
    assert not written and info == rival.find_run("run-1")
    assert [r.run_id for r in engine.runs()] == ["run-0", "run-1"]
    assert staged and not any(Path(p.removeprefix("file://")).exists() for p in staged)
    rival.close()


def test_bad_batches_fail_without_a_snapshot_or_files(tmp_path, engine):
    write(engine, synthetic_batches(10), run_id="run-0")

    def broken():
        yield from synthetic_batches(100, batch_rows=50)
        yield pa.record_batch({"sample_id": ["x"]})

    with pytest.raises(ConfigError, match="missing"):
        write(engine, broken(), run_id="run-1")
    assert [r.run_id for r in engine.runs()] == ["run-0"]
    data = tmp_path / "lake" / "warehouse" / "mlobs" / "predictions" / "data"
    assert len(list(data.rglob("*.parquet"))) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"run_id": ""}, "run id"),
    ({"version": " "}, "model version"),
    ({"when": datetime(2026, 1, 1)}, "timezone"),
])
def test_run_arguments_are_validated(engine, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write(engine, synthetic_batches(5), **kwargs)


def test_empty_run_is_refused(engine):
    with pytest.raises(ConfigError, match="no rows"):
        write(engine, iter([]))
    assert engine.runs() == []


WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.pyiceberg_engine import PyIcebergEngine
    sys.path.insert(0, sys.argv[2])  # tests/
    from synthetic import synthetic_batches

    def batches():
        for index, batch in enumerate(synthetic_batches(8 * 500, batch_rows=500)):
            yield batch
            # Reached only once the engine has written the previous batch and asks for more.
            print(f"BATCH {index}", flush=True)
            sys.stdin.readline()

    cfg = CatalogConfig.parse("", "mlobs.predictions", Path(sys.argv[1]))
    engine = PyIcebergEngine(cfg, row_group_bytes=1, file_bytes=1)  # a file per batch
    engine.write_run(batches(), run_id="killed", model_version="v1", commit_sha="c",
                     dataset_hash="d", evaluated_at=datetime.now(UTC), action_version="0")
    print("COMMITTED", flush=True)
""")


def test_writer_killed_mid_run_leaves_the_table_as_it_was(tmp_path, engine):
    before, _ = write(engine, synthetic_batches(100), run_id="run-0")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "lake"), str(Path(__file__).resolve().parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        for expected in range(4):  # half of the 8 batches
            assert proc.stdout.readline().strip() == f"BATCH {expected}"
            if expected < 3:
                proc.stdin.write("\n")
                proc.stdin.flush()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    data = tmp_path / "lake" / "warehouse" / "mlobs" / "predictions" / "data"
    assert len(list(data.rglob("*.parquet"))) >= 1 + 3  # it streamed files before dying
    assert engine.runs() == [before]
    assert engine.find_run("killed") is None
    table = iceberg_table(engine)
    assert [s.snapshot_id for s in table.snapshots()] == [before.snapshot_id]
    assert table.scan().to_arrow().column("run_id").unique().to_pylist() == ["run-0"]
    assert table.scan().to_arrow().num_rows == 100


# -- versions, tags and time travel -----------------------------------------------------------


def test_versions_tags_and_time_travel(engine):
    r1, _ = write(engine, synthetic_batches(100, prefix="a"), run_id="r1", version="v1")
    r2, _ = write(engine, synthetic_batches(200, prefix="b"), run_id="r2", version="v2",
                  when=WHEN + timedelta(days=1))
    r3, _ = write(engine, synthetic_batches(300, prefix="c"), run_id="r3", version="v1",
                  when=WHEN + timedelta(days=2))

    assert engine.runs() == [r1, r2, r3]
    assert engine.latest_run("v1") == r3
    assert engine.latest_run("v2") == r2
    assert engine.latest_run("v9") is None
    assert engine.resolve("v1") == r3
    assert engine.resolve("model-v1") == r3  # the tag moved to the newer run
    assert engine.resolve("model-v2") == r2
    assert engine.resolve(str(r1.snapshot_id)) == r1
    assert engine.resolve("r2") == r2

    # Time travel: r1's rows as of r1's snapshot, untouched by later runs.
    old = engine.read_run(r1)
    assert old.num_rows == 100 and set(old.column("run_id").to_pylist()) == {"r1"}
    assert engine.read_run(r3).column("sample_id").to_pylist()[0].startswith("c")
    refs = iceberg_table(engine).metadata.refs
    assert refs["model-v1"].snapshot_id == r3.snapshot_id

    with pytest.raises(ConfigError) as err:
        engine.resolve("v7")
    message = err.value.one_line()
    assert "'v7'" in message and "v1, v2" in message and "model-v1" in message


def test_resolve_on_an_empty_table(engine):
    assert engine.runs() == [] and engine.find_run("x") is None and engine.latest_run("v") is None
    with pytest.raises(ConfigError, match="no runs"):
        engine.resolve("v1")


def test_tag_names_are_safe_and_distinct():
    assert tag_for_version("v1.2.0") == "model-v1.2.0"
    odd = tag_for_version("feat/x y")
    assert odd.startswith("model-feat_x_y-") and odd != tag_for_version("feat_x y")


def test_version_with_odd_characters_round_trips(engine):
    info, _ = write(engine, synthetic_batches(50), version="team/model v2:rc1")
    assert engine.resolve("team/model v2:rc1") == info
    assert engine.resolve(tag_for_version("team/model v2:rc1")) == info
    assert engine.read_run(info).num_rows == 50


# -- aggregate --------------------------------------------------------------------------------


def hand_made_run() -> pa.RecordBatch:
    rows = [
        # label, prediction, confidence, slices, error
        ("a", "a", 0.95, {"region": "eu", "device": "ios"}, None),
        ("a", "a", 0.91, {"region": "eu", "device": "ios"}, None),
        ("a", "b", 0.40, {"region": "eu"}, None),
        ("b", "b", 0.85, {"region": "us", "device": "ios"}, None),
        ("b", "x", None, {"region": "us"}, "timeout"),  # error row: prediction must become null
        ("c", "a", 1.0, {"region": "us"}, None),  # class c never occurs in region=eu
        ("a", "a", 0.0, None, None),
    ]
    return pa.RecordBatch.from_pylist(
        [{"sample_id": f"s{i}", "label": label, "prediction": pred, "confidence": conf,
          "scores": None, "slices": list(slices.items()) if slices else None, "error": error}
         for i, (label, pred, conf, slices, error) in enumerate(rows)],
        schema=schema.sample_arrow_schema(),
    )


def test_aggregate_counts_by_hand(engine):
    info, _ = write(engine, [hand_made_run()])
    table = engine.aggregate(info, bins=10)
    assert table.schema.names == ["slice_name", "slice_value", "label", "prediction", "conf_bin",
                                  "is_error", "n", "conf_sum"]
    assert table.schema.field("conf_bin").type == pa.int32()
    got = {tuple(row[k] for k in ("slice_name", "slice_value", "label", "prediction", "conf_bin",
                                  "is_error")): (row["n"], row["conf_sum"])
           for row in table.to_pylist()}
    expected = {
        ("", "", "a", "a", 9, False): (2, 1.86),
        ("", "", "a", "b", 4, False): (1, 0.40),
        ("", "", "b", "b", 8, False): (1, 0.85),
        ("", "", "b", None, -1, True): (1, 0.0),
        ("", "", "c", "a", 9, False): (1, 1.0),
        ("", "", "a", "a", 0, False): (1, 0.0),
        ("region", "eu", "a", "a", 9, False): (2, 1.86),
        ("region", "eu", "a", "b", 4, False): (1, 0.40),
        ("region", "us", "b", "b", 8, False): (1, 0.85),
        ("region", "us", "b", None, -1, True): (1, 0.0),
        ("region", "us", "c", "a", 9, False): (1, 1.0),
        ("device", "ios", "a", "a", 9, False): (2, 1.86),
        ("device", "ios", "b", "b", 8, False): (1, 0.85),
    }
    assert set(got) == set(expected)
    for key, (n, conf_sum) in expected.items():
        assert got[key][0] == n, key
        assert got[key][1] == pytest.approx(conf_sum, abs=1e-9), key
    assert not any(k[:3] == ("region", "eu", "c") for k in got)
    whole_run = sum(n for (name, *_), (n, _) in got.items() if name == "")
    assert whole_run == info.rows == 7


def test_aggregate_bins_and_order(engine):
    info, _ = write(engine, [hand_made_run()])
    coarse = engine.aggregate(info, bins=2).to_pylist()
    assert {row["conf_bin"] for row in coarse} == {-1, 0, 1}
    keys = [(r["slice_name"], r["slice_value"], r["label"] or "", r["prediction"] or "",
             r["conf_bin"], r["is_error"]) for r in coarse]
    assert keys == sorted(keys)  # deterministic order (nulls first), equal across engines
    with pytest.raises(ConfigError):
        engine.aggregate(info, bins=0)


def test_aggregate_streams_many_batches(engine):
    info, _ = write(engine, synthetic_batches(20_000, batch_rows=1000))
    table = engine.aggregate(info)
    whole = table.filter(pa.compute.equal(table.column("slice_name"), ""))
    assert sum(whole.column("n").to_pylist()) == 20_000
    errors = whole.filter(whole.column("is_error"))
    assert sum(errors.column("n").to_pylist()) == 20_000 // 97
    regions = table.filter(pa.compute.equal(table.column("slice_name"), "region"))
    assert sum(regions.column("n").to_pylist()) == 20_000


def test_run_info_is_frozen():
    info = RunInfo("r", 1, "v", "c", "d", WHEN, 1, "ns.t")
    with pytest.raises(AttributeError):
        info.rows = 2  # type: ignore[misc]


def test_engines_satisfy_the_protocol(tmp_path):
    from mlobs.lake.engine import Engine

    with open_engine("pyiceberg", config(tmp_path)) as eng:
        assert isinstance(eng, Engine) and eng.kind == "pyiceberg"


# -- what becomes history -------------------------------------------------------------------------


def data_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "lake" / "warehouse").rglob("*.parquet"))


def error_rows(rows: int, error_every: int) -> int:
    """How many synthetic rows are errors, counted the slow way (synthetic_batches' rule)."""
    return sum(1 for i in range(rows) if i % error_every == error_every - 1)


def test_a_run_in_which_every_sample_failed_is_never_committed(tmp_path, engine):
    from mlobs.lake.runs import RunRefused

    with pytest.raises(RunRefused, match="every one of its 600 samples failed"):
        write(engine, synthetic_batches(600, batch_rows=100, error_every=1), run_id="broken")
    assert engine.runs() == [] and engine.find_run("broken") is None
    assert data_files(tmp_path) == []  # its data files were deleted, not left as orphans
    # The Bento is fixed: the retry under the same run id is a fresh run, not "already committed".
    info, written = write(engine, synthetic_batches(600, batch_rows=100), run_id="broken")
    assert written and engine.runs() == [info] and info.errors == error_rows(600, 97)


def test_the_admission_check_sees_the_counts_before_the_commit(tmp_path, engine):
    from mlobs.lake.runs import RunCounts

    first, _ = write(engine, synthetic_batches(100), run_id="run-0")
    files_before = data_files(tmp_path)
    seen: list[RunCounts] = []

    class Refused(Exception):
        pass

    def refuse(counts):
        seen.append(counts)
        raise Refused

    with pytest.raises(Refused):
        write(engine, synthetic_batches(2000, batch_rows=128, error_every=7), run_id="run-1",
              accept=refuse)
    assert seen == [RunCounts(rows=2000, errors=error_rows(2000, 7))]
    assert engine.runs() == [first] and data_files(tmp_path) == files_before

    info, written = write(engine, synthetic_batches(2000, batch_rows=128, error_every=7),
                          run_id="run-1", accept=seen.append)
    assert written and seen[-1] == RunCounts(rows=2000, errors=error_rows(2000, 7))
    assert info.errors == error_rows(2000, 7) and info.rows == 2000
    summary = iceberg_table(engine).snapshots()[-1].summary
    assert summary[schema.PROP_ERRORS] == str(error_rows(2000, 7))
    back = engine.read_run(info, columns=["error"])
    assert back.num_rows - back.column("error").null_count == info.errors


@pytest.mark.parametrize("change, shown", [
    ({"version": "v2"}, ["'v1'", "'v2'"]),
    ({"dataset_hash": "sha256:" + "e" * 64}, ["'sha256:abc'", "'sha256:eeee"]),
    ({"commit_sha": "d" * 40}, ["'cccccccccccc", "'dddddddddddd"]),
])
def test_a_reused_run_id_for_another_evaluation_is_refused(engine, change, shown):
    from mlobs.lake.runs import RunIdConflict

    info, _ = write(engine, synthetic_batches(50), run_id="nightly")
    pulled = []

    def batches():
        pulled.append(True)
        yield from synthetic_batches(50)

    with pytest.raises(RunIdConflict) as err:
        write(engine, batches(), run_id="nightly", **change)
    message = err.value.one_line()
    assert "'nightly'" in message and str(info.snapshot_id) in message
    assert all(text in message for text in shown), message
    assert pulled == [] and engine.runs() == [info]
    # The same evaluation again is a retry, answered by the committed run.
    assert write(engine, batches(), run_id="nightly") == (info, False)


def test_a_rival_committing_the_same_run_id_for_another_version_is_refused(tmp_path, engine):
    from mlobs.lake.runs import RunIdConflict

    rival = PyIcebergEngine(config(tmp_path))
    write(engine, synthetic_batches(10), run_id="run-0")
    original = engine._commit
    staged: list[str] = []

    def rival_first(table, locations, properties, tag):
        staged.extend(locations)
        write(rival, synthetic_batches(30), run_id="run-1", version="v9")
        return original(table, locations, properties, tag)

    engine._commit = rival_first
    with pytest.raises(RunIdConflict, match="'v9'"):
        write(engine, synthetic_batches(30), run_id="run-1", version="v1")
    assert [(r.run_id, r.model_version) for r in engine.runs()] == [("run-0", "v1"), ("run-1", "v9")]
    assert staged and not any(Path(p.removeprefix("file://")).exists() for p in staged)
    rival.close()


# -- which run a reference means ------------------------------------------------------------------


def test_one_resolver_for_baselines_and_reports(engine):
    from mlobs.lake.runs import resolve_run

    r1, _ = write(engine, synthetic_batches(100, prefix="a"), run_id="r1", version="v1")
    r2, _ = write(engine, synthetic_batches(100, prefix="b"), run_id="v1", version="v2")
    r3, _ = write(engine, synthetic_batches(100, prefix="c"), run_id="r3", version="v1",
                  when=WHEN + timedelta(days=1))
    # A version names its latest run, ahead of a run that happens to be *called* like it.
    assert resolve_run(engine, "v1") == r3 == engine.resolve("v1")
    # The run being judged is never its own baseline: the version's previous run is.
    assert resolve_run(engine, "v1", exclude_run_id="r3") == r1
    assert resolve_run(engine, "v2") == r2
    assert resolve_run(engine, "r1") == r1 and resolve_run(engine, "model-v2") == r2
    assert resolve_run(engine, str(r1.snapshot_id)) == r1
    assert resolve_run(engine, "r3", exclude_run_id="r3", required=False) is None
    assert resolve_run(engine, "v9", required=False) is None
    with pytest.raises(ConfigError, match="'v9'"):
        resolve_run(engine, "v9")


def test_a_failed_run_committed_by_an_older_action_is_never_a_baseline(engine, monkeypatch):
    from mlobs.lake import runs as runlib

    good, _ = write(engine, synthetic_batches(100), run_id="good", version="v1")
    # What the previous action did: commit a run in which every sample failed.
    monkeypatch.setattr(runlib, "admit", lambda run_id, counts, accept=None: None)
    failed, _ = write(engine, synthetic_batches(100, error_every=1), run_id="failed", version="v1",
                      when=WHEN + timedelta(days=1))
    monkeypatch.undo()
    assert failed.errors == failed.rows == 100 and not runlib.trusted(failed)
    assert engine.runs() == [good, failed]
    assert runlib.resolve_run(engine, "v1") == good
    assert runlib.resolve_run(engine, "failed", required=False) is None
    # A run recorded without an error count (older still) is taken as it is.
    legacy = RunInfo("old", 1, "v1", "", "", WHEN, 10, "mlobs.predictions", errors=None)
    assert runlib.trusted(legacy)
    assert runlib.pick_run("v1", [good, legacy], {}) == legacy


# -- parallel runs, real processes ----------------------------------------------------------------


@pytest.mark.slow  # 12 Python processes
def test_parallel_first_runs_on_a_fresh_catalog_all_land_then_parallel_commits(tmp_path):
    from lakeprocs import run_writers_at_once

    lake = tmp_path / "lake"
    # Today's parallel jobs on a fresh catalog race to create the catalog's tables, the namespace
    # and the table, then to commit; before the fix, about one writer in six died of it.
    first = [(f"first-{i}", 100 + i) for i in range(8)]
    outcomes = run_writers_at_once(lake, first)
    assert [code for code, *_ in outcomes] == [0] * 8, outcomes
    assert all(out.startswith("WRITTEN") for _, out, _ in outcomes), outcomes

    # Then parallel commits to the existing table, two of them retries of one run id.
    second = [("next-0", 50), ("next-1", 51), ("twice", 70), ("twice", 70)]
    outcomes = run_writers_at_once(lake, second)
    assert [code for code, *_ in outcomes] == [0] * 4, outcomes
    twice = sorted(out.split()[0] for _, out, _ in outcomes[-2:])
    assert twice == ["EXISTING", "WRITTEN"]  # one commit; the other answered by it
    assert len({out.split()[1] for _, out, _ in outcomes[-2:]}) == 1

    with PyIcebergEngine(CatalogConfig.parse("", "mlobs.predictions", lake)) as engine:
        runs = engine.runs()
        expected = dict(first + second)
        assert sorted(r.run_id for r in runs) == sorted(expected)
        for run in runs:
            assert run.rows == expected[run.run_id]
            back = engine.read_run(run, columns=["sample_id"]).column("sample_id").to_pylist()
            assert len(back) == expected[run.run_id] and all(s.startswith(run.run_id) for s in back)
        files = iceberg_table(engine).scan().plan_files()
        assert sorted(Path(t.file.file_path.removeprefix("file://")) for t in files) == data_files(tmp_path)
