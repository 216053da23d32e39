"""Intervals and paired deltas at scale: wall time and peak memory against today's point metrics.

For each size (default 10k, 100k, 1M rows per run; lake-sized batches of 4,096 rows from
`mlobs.lake.synthetic`, the baseline run a copy with ~5 % of predictions changed) each
measurement runs in its own subprocess, so `ru_maxrss` (peak RSS) belongs to it alone:
- `generate`  (floor): produce both runs' batches and drop them;
- `point`     (baseline): today's path — each run's lake aggregate (`aggregate_batches`), its
  metrics (`from_aggregate`, scikit-learn) and the point deltas (`compare.headline_deltas`);
- `intervals`: the same aggregates, then `metric_intervals` for both runs (Wilson + 2,000
  bootstrap resamples of every headline and per-class metric) and `unpaired_deltas`;
- `paired`:    `joint_counts` over both runs' row streams (joined by sample id), then
  `paired_deltas` (McNemar + Newcombe, 2,000 paired resamples for F1 and ECE).
"stats" is the time of the statistics alone, after the counts exist. Ratios are against `point`
of the same size, measured in the same invocation. Usage: python bench/stats_intervals.py [rows ...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)


def _runs(rows: int):
    """(current, baseline) batch streams over the same sample ids."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic batches
    from synthetic import CLASSES, synthetic_batches

    def baseline():
        rng = np.random.default_rng(5)
        classes = pa.array(CLASSES)
        for b in synthetic_batches(rows, seed=1):
            flip = pa.array(rng.random(b.num_rows) < 0.05)
            other = classes.take(pa.array(rng.integers(0, len(CLASSES), b.num_rows)))
            keep = pc.is_valid(b.column("prediction"))
            pred = pc.if_else(pc.and_(flip, keep), other, b.column("prediction"))
            yield b.set_column(b.schema.get_field_index("prediction"), "prediction", pred)

    return synthetic_batches(rows, seed=1), baseline()


def worker(kind: str, rows: int) -> dict:
    import pyarrow as pa

    from mlobs.evaluate import compare
    from mlobs.evaluate.metrics import from_aggregate
    from mlobs.lake.aggregate import aggregate_batches
    from mlobs.stats.deltas import paired_deltas, unpaired_deltas
    from mlobs.stats.intervals import metric_intervals
    from mlobs.stats.joint import joint_counts

    # warm the lazy imports (scipy.stats, sklearn) outside the timed region
    from_aggregate([])
    metric_intervals([])
    current, baseline = _runs(rows)
    start = time.perf_counter()
    stats = 0.0
    if kind == "generate":
        for _ in current:
            pass
        for _ in baseline:
            pass
    elif kind in ("point", "intervals"):
        aggregates = [aggregate_batches(current), aggregate_batches(baseline)]
        t = time.perf_counter()
        metrics = [from_aggregate(a.to_pylist()) for a in aggregates]
        compare.headline_deltas(metrics[0].overall, metrics[1].overall)
        if kind == "intervals":
            t = time.perf_counter()
            for a in aggregates:
                metric_intervals(a)
            unpaired_deltas(*aggregates)
        stats = time.perf_counter() - t
    elif kind == "paired":
        joint = joint_counts(current, baseline)
        assert joint.pairable, joint.reason
        t = time.perf_counter()
        paired_deltas(joint)
        stats = time.perf_counter() - t
    wall = time.perf_counter() - start
    return {"kind": kind, "rows": rows, "wall": wall, "stats": stats,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "arrow_mb": pa.default_memory_pool().max_memory() / 2**20}


def measure(kind: str, rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(rows)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
        return
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    print("| rows per run | measurement | wall | of which stats | peak RSS | peak Arrow | × point time "
          "| × point RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for rows in sizes:
        results = {kind: measure(kind, rows) for kind in ("generate", "point", "intervals",
                                                          "paired")}
        base = results["point"]
        for kind, r in results.items():
            print(f"| {rows:,} | {kind} | {r['wall']:.2f} s | {r['stats']:.3f} s | "
                  f"{r['rss_mb']:.0f} MB | {r['arrow_mb']:.0f} MB | "
                  f"{r['wall'] / base['wall']:.2f}× | {r['rss_mb'] / base['rss_mb']:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
