"""Parallel first runs on one fresh SQLite catalog: do they all land, and what does sharing cost?

For N writers (default 1, 4, 8, 16), N processes each import everything, wait, and are released
at once onto a fresh catalog; each writes one run of `rows` rows (pyiceberg engine). Measured:
wall time from the release until the last run landed, the commit conflicts they retried, and
whether all N runs are in the table. Baseline, same invocation: the same N runs written one after
another by one process (no sharing, no conflicts).
Usage: python bench/lake_parallel.py [N ...] [--rows R]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WRITERS = (1, 4, 8, 16)
ROWS = 20_000

WRITER = textwrap.dedent("""
    import logging, sys
    from datetime import UTC, datetime
    from pathlib import Path
    import pyiceberg.catalog.sql, pyiceberg.io.pyarrow, pyiceberg.table  # noqa: F401
    import pyiceberg.partitioning, pyiceberg.transforms, pyiceberg.table.update.snapshot  # noqa
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.pyiceberg_engine import PyIcebergEngine
    sys.path.insert(0, sys.argv[4])  # tests/, for the synthetic batches
    from synthetic import synthetic_batches

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lake, run_ids, rows = Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
    print("READY", flush=True)
    sys.stdin.readline()
    with PyIcebergEngine(CatalogConfig.parse("", "bench.predictions", lake)) as engine:
        for run_id in run_ids:
            engine.write_run(synthetic_batches(rows, batch_rows=1000, prefix=run_id),
                             run_id=run_id, model_version="bench", commit_sha="0",
                             dataset_hash="d", evaluated_at=datetime(2026, 11, 24, tzinfo=UTC),
                             action_version="bench")
    print("DONE", flush=True)
""")


def release(lake: Path, groups: list[list[str]], rows: int) -> tuple[float, int, list[int]]:
    """One process per group of run ids; all released at once. (wall, conflicts, exit codes)"""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(lake), ",".join(g), str(rows), tests],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for g in groups]
    for proc in procs:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
    start = time.perf_counter()
    for proc in procs:
        proc.stdin.write("\n")
        proc.stdin.flush()
    conflicts, codes = 0, []
    for proc in procs:
        _, err = proc.communicate()
        conflicts += err.count("commit conflict")
        codes.append(proc.returncode)
    return time.perf_counter() - start, conflicts, codes


def landed(lake: Path) -> int:
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.pyiceberg_engine import PyIcebergEngine

    with PyIcebergEngine(CatalogConfig.parse("", "bench.predictions", lake)) as engine:
        return len(engine.runs())


def main() -> None:
    args = sys.argv[1:]
    rows = ROWS
    if "--rows" in args:
        at = args.index("--rows")
        rows = int(args[at + 1])
        del args[at:at + 2]
    sizes = [int(a) for a in args] or list(WRITERS)
    print(f"{rows:,} rows per run\n")
    print("| writers | landed | parallel wall | sequential wall (baseline) | × baseline | "
          "conflicts retried |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        ids = [f"r{i}" for i in range(n)]
        with tempfile.TemporaryDirectory(prefix="mlobs-par-") as a, \
                tempfile.TemporaryDirectory(prefix="mlobs-seq-") as b:
            par, conflicts, codes = release(Path(a), [[i] for i in ids], rows)
            ok = landed(Path(a)) if all(c == 0 for c in codes) else sum(c == 0 for c in codes)
            seq, _, _ = release(Path(b), [ids], rows)
        print(f"| {n} | {ok}/{n} | {par:.2f} s | {seq:.2f} s | {par / seq:.2f}× | {conflicts} |")


if __name__ == "__main__":
    main()
