"""End-to-end evaluation throughput with default settings versus a minimal client of the same Bento.

The Bento (bench/bento_service.py) serves a cheap scikit-learn model: logistic regression on the
13 wine features, one batchable ``np.ndarray`` API answering ``predict_proba`` rows. The golden set
is N rows of those features (Parquet, integer labels).

- **minimal client** (the baseline): the features in memory, ``.tolist()`` → ``json.dumps`` → one
  POST per batch → ``json.loads`` (or the same with orjson, numpy straight to JSON),
  ``concurrency = workers`` requests in flight, nothing else; swept over batch sizes and both
  JSON libraries, its best is the baseline.
- **mlobs, default settings**: what ``mlobs evaluate`` does between opening the dataset and the
  committed snapshot — the id/label check pass, the OpenAPI read, the probe, measured batch sizes
  (``batch-size: auto``, ``concurrency: 4``), parsing every answer into prediction, confidence and
  the per-class score map, and one Iceberg append + commit (pyiceberg, SQLite catalog) — timed in
  this process through ``mlobs.evaluate.runner`` (the code the mode calls). Also reported: the wall
  time of the whole ``mlobs evaluate`` CLI (Python start-up, imports, metrics and report included).

The minimal client is swept once to find its best setting; then ``--repeat`` mlobs runs each sit
between two baseline runs at that setting (the ratio is over their mean, so a shared machine's
drifting load cancels out), and the result is the median ratio. Every mlobs run appends to one
table (created in the warm-up), as runs do in CI with a shared catalog. Usage:

    python bench/bento_throughput.py [--rows 100000] [--workers 1] [--repeat 5]
        [--batch-sizes 64,256,1000,4000,16000] [--fixed 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import urllib3  # noqa: E402

from mlobs.evaluate.bento import BentoServer  # noqa: E402
from mlobs.evaluate.dataset import open_dataset  # noqa: E402
from mlobs.evaluate.runner import BentoCall, predictions  # noqa: E402
from mlobs.lake.catalog import CatalogConfig  # noqa: E402
from mlobs.lake.engine import open_engine  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def prepare(workdir: Path, rows: int) -> tuple[Path, Path, np.ndarray]:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.data, data.target)
    model_path = workdir / "wine.joblib"
    joblib.dump(model, model_path)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(data.target), rows)
    x = data.data[idx] * rng.normal(1.0, 0.02, (rows, data.data.shape[1]))  # no two rows alike
    table = pa.table({**{name: x[:, i] for i, name in enumerate(data.feature_names)},
                      "label": data.target[idx]})
    dataset = workdir / "golden.parquet"
    pq.write_table(table, dataset)
    pq.write_table(table.slice(0, 2000), workdir / "warm-up.parquet")
    return model_path, dataset, x


def minimal_client(url: str, x: np.ndarray, batch: int, concurrency: int,
                   codec: str = "json") -> float:
    """Rows per second of the simplest client that gets every answer; ``codec`` json (the
    standard library, as ``requests`` uses it) or orjson (numpy straight to JSON)."""
    http = urllib3.PoolManager(maxsize=concurrency)

    def post(start: int) -> int:
        rows = x[start:start + batch]
        if codec == "orjson":
            body = orjson.dumps({"x": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
        else:
            body = json.dumps({"x": rows.tolist()}).encode()
        response = http.request("POST", f"{url}/predict", body=body,
                                headers={"Content-Type": "application/json"}, timeout=120)
        assert response.status == 200, response.data[:200]
        return len(orjson.loads(response.data) if codec == "orjson" else json.loads(response.data))

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = sum(pool.map(post, range(0, len(x), batch)))
    assert done == len(x)
    return len(x) / (time.perf_counter() - began)


def mlobs_default(url: str, dataset_path: Path, lake: Path,
                  batch_size: int | None = None) -> tuple[float, int]:
    """Rows per second from opening the dataset to the committed snapshot, default settings
    (or a fixed ``batch_size``)."""
    began = time.perf_counter()
    dataset = open_dataset(dataset_path, input_columns=None, label_column="label", slice_columns=[],
                           batch_size=4096)
    check = dataset.check()
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions", lake))
    try:
        batches = predictions(url, dataset, check, BentoCall(api="predict", batch_size=batch_size))
        info, written = engine.write_run(batches, run_id=f"bench-{time.time_ns()}", model_version="v1",
                                         commit_sha="0" * 40, dataset_hash="0" * 64,
                                         evaluated_at=datetime.now(UTC), action_version="bench")
        rows = engine.read_run(info, columns=["error"])
    finally:
        engine.close()
    seconds = time.perf_counter() - began
    assert written and rows.num_rows == check.labeled and rows.column("error").null_count == rows.num_rows
    return check.labeled / seconds, rows.num_rows


def cli_wall(url: str, dataset_path: Path, workspace: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    workspace.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "mlobs"), "evaluate",
                           f"--working-directory={workspace}", "--github-token=",
                           f"--bento-url={url}", f"--dataset={dataset_path}", "--model-version=v1"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - began


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=1, help="BentoML workers of the service")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch-sizes", type=ints, default=[64, 256, 1000, 4000, 16000])
    ap.add_argument("--fixed", type=ints, default=[64],
                    help="also run mlobs with these fixed batch sizes (64: the old default)")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mlobs-bench-throughput-"))
    try:
        model_path, dataset_path, x = prepare(workdir, args.rows)
        env = {"MLOBS_BENCH_MODEL": str(model_path), "MLOBS_BENCH_WORKERS": str(args.workers),
               "BENTOML_HOME": str(workdir / "bentoml")}
        load = os.getloadavg()[0]
        print(f"{args.rows:,} rows × {x.shape[1]} features; {os.cpu_count()} CPUs; load average "
              f"{load:.2f}; Python {sys.version.split()[0]}; BentoML workers {args.workers}")
        lake = workdir / "lake"  # one table, a snapshot per run, as in CI with a shared catalog
        with BentoServer("bento_service:Bench", cwd=BENCH, env=env, ready_timeout=180, base_env=os.environ,
                         log_path=workdir / "bento.log") as server:
            # Warm-up, untimed: the server's first requests, the imports mlobs needs (pyiceberg,
            # SQLAlchemy: paid once per CLI run — see the CLI wall time) and the table's creation.
            minimal_client(server.url, x[:2000], 500, args.workers)
            mlobs_default(server.url, workdir / "warm-up.parquet", lake)
            # 1. The minimal client's best setting, swept once.
            sweep = {(codec, b): minimal_client(server.url, x, b, args.workers, codec)
                     for codec in ("json", "orjson") for b in args.batch_sizes}
            codec, batch = max(sweep, key=sweep.__getitem__)
            print("minimal client sweep: " + ", ".join(f"{c} {b}: {v:,.0f}/s"
                                                       for (c, b), v in sweep.items()))
            print(f"best: {codec}, batch {batch}", flush=True)
            # 2. Pairs, back to back: the baseline just before and just after each mlobs run, so
            #    a shared machine's drifting load cancels out of each ratio.
            ratios, ours, base, fixed, cli = [], [], [], {b: [] for b in args.fixed}, []
            before = minimal_client(server.url, x, batch, args.workers, codec)
            for r in range(args.repeat):
                rate, _ = mlobs_default(server.url, dataset_path, lake)
                after = minimal_client(server.url, x, batch, args.workers, codec)
                pair = (before + after) / 2
                ratios.append(rate / pair)
                ours.append(rate)
                base.append(pair)
                print(f"run {r + 1}: minimal client {before:,.0f} / {after:,.0f} rows/s; mlobs "
                      f"default {rate:,.0f} rows/s = {rate / pair:.2f}×", flush=True)
                before = after
            for b in args.fixed:
                fixed[b] = [mlobs_default(server.url, dataset_path, lake, batch_size=b)[0]
                            for _ in range(min(3, args.repeat))]
            for r in range(min(3, args.repeat)):
                cli.append(cli_wall(server.url, dataset_path, workdir / f"ws-{r}"))
        median = statistics.median
        print(f"\nload average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}")
        print("| client | batch | concurrency | rows/s |")
        print("|---|---:|---:|---:|")
        for (c, b), v in sweep.items():
            print(f"| minimal, {c} (one sweep) | {b} | {args.workers} | {v:,.0f} |")
        print(f"| minimal, {codec}, best (median of {len(base)} pairs) | {batch} | {args.workers} "
              f"| {median(base):,.0f} |")
        for b, rates in fixed.items():
            print(f"| mlobs evaluate, batch-size {b} (Iceberg commit included) | {b} | 4 | "
                  f"{median(rates):,.0f} |")
        print(f"| mlobs evaluate, defaults (Iceberg commit included) | auto | 4 | {median(ours):,.0f} |")
        print(f"\nratio mlobs / best minimal client: median {median(ratios):.2f}× of "
              f"{len(ratios)} pairs ({', '.join(f'{r:.2f}' for r in ratios)}); whole CLI wall "
              f"time for {args.rows:,} rows: {median(cli):.1f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
