"""Samples/s through BentoML (the runner's client → ``bentoml serve`` → the example model) versus
calling the same model in-process, at several client batch sizes and concurrencies.

Both sides produce the same per-sample output (label + per-class scores). The in-process side
is ``predict_items`` on the model artifact the server loads; the Bento side is the full runner
path: Arrow batch → JSON POST → server-side adaptive batching → JSON → Arrow prediction rows.
Each Bento run is paired with an in-process run of the same batch size taken just before it
(a shared machine's load drifts); ratios are the median of the pairs, plus the Bento rate over
the best in-process rate of the whole run. All measured in this process, on this machine.

Usage: python bench/bento_throughput.py [--samples 10000] [--batch-sizes 32,128,512,2048]
       [--concurrency 1,2,4] [--workers 1] [--repeat 3]
The model is trained into a temporary BENTOML_HOME (deleted afterwards) unless --home is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = ROOT / "evaluation"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import joblib  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pcsv  # noqa: E402

from mlobs.evaluate.bento import BentoServer  # noqa: E402
from mlobs.evaluate.client import predict  # noqa: E402
from mlobs.evaluate.example import predict_items  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def texts(n: int) -> list[str]:
    golden = pcsv.read_csv(EVALUATION / "golden.csv").column("text").to_pylist()
    return [golden[i % len(golden)] for i in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--batch-sizes", type=ints, default=[32, 128, 512, 2048])
    ap.add_argument("--concurrency", type=ints, default=[1, 2, 4])
    ap.add_argument("--workers", type=int, default=1, help="BentoML workers for the service")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--home", type=Path, help="an existing BENTOML_HOME with mlobs-sentiment:v1")
    args = ap.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="mlobs-bench-bentoml-"))
    try:
        env = {**os.environ, "BENTOML_HOME": str(home)}
        if args.home is None:
            subprocess.run([sys.executable, str(EVALUATION / "train.py"), "v1"], env=env,
                           check=True, capture_output=True)
        model = joblib.load(home / "models" / "mlobs-sentiment" / "v1" / "model.joblib")
        data = texts(args.samples)
        n = len(data)
        print(f"{n:,} samples; machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
              f"BentoML workers: {args.workers}")

        server_env = {"BENTOML_HOME": str(home), "MLOBS_EXAMPLE_MODEL": "mlobs-sentiment:v1",
                      "MLOBS_EXAMPLE_WORKERS": str(args.workers)}
        # (batch, concurrency) -> (in-process/s, Bento/s, Bento ÷ in-process): medians of pairs.
        results: dict[tuple[int, int], tuple[float, float, float]] = {}
        with BentoServer("service:SentimentClassifier", cwd=EVALUATION, env=server_env) as server:
            for bs in args.batch_sizes:
                chunks = [data[i:i + bs] for i in range(0, n, bs)]
                batches = pa.table({"sample_id": [str(i) for i in range(n)], "text": data,
                                    "label": ["x"] * n}).to_batches(max_chunksize=bs)

                def local(chunks=chunks) -> None:
                    for chunk in chunks:
                        predict_items(model, chunk)

                for conc in args.concurrency:
                    def remote(batches=batches, conc=conc) -> None:
                        out = predict(server.url, batches, input_columns=["text"], label_column="label",
                                      slice_columns=[], concurrency=conc, timeout=60,
                                      deadline_per_batch=120, progress=None)
                        errors = sum(b.num_rows - b.column("error").null_count for b in out)
                        assert errors == 0, f"{errors} error rows"

                    local(), remote()  # warm-up
                    # Paired runs, back to back: a shared machine's load drifts, so each Bento
                    # figure is compared with an in-process figure taken moments before it.
                    pairs = [(n / timed(local), n / timed(remote)) for _ in range(args.repeat)]
                    results[bs, conc] = (statistics.median(p[0] for p in pairs),
                                         statistics.median(p[1] for p in pairs),
                                         statistics.median(p[1] / p[0] for p in pairs))

        best_inproc = max(r[0] for r in results.values())
        print(f"\nmedians of {args.repeat} paired runs (in-process, then Bento, back to back); "
              f"best in-process: {best_inproc:,.0f}/s")
        print("| batch | concurrency | in-process/s | Bento/s | Bento ÷ in-process (paired) "
              "| Bento ÷ best in-process |")
        print("|---:|---:|---:|---:|---:|---:|")
        for (bs, conc), (local_rate, rate, ratio) in results.items():
            print(f"| {bs} | {conc} | {local_rate:,.0f} | {rate:,.0f} | {ratio:.2f} "
                  f"| {rate / best_inproc:.2f} |")
        (bs, conc), (local_rate, rate, ratio) = max(results.items(), key=lambda kv: kv[1][1])
        print(f"\nbest Bento setting: batch {bs}, concurrency {conc}: {rate:,.0f}/s = {ratio:.0%} "
              f"of in-process at that batch size, {rate / best_inproc:.0%} of the best in-process rate")
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
