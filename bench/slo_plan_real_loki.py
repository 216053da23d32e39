"""The bundled contract's planned queries against a real Loki, with only the standard library.

For a machine without the project's environment (or to keep the client out of the figures):

    python bench/slo_plan_real_loki.py queries QUERIES.json     # here: the exact texts the plan
                                                                 # sends for the bundled contract
    python bench/slo_plan_real_loki.py run QUERIES.json LOKI_URL [--push 300000] [--repeat 9]

``run`` pushes the lines (tests/loggen.py: 3 replicas over the last hour), then times, interleaved
and ``--repeat`` times: the plan's queries sent concurrently (as slo-validate sends them), the
two-query minimal plan one after the other and concurrently, and the five queries sent before the
plan; it checks that every plan reports the same p99 and the same counts, and prints medians and
ratios. slo-validate's own overhead around its queries (behave, verdicts, files) is measured by
bench/slo_plan.py (about 15 ms).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_queries(path: str) -> None:
    sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "bench")]
    import slo_plan

    from mlobs.slo import checks
    from mlobs.slo.model import Scope
    from mlobs.slo.plan import LokiPlan

    # The bundled contract (features/production.feature) without a baseline, version v2.
    scope = Scope(slo_plan.SEL, "1h", 3600.0, 0.0, slo_plan.VERSION)
    settings = checks.CheckSettings()
    contract = [checks.minimum_requests(scope, settings, 100),
                checks.latency_quantile(scope, settings, 99, 150),
                checks.error_rate(scope, settings, 0.5),
                checks.class_share(scope, settings, "golden retriever", 5, 15)]
    jobs = LokiPlan(None).jobs([r for c in contract for r in c.requests])
    Path(path).write_text(json.dumps({
        "plan": [job.build("1h", None) for job in jobs],
        "minimal": slo_plan.minimal_queries(),
        "previous": slo_plan.previous_queries(),
    }, indent=1) + "\n")
    print(f"wrote {path}: plan of {len(jobs)} queries")


def instant(url: str, query: str, at: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/loki/api/v1/query?{params}", timeout=600) as response:
        return json.loads(response.read())["data"]["result"]


def push(url: str, total: int, end: float) -> None:
    sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests")]
    from datetime import datetime

    import loggen

    for i, pod in enumerate("abc"):
        lines = loggen.requests(total // 3, version="v2", start=end - 3590, end=end - 5, seed=10 + i,
                                pod=pod, server_errors=0.003, client_errors=0.02)
        for k in range(0, len(lines), 20000):
            values = [[str(int(datetime.fromisoformat(x["timestamp"].replace("Z", "+00:00")).timestamp() * 1e9)),
                       json.dumps(x)] for x in lines[k:k + 20000]]
            body = json.dumps({"streams": [{"stream": {"namespace": "openfaas-fn",
                                                       "function_name": "pytorch-classifier", "pod": pod},
                                            "values": values}]}).encode()
            request = urllib.request.Request(f"{url}/loki/api/v1/push", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=600).read()


def run(path: str, url: str, args: list[str]) -> None:
    queries = json.loads(Path(path).read_text())
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 9
    end = time.time()
    if "--push" in args:
        total = int(args[args.index("--push") + 1])
        started = time.perf_counter()
        push(url, total, end)
        print(f"pushed {total} lines in {time.perf_counter() - started:.1f} s")
        time.sleep(2)
    pool = ThreadPoolExecutor(8)

    def timed(texts: list[str], concurrent: bool):
        started = time.perf_counter()
        if concurrent:
            answers = list(pool.map(lambda q: instant(url, q, end), texts))
        else:
            answers = [instant(url, q, end) for q in texts]
        return time.perf_counter() - started, answers

    plans = {"plan": ("plan", True), "plan_serial": ("plan", False), "minimal": ("minimal", False),
             "minimal_concurrent": ("minimal", True), "previous": ("previous", False)}
    walls: dict[str, list[float]] = {name: [] for name in plans}
    answers: dict[str, list] = {}
    for i in range(repeat):
        order = list(plans) if i % 2 == 0 else list(reversed(plans))
        for name in order:
            key, concurrent = plans[name]
            wall, got = timed(queries[key], concurrent)
            walls[name].append(wall)
            answers[name] = got

    def p99(name: str) -> str:
        key = plans[name][0]
        for text, result in zip(queries[key], answers[name], strict=True):
            if text.startswith("quantile_over_time(0.99"):
                return result[0]["value"][1]
        return "?"

    def requests_counted(name: str) -> float:
        key = plans[name][0]
        if key == "previous":
            return float("nan")  # its count is by status only; compared through the p99
        for text, result in zip(queries[key], answers[name], strict=True):
            if "top1_class" in text.split("(count_over_time")[0]:
                return sum(float(r["value"][1]) for r in result
                           if r["metric"].get("mlobs_error", "") in ("", "LabelFilterErr"))
        return float("nan")

    base, base_c = statistics.median(walls["minimal"]), statistics.median(walls["minimal_concurrent"])
    print(f"Loki at {url}; median of {repeat}, interleaved")
    print("| plan | queries | wall time (median) | × minimal (one after the other) | × minimal (concurrent) "
          "| p99 | requests counted |")
    print("|---|---|---|---|---|---|---|")
    for name in plans:
        wall = statistics.median(walls[name])
        counted = requests_counted(name)
        print(f"| {name} | {len(queries[plans[name][0]])} | {wall:.3f} s | {wall / base:.2f}× | "
              f"{wall / base_c:.2f}× | {p99(name)} | {'—' if counted != counted else f'{counted:.0f}'} |")
    print("all runs (s):", {k: [round(x, 3) for x in v] for k, v in walls.items()})
    pool.shutdown()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "queries":
        write_queries(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3].rstrip("/"), sys.argv[4:])
    else:
        sys.exit(__doc__)
