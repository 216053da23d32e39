"""A full disk or a read-only folder is the environment, not a bug (issue 10, item 6).

Real file systems do the failing: a tmpfs of a few kilobytes filled to the brim (ENOSPC), and a
tmpfs mounted read-only (EROFS — unlike chmod, it stops root too). Mounting needs root with
CAP_SYS_ADMIN (CI's container has it); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

import lakegen
import loggen
from mlobs.errors import environment_error
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine
from synthetic import synthetic_batches

BIN = Path(sys.executable).parent
END = str(loggen.END)
ONE_LINE = "mlobs: error: cannot write "


@contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): "
                    "needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write until the file system says ENOSPC."""
    with open(path / "filler", "wb", buffering=0) as fh:  # unbuffered: nothing left to flush
        chunk = b"\0" * 4096
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc


def mlobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    return subprocess.run([str(BIN / "mlobs"), *args, "--github-token="], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=180)


def assert_one_line(proc, path: Path, reason: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ONE_LINE + str(path)), lines[0]
    assert reason in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def logs(tmp_path) -> Path:
    path = tmp_path / "logs.jsonl"
    loggen.write(path, loggen.requests(300))
    return path


def test_unwritable_output_dir_under_dry_run_is_one_line(tmp_path, logs):
    out = tmp_path / "outputs.txt"
    out.touch()
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        proc = mlobs("slo-validate", f"--working-directory={tmp_path}", f"--logs-file={logs}",
                     f"--window-end={END}", f"--output-dir={ro / '.mlobs'}", "--dry-run",
                     env={"GITHUB_OUTPUT": str(out)})
        assert_one_line(proc, ro / ".mlobs", "Read-only file system (EROFS)")
    assert out.read_text() == "result=error\n"


def test_a_full_disk_under_the_results_is_one_line_and_leaves_no_partial_file(tmp_path, logs):
    with tmpfs(tmp_path / "small", size="64k") as small:
        (small / ".mlobs").mkdir()
        fill(small)
        proc = mlobs("slo-validate", f"--working-directory={tmp_path}", f"--logs-file={logs}",
                     f"--window-end={END}", f"--output-dir={small / '.mlobs'}")
        assert_one_line(proc, small / ".mlobs" / "slo-results.json", "No space left on device (ENOSPC)")
        assert sorted(p.name for p in (small / ".mlobs").iterdir()) == []  # nothing half-written


def test_a_read_only_warehouse_is_one_line(tmp_path):
    dataset = tmp_path / "golden.csv"
    dataset.write_text("id,text,label\n1,good,positive\n")
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        catalog = f"uri=sqlite:///{tmp_path / 'catalog.db'},warehouse=file://{ro / 'warehouse'}"
        proc = mlobs("evaluate", f"--working-directory={tmp_path}", f"--dataset={dataset}",
                     "--input-columns=text", "--model-version=v1", f"--catalog={catalog}",
                     "--bento-url=http://127.0.0.1:9")
        assert_one_line(proc, ro / "warehouse", "Read-only file system (EROFS)")


def test_a_read_only_report_dir_is_one_line(tmp_path):
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                          tmp_path / ".mlobs" / "lake"))
    try:
        lakegen.write(engine, "v1", accuracy=0.8)
    finally:
        engine.close()
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        proc = mlobs("publish-report", f"--working-directory={tmp_path}", "--model-version=v1",
                     f"--report-dir={ro / 'site'}")
        assert_one_line(proc, ro / "site", "Read-only file system (EROFS)")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_during_the_commit_leaves_no_orphan_files(tmp_path):
    """ENOSPC while the commit writes its manifests: the table is as it was, and neither the run's
    data files nor any manifest, manifest list or metadata file of the attempt stays behind."""
    with tmpfs(tmp_path / "wh", size="4m") as warehouse:
        config = CatalogConfig(name="mlobs", table="mlobs.predictions",
                               properties={"type": "sql", "uri": f"sqlite:///{tmp_path / 'c.db'}",
                                           "warehouse": warehouse.as_uri()})
        engine = open_engine("pyiceberg", config)
        try:
            lakegen.write(engine, "v0", n=50, accuracy=0.9, run_id="before")
            before = _files(warehouse)
            original = engine._commit
            reached = []

            def commit_on_a_full_disk(table, locations, properties, tag):
                # the run's data files are complete; the disk fills up before the commit writes
                reached.append([loc.removeprefix(warehouse.as_uri() + "/") for loc in locations])
                assert set(reached[0]) <= _files(warehouse)
                fill(warehouse)
                return original(table, locations, properties, tag)

            engine._commit = commit_on_a_full_disk
            with pytest.raises(OSError) as caught:
                engine.write_run(synthetic_batches(400), run_id="full", model_version="v1",
                                 commit_sha="0" * 40, dataset_hash="d" * 64,
                                 evaluated_at=datetime(2026, 11, 24, tzinfo=UTC),
                                 action_version="test")
            line = environment_error(caught.value).one_line()  # the CLI's one line
            assert line.startswith(f"cannot write {warehouse}/mlobs/predictions/metadata/"), line
            assert "No space left on device (ENOSPC)" in line
            assert reached and reached[0]  # the failure came from the commit, not the data files
            (warehouse / "filler").unlink()
            assert _files(warehouse) == before  # not one file of the failed run left
            assert [r.run_id for r in engine.runs()] == ["before"]

            engine._commit = original  # with room again, the same run commits normally
            info, written = engine.write_run(synthetic_batches(400), run_id="full", model_version="v1",
                                             commit_sha="0" * 40, dataset_hash="d" * 64,
                                             evaluated_at=datetime(2026, 11, 24, tzinfo=UTC),
                                             action_version="test")
            assert written and engine.read_run(info).num_rows == 400
        finally:
            engine.close()


def test_os_errors_name_the_path_and_the_reason():
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = OSError(28, "No space left on device", "/w/metadata/snap-1.avro")
    assert environment_error(wrapped).one_line().startswith(
        "cannot write /w/metadata/snap-1.avro: No space left on device (ENOSPC)")
    arrow = OSError("Failed to open local file '/w/data/x.parquet'. Detail: [errno 30] Read-only file system")
    assert environment_error(arrow).one_line().startswith(
        "cannot write /w/data/x.parquet: Read-only file system")
    assert environment_error(ValueError("nope")) is None
    assert environment_error(OSError(2, "No such file or directory", "/x")) is None
