"""The log lines and the queries behind ``tests/data/loki-plan-recordings``: what slo-validate's query
plan sends (built by mlobs.loki.logql, as the plan builds them), answered by a real Loki 3.7.

``python tests/plan_corpus.py record http://127.0.0.1:3100`` pushes the lines into a real Loki
(built with /work/shared/tools/real-loki or any other) and rewrites the recordings;
tests/test_slo_plan_conformance.py replays them against the double.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDINGS = HERE / "data" / "loki-plan-recordings"
T0 = 1_796_000_000  # the lines' newest second; queries are evaluated at T0 + 1
SELECTOR = '{namespace="plan-corpus", function_name="classifier"}'

# Latency values as written in the JSON (numbers and strings), with what the plan makes of them.
LATENCIES = [12.5, 80, 150.25, 0, 7, 99.5, 3e2, "42", "12.5", "-5", "NaN", "Infinity", "-Infinity",
             "inf", "1e999", "n/a", "", "1_000", "0x1p3", "+5", "12.5 ", "-0", None, "missing",
             1e5, -3, "1e-400", 1e-7, "5.", ".5", "00012", "1,000", "12kb", "1.2.3", ".",
             "18446744073709551615", "18446744073709551616", 1e21, "\u0661\u0662", True,
             {"nested": 1}, [1, 2]]  # fmt: skip


def lines() -> list[tuple[dict[str, str], int, str]]:
    """(stream labels, unix ns, line) for every pushed entry."""
    out = []
    statuses = [200, 200, 200, 500, 400, 200, 503, 200]
    classes = ["golden retriever", "tabby cat", "labrador retriever"]
    i = 0
    for version in ("v2", "v1"):
        for pod in ("a", "b"):
            for k, latency in enumerate(LATENCIES):
                status = statuses[(k + i) % len(statuses)]
                line = {"event": "request", "model_version": version, "status_code": status,
                        "request_id": f"{version}-{pod}-{k}"}
                if latency != "missing":
                    line["latency_ms"] = latency
                if status < 400:
                    line["top1_class"] = classes[(k + i) % len(classes)]
                ts = (T0 - 600 - 10 * i - k) * 10**9
                out.append(({"namespace": "plan-corpus", "function_name": "classifier", "pod": pod},
                            ts, json.dumps(line)))
            i += 1
    classifier = {"namespace": "plan-corpus", "function_name": "classifier", "pod": "a"}
    out.append((classifier, (T0 - 5) * 10**9, "Traceback (most recent call last): not JSON"))
    # Malformed JSON that Loki's `| json a="a"` still reads fields from (a line cut short, a bare
    # NaN token) is left out: Loki (jsonparser) flags an error only when a requested field is
    # unreadable, while the double and the log-file source call the whole line not JSON.
    for n in range(520):  # enough distinct request ids to pass max_query_series (500)
        out.append(({"namespace": "plan-corpus", "function_name": "ids", "pod": "a"},
                    (T0 - 1000 - n) * 10**9, json.dumps({"request_id": f"id-{n}", "status_code": 200})))
    return out


def push_payload() -> dict:
    streams: dict[tuple, list] = {}
    for labels, ts, line in lines():
        streams.setdefault(tuple(sorted(labels.items())), []).append([str(ts), line])
    return {"streams": [{"stream": dict(k), "values": sorted(v)} for k, v in streams.items()]}


def queries() -> dict[str, str]:
    from mlobs.loki import logql

    f = logql.LabelFilter
    v2 = f("model_version", "=", "v2")
    both = logql.AnyOf((v2, f("model_version", "=", "v1")))
    usable = logql.UsableNumber("latency_ms")
    mark = logql.ErrorMark("mlobs_error")
    ids = '{namespace="plan-corpus", function_name="ids"}'
    return {
        "count_by_status_class": logql.count_query(SELECTOR, "1h", [v2], by=["status_code", "top1_class"]),
        "count_marked": logql.count_query(SELECTOR, "1h", [v2, usable],
                                          by=["status_code", "top1_class", "mlobs_error"], mark=mark),
        "count_marked_by_version": logql.count_query(SELECTOR, "1h", [both, usable],
                                                     by=["mlobs_error", "model_version"], mark=mark),
        "count_usable_latency": logql.count_query(SELECTOR, "1h", [v2, usable]),
        "count_usable_by_status": logql.count_query(SELECTOR, "1h", [v2, usable], by=["status_code"]),
        "p99_usable": logql.quantile_query(SELECTOR, 0.99, "latency_ms", "1h", [v2, usable]),
        "p50_usable": logql.quantile_query(SELECTOR, 0.5, "latency_ms", "1h", [v2, usable]),
        "p95_by_version": logql.quantile_query(SELECTOR, 0.95, "latency_ms", "1h", [both, usable],
                                               by=["model_version"]),
        "count_by_version": logql.count_query(SELECTOR, "1h", [both],
                                              by=["status_code", "top1_class", "model_version"]),
        "count_all_versions": logql.count_query(SELECTOR, "1h", [], by=["model_version"]),
        "count_sub_window_offset": logql.count_query(SELECTOR, "10m", [v2], offset="5m"),
        "count_sub_window_recent": logql.count_query(SELECTOR, "5m", [v2]),
        "count_800h": logql.count_query(SELECTOR, "800h", [v2]),
        "p99_800h": logql.quantile_query(SELECTOR, 0.99, "latency_ms", "800h", [v2, usable]),
        "too_many_series": logql.count_query(ids, "1h", [], by=["request_id"]),
    }


def record(url: str) -> None:
    from mlobs.loki import LokiClient

    client = LokiClient(url, deadline=60, timeout=60)
    payload = push_payload()
    client.push(payload["streams"])
    import urllib.parse
    import urllib.request

    RECORDINGS.mkdir(exist_ok=True)
    summary = {}
    for name, query in queries().items():
        params = urllib.parse.urlencode({"query": query, "time": str(T0 + 1)})
        try:
            with urllib.request.urlopen(f"{url}/loki/api/v1/query?{params}", timeout=60) as response:
                status, body = response.status, json.loads(response.read())
                result = sorted(({"metric": item["metric"], "value": item["value"][1]}
                                 for item in body["data"]["result"]), key=lambda r: sorted(r["metric"].items()))
                summary[name] = {"query": query, "status": status, "result": result}
        except urllib.error.HTTPError as error:
            summary[name] = {"query": query, "status": error.code, "body": error.read().decode().strip()}
    (RECORDINGS / "recordings.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(summary)} answers from {url}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit(__doc__)
    record(sys.argv[2])
