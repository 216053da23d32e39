"""Writing one evaluation run to Iceberg: wall time, commit time and peak memory, per engine.

For each size (default 10k, 100k, 1M rows, client batches of 1,000 rows) every measurement runs
in its own subprocess, so `ru_maxrss` (peak RSS) belongs to that write alone:
- `generate`  (baseline floor): produce the batches and drop them — imports + data generation;
- `parquet`   (baseline): the same batches streamed into one plain Parquet file with pyarrow;
- `pyiceberg`: PyIcebergEngine.write_run into a fresh SQLite catalog — data files + ONE commit;
  "commit" is the catalog transaction alone (add_files + tag + catalog update);
- `gated`: the same write as evaluate makes it, through its TrustGate (error kinds counted as the
  batches stream past, the run admitted before the commit; ~1 % error rows);
- `spark`: SparkEngine.write_run (local[*]); one process for all sizes, session start reported
  apart; its peak RSS is the Python driver's only (the JVM is a child process).
Ratios are against the `parquet` baseline of the same size, measured in the same invocation.
Usage: python bench/lake_commit.py [rows ...] [--no-spark]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)
BATCH_ROWS = 1_000
WHEN = datetime(2026, 11, 24, tzinfo=UTC)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_kwargs(run_id: str) -> dict:
    return dict(run_id=run_id, model_version="bench", commit_sha="0" * 40,
                dataset_hash="sha256:bench", evaluated_at=WHEN, action_version="bench")


def worker(kind: str, rows: int, directory: Path) -> dict:
    """One measurement in this (fresh) process; returns the figures as a dict."""
    import pyarrow.parquet as pq

    from mlobs.lake import schema
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic batches
    from synthetic import synthetic_batches

    batches = synthetic_batches(rows, batch_rows=BATCH_ROWS)
    start = time.perf_counter()
    commit = None
    if kind == "generate":
        for _ in batches:
            pass
    elif kind == "parquet":
        with pq.ParquetWriter(directory / "plain.parquet", schema.sample_arrow_schema(),
                              compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
    elif kind in ("pyiceberg", "gated"):
        from mlobs.evaluate.trust import TrustGate
        from mlobs.lake.catalog import CatalogConfig
        from mlobs.lake.pyiceberg_engine import PyIcebergEngine

        engine = PyIcebergEngine(CatalogConfig.parse("", "bench.predictions", directory))
        engine._ensure_table()  # table creation is a one-off, not part of a run's cost
        start = time.perf_counter()
        original, timed = engine._commit, {}

        def timed_commit(*args):  # the bench peeks inside to time the catalog commit alone
            began = time.perf_counter()
            try:
                return original(*args)
            finally:
                timed["commit"] = time.perf_counter() - began

        engine._commit = timed_commit
        gate = TrustGate() if kind == "gated" else None
        info, written = engine.write_run(gate.watch(batches) if gate else batches,
                                         accept=gate.accept if gate else None, **run_kwargs("r1"))
        assert written and info.rows == rows
        commit = timed["commit"]
        engine.close()
    else:
        raise SystemExit(f"unknown worker {kind}")
    return {"seconds": time.perf_counter() - start, "commit": commit, "rss_mb": peak_rss_mb()}


def spark_worker(sizes: list[int], directory: Path) -> dict:
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.spark_engine import SparkEngine
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic batches
    from synthetic import synthetic_batches

    start = time.perf_counter()
    engine = SparkEngine(CatalogConfig.parse("", "bench.predictions", directory))
    engine._ensure_table()
    figures: dict = {"session": time.perf_counter() - start}
    # A small warm-up run: the first Spark job pays for JIT and class loading.
    engine.write_run(synthetic_batches(1000, batch_rows=BATCH_ROWS), **run_kwargs("warm-up"))
    for rows in sizes:
        began = time.perf_counter()
        info, written = engine.write_run(synthetic_batches(rows, batch_rows=BATCH_ROWS),
                                         **run_kwargs(f"r{rows}"))
        assert written and info.rows == rows
        figures[str(rows)] = time.perf_counter() - began
    engine.close()
    figures["rss_mb"] = peak_rss_mb()
    return figures


def measure(argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="mlobs-bench-") as tmp:
        out = subprocess.run([sys.executable, __file__, "--worker", *argv, tmp],
                             check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        kind, *rest = sys.argv[2:]
        directory = Path(rest[-1])
        if kind == "spark":
            print(json.dumps(spark_worker([int(r) for r in rest[:-1]], directory)))
        else:
            print(json.dumps(worker(kind, int(rest[0]), directory)))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sizes = [int(a) for a in args] or list(SIZES)
    with_spark = "--no-spark" not in sys.argv

    print("| rows | writer | wall time | commit | peak RSS | × parquet time | × parquet RSS |")
    print("|---|---|---|---|---|---|---|")
    results: dict[int, dict[str, dict]] = {}
    for rows in sizes:
        results[rows] = {kind: measure([kind, str(rows)])
                         for kind in ("generate", "parquet", "pyiceberg", "gated")}
        base = results[rows]["parquet"]
        for kind, fig in results[rows].items():
            commit = f"{fig['commit'] * 1000:.0f} ms" if fig["commit"] is not None else "–"
            print(f"| {rows:,} | {kind} | {fig['seconds']:.2f} s | {commit} | "
                  f"{fig['rss_mb']:.0f} MB | {fig['seconds'] / base['seconds']:.2f}× | "
                  f"{fig['rss_mb'] / base['rss_mb']:.2f}× |")
    if with_spark:
        spark = measure(["spark", *map(str, sizes)])
        print(f"\nSpark (local[*]): session start {spark['session']:.1f} s, "
              f"driver peak RSS {spark['rss_mb']:.0f} MB")
        print("\n| rows | spark write_run | × parquet time | × pyiceberg time |")
        print("|---|---|---|---|")
        for rows in sizes:
            seconds = spark[str(rows)]
            print(f"| {rows:,} | {seconds:.2f} s | "
                  f"{seconds / results[rows]['parquet']['seconds']:.1f}× | "
                  f"{seconds / results[rows]['pyiceberg']['seconds']:.1f}× |")


if __name__ == "__main__":
    main()
