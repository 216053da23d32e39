"""The bundled SLO contract's query plan versus the two-query minimal plan, on the same data.

For the bundled contract (features/production.feature, model version v2, no baseline) it prints
the queries sent, the log lines the Loki double scanned (double only), the wall time, and the
ratio to the minimal plan — the two instant queries that answer the same questions:

    quantile_over_time(0.99, … | unwrap latency_ms | __error__="" [1h]) by ()
    sum by (status_code, top1_class) (count_over_time(… | __error__="" [1h]))

run one after the other (as the issue measured them) and concurrently. Also the plan this
project sent before (one query per measurement, one after another: five queries). Each
configuration runs ``--repeat`` times, interleaved, and the medians are compared; the p99 each
reports is printed beside the others (they must agree to the decimal).

    python bench/slo_plan.py                                   # the Loki double, 3 × 10,000 lines
    python bench/slo_plan.py --lines 300000 --loki-url http://127.0.0.1:3100 --push
                                                               # a real Loki, 300k lines pushed
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import loggen  # noqa: E402
from mlobs.config import build_settings  # noqa: E402
from mlobs.loki import LokiClient, logql  # noqa: E402
from mlobs.slo import mode  # noqa: E402

SEL = '{namespace="openfaas-fn", function_name="pytorch-classifier"}'
VERSION = "v2"


def minimal_queries() -> list[str]:
    v = logql.LabelFilter("model_version", "=", VERSION)
    return [logql.quantile_query(SEL, 0.99, "latency_ms", "1h", [v]),
            logql.count_query(SEL, "1h", [v], by=["status_code", "top1_class"])]


def previous_queries() -> list[str]:
    """What slo-validate sent for the bundled contract before the plan (five full scans)."""
    v = logql.LabelFilter("model_version", "=", VERSION)
    numeric = logql.LabelFilter("status_code", "=~", logql.NUMBER_REGEX)
    latency_numeric = logql.LabelFilter("latency_ms", "=~", logql.NUMBER_REGEX)
    return [logql.count_query(SEL, "1h", [v, numeric], by=["status_code"]),
            logql.count_query(SEL, "1h", [v, latency_numeric]),
            logql.unwrap_dropped_query(SEL, "latency_ms", "1h", [v]),
            logql.quantile_query(SEL, 0.99, "latency_ms", "1h", [v]),
            logql.count_query(SEL, "1h", [v, logql.LabelFilter("status_code", "<", 400)],
                              by=["top1_class"])]


def push(url: str, total: int, end: float) -> None:
    client = LokiClient(url, deadline=300, timeout=300)
    for i, pod in enumerate("abc"):
        lines = loggen.requests(total // 3, version=VERSION, start=end - 3590, end=end - 5,
                                seed=10 + i, pod=pod, server_errors=0.003, client_errors=0.02)
        for k in range(0, len(lines), 20000):
            loggen.push(client, lines[k:k + 20000], pod=pod)


def bundled(url: str, end: float, workdir: Path, concurrency: int = 4) -> tuple[float, dict]:
    params = {"loki_url": url, "window_end": str(end), "model_version": VERSION,
              "working_directory": str(workdir), "github_token": "", "dry_run": True,
              "loki_timeout": 300, "loki_concurrency": concurrency}
    settings = build_settings("slo-validate", params, {})
    start = time.perf_counter()
    mode.run(settings)
    wall = time.perf_counter() - start
    return wall, json.loads((workdir / ".mlobs" / "slo-results.json").read_text())


def timed(client: LokiClient, queries: list[str], end: float, concurrent: bool) -> tuple[float, list]:
    start = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(queries)) as pool:
            answers = list(pool.map(lambda q: client.instant(q, end), queries))
    else:
        answers = [client.instant(q, end) for q in queries]
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=30_000, help="lines over the last hour, 3 replicas")
    parser.add_argument("--loki-url", help="a real Loki (default: start the double)")
    parser.add_argument("--push", action="store_true", help="push --lines lines into --loki-url first")
    parser.add_argument("--end", type=float, help="window end (default: now, or loggen.END on the double)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    double = None
    if args.loki_url is None:
        from servers.loki import LokiDouble

        double = LokiDouble().__enter__()
        url, end = double.url, args.end or loggen.END
        push(url, args.lines, end)
    else:
        url, end = args.loki_url.rstrip("/"), args.end or time.time()
        if args.push:
            push(url, args.lines, end)
            time.sleep(2)
    client = LokiClient(url, deadline=300, timeout=300)
    runs: dict[str, list[float]] = {k: [] for k in ("bundled", "bundled_serial", "minimal",
                                                    "minimal_concurrent", "previous")}
    scanned: dict[str, int] = {}
    sent: dict[str, int] = {}
    p99: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for name in runs:
                before_scan = double.lines_scanned if double else 0
                before_sent = len(double.requests) if double else client.queries_issued
                if name.startswith("bundled"):
                    wall, data = bundled(url, end, Path(tmp), 1 if name.endswith("serial") else 4)
                    p99[name] = next(s for s in data["scenarios"] if s["name"] == "p99 latency")["checks"][0]["value"]
                    sent[name] = data["queries_issued"]
                else:
                    queries = minimal_queries() if name.startswith("minimal") else previous_queries()
                    wall, answers = timed(client, queries, end, concurrent=name.endswith("concurrent"))
                    quantile = next(a for q, a in zip(queries, answers, strict=True) if q.startswith("quantile"))
                    p99[name] = quantile[0].value
                    sent[name] = (len(double.requests) if double else client.queries_issued) - before_sent
                runs[name].append(wall)
                if double:
                    scanned[name] = double.lines_scanned - before_scan
    if double:
        double.__exit__(None, None, None)

    where = "the Loki double" if double else f"Loki at {url}"
    print(f"{args.lines} lines over the last hour, 3 replicas, {where}; median of {args.repeat}")
    print("| plan | queries | lines scanned | wall time (median) | × minimal (one after the other) "
          "| × minimal (concurrent) | p99 reported |")
    print("|---|---|---|---|---|---|---|")
    base, base_c = statistics.median(runs["minimal"]), statistics.median(runs["minimal_concurrent"])
    labels = {"bundled": "bundled contract, planned (slo-validate end to end, loki-concurrency 4)",
              "bundled_serial": "the same with loki-concurrency 1",
              "minimal": "minimal: 2 queries, one after the other",
              "minimal_concurrent": "minimal: 2 queries, concurrently",
              "previous": "before the plan: 5 queries, one after the other"}
    for name, label in labels.items():
        wall = statistics.median(runs[name])
        lines = f"{scanned[name]:,}" if double else "—"
        print(f"| {label} | {sent[name]} | {lines} | {wall:.3f} s | {wall / base:.2f}× | "
              f"{wall / base_c:.2f}× | {p99[name]:.3f} ms |")
    print("all runs (s):", {k: [round(x, 3) for x in v] for k, v in runs.items()})


if __name__ == "__main__":
    main()
