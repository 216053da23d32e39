"""Queries and wall time of slo-validate's bundled contracts against the Loki double, versus the
seed's pattern (two `query_range` calls per scenario, each read as "last point of result[0]").

Both run in this process against the same double holding the same lines (two pods, two model
versions). Prints the measured figures and our/seed ratios, plus what each pattern reports as the
p99 next to the true p99 of all lines.
Usage: python bench/slo_queries.py [lines_per_pod]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import loggen  # noqa: E402
from mlobs.config import build_settings  # noqa: E402
from mlobs.loki import LokiClient  # noqa: E402
from mlobs.slo import mode  # noqa: E402
from servers.loki import LokiDouble  # noqa: E402

SEL = '{namespace="openfaas-fn", function_name="pytorch-classifier"}'
F = '| json | model_version="v2"'
# The seed's shape: per scenario a numerator and a denominator (or value + count) over query_range.
SEED_SCENARIOS = [
    (f"sum(count_over_time({SEL} {F} [1h]))", f"sum(count_over_time({SEL} {F} [1h]))"),
    (f"quantile_over_time(0.99, {SEL} {F} | unwrap latency_ms | __error__=\"\" [1h])",
     f"count_over_time({SEL} {F} [1h])"),
    (f"sum(count_over_time({SEL} {F} | status_code >= 500 | __error__=\"\" [1h]))",
     f"sum(count_over_time({SEL} {F} [1h]))"),
    (f"sum(count_over_time({SEL} {F} | top1_class=\"golden retriever\" [1h]))",
     f"sum(count_over_time({SEL} {F} | status_code=200 [1h]))"),
    (f"sum by (top1_class) (count_over_time({SEL} {F} | status_code=200 [1h]))",
     f"sum by (top1_class) (count_over_time({SEL} | json | model_version=\"v1\" | status_code=200 [1h]))"),
    (f"quantile_over_time(0.95, {SEL} {F} | unwrap latency_ms | __error__=\"\" [1h])",
     f"quantile_over_time(0.95, {SEL} | json | model_version=\"v1\" | unwrap latency_ms | __error__=\"\" [1h])"),
]


def seed_pattern(client: LokiClient) -> tuple[int, float | None]:
    p99 = None
    for i, pair in enumerate(SEED_SCENARIOS):
        for j, query in enumerate(pair):
            series = client.range(query, loggen.END - 3600, loggen.END, 60)
            last = series[0].points[-1][1] if series and series[0].points else None
            if i == 1 and j == 0:
                p99 = last
    return client.requests_sent, p99


def ours(loki_url: str, workdir: Path) -> tuple[int, float]:
    params = {"loki_url": loki_url, "window_end": str(loggen.END), "model_version": "v2",
              "baseline_version": "v1", "working_directory": str(workdir), "github_token": ""}
    settings = build_settings("slo-validate", params, {})
    mode.run(settings)
    import json

    data = json.loads((workdir / ".mlobs" / "slo-results.json").read_text())
    p99 = next(s for s in data["scenarios"] if s["name"] == "p99 latency")["checks"][0]["value"]
    return data["queries_issued"], p99


def main() -> None:
    per_pod = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    import tempfile

    with LokiDouble() as loki, tempfile.TemporaryDirectory() as tmp:
        client = LokiClient(loki.url)
        lines = []
        for pod, (mean, seed) in {"a": (60, 1), "b": (120, 2)}.items():
            for version in ("v1", "v2"):
                batch = loggen.requests(per_pod, version=version, latency_ms=(mean, 15), pod=pod,
                                        seed=seed + (10 if version == "v2" else 0))
                loggen.push(client, batch, pod=pod)
                lines += batch
        truth = float(np.quantile([x["latency_ms"] for x in lines if x["model_version"] == "v2"], 0.99))

        before = len(loki.requests)
        start = time.perf_counter()
        n_ours, p99_ours = ours(loki.url, Path(tmp))
        t_ours = time.perf_counter() - start
        http_ours = len(loki.requests) - before

        seed_client = LokiClient(loki.url)
        start = time.perf_counter()
        n_seed, p99_seed = seed_pattern(seed_client)
        t_seed = time.perf_counter() - start

    print(f"lines: {len(lines)} (2 pods × 2 versions × {per_pod})")
    print(f"| pattern | Loki requests | wall time | p99 reported (true p99 {truth:.1f} ms) |")
    print("|---|---|---|---|")
    print(f"| seed: 2 × query_range per scenario, last point of result[0] | {n_seed} | {t_seed:.2f} s | {p99_seed:.1f} ms |")
    print(f"| mlobs: instant queries, deduplicated, `by ()` | {http_ours} ({n_ours} distinct) | {t_ours:.2f} s | {p99_ours:.1f} ms |")
    print(f"ratio mlobs/seed: requests {http_ours / n_seed:.2f}×, wall time {t_ours / t_seed:.2f}×")


if __name__ == "__main__":
    main()
