"""Writer processes released at one moment onto one catalog, for the lake's concurrency tests.

Real processes, not threads: what races is separate SQLite connections and separate pyiceberg
catalogs, as in parallel CI jobs sharing a catalog.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime
    from pathlib import Path

    # Import everything the write needs before the start line, so the writers really collide.
    import pyiceberg.catalog.sql, pyiceberg.io.pyarrow, pyiceberg.partitioning  # noqa: F401
    import pyiceberg.table, pyiceberg.transforms, pyiceberg.table.update.snapshot  # noqa: F401
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.pyiceberg_engine import PyIcebergEngine
    sys.path.insert(0, sys.argv[5])  # tests/, for the synthetic batches
    from synthetic import synthetic_batches

    lake, table, run_id, rows = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    print("READY", flush=True)
    sys.stdin.readline()
    with PyIcebergEngine(CatalogConfig.parse("", table, lake)) as engine:
        info, written = engine.write_run(
            synthetic_batches(rows, batch_rows=64, prefix=run_id), run_id=run_id,
            model_version="v1", commit_sha="c", dataset_hash="d",
            evaluated_at=datetime(2026, 11, 24, tzinfo=UTC), action_version="0")
    print("WRITTEN" if written else "EXISTING", info.snapshot_id, flush=True)
""")


class Writers:
    """``with Writers(lake, jobs) as w: w.go(); outcomes = w.wait()`` — one process per job
    (run id, rows), each ready to write before `go` releases them all."""

    def __init__(self, lake: Path, jobs: list[tuple[str, int]], table: str = "mlobs.predictions"):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(lake), table, run_id, str(rows),
                              str(Path(__file__).resolve().parent)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for run_id, rows in jobs
        ]

    def __enter__(self) -> Writers:
        for proc in self.procs:
            line = proc.stdout.readline().strip()
            assert line == "READY", proc.stderr.read()
        return self

    def go(self) -> None:
        for proc in self.procs:  # as close together as a parent can make it
            proc.stdin.write("\n")
            proc.stdin.flush()

    def wait(self, timeout: float = 300) -> list[tuple[int, str, str]]:
        """(exit code, stdout, last stderr line) per job, in job order."""
        outcomes = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=timeout)
            outcomes.append((proc.returncode, out.strip(), " ".join(err.strip().splitlines()[-1:])))
        return outcomes

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def run_writers_at_once(lake: Path, jobs: list[tuple[str, int]],
                        table: str = "mlobs.predictions") -> list[tuple[int, str, str]]:
    with Writers(lake, jobs, table) as writers:
        writers.go()
        return writers.wait()
