"""The queries slo-validate's plan sends, answered by the Loki double exactly as a real Loki 3.7
answered them (tests/data/loki-plan-recordings, recorded with ``python tests/plan_corpus.py record``):
the numeric "usable latency" filters, ``or`` filters, ``by (model_version)``, ``offset``
sub-windows, and the limits a real Loki enforces (max_query_length, max_query_series)."""

from __future__ import annotations

import json
import math

import pytest

import plan_corpus
from mlobs.loki import LokiClient
from servers.loki import LokiDouble

RECORDED = json.loads((plan_corpus.RECORDINGS / "recordings.json").read_text())


@pytest.fixture(scope="module")
def double():
    with LokiDouble() as loki:
        LokiClient(loki.url).push(plan_corpus.push_payload()["streams"])
        yield loki


def _answer(loki: LokiDouble, query: str) -> dict:
    import urllib.error
    import urllib.parse
    import urllib.request

    params = urllib.parse.urlencode({"query": query, "time": str(plan_corpus.T0 + 1)})
    try:
        with urllib.request.urlopen(f"{loki.url}/loki/api/v1/query?{params}", timeout=30) as response:
            body = json.loads(response.read())
            return {"status": response.status, "result": {
                tuple(sorted((k, v) for k, v in item["metric"].items() if v)): float(item["value"][1])
                for item in body["data"]["result"]}}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode().strip()}


def test_the_recordings_are_of_the_queries_the_plan_builds_today():
    assert {name: r["query"] for name, r in RECORDED.items()} == plan_corpus.queries()


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_the_double_answers_like_loki(double, name):
    recorded = RECORDED[name]
    answer = _answer(double, recorded["query"])
    assert answer["status"] == recorded["status"], answer
    if "body" in recorded:
        assert answer["body"] == recorded["body"]
        return
    # Loki shows a label that `| json f="f"` set to "" as "f": "" in the metric; no series differs
    # by it, so it is compared as absent.
    expected = {tuple(sorted((k, v) for k, v in item["metric"].items() if v)): float(item["value"])
                for item in recorded["result"]}
    assert answer["result"].keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(answer["result"][key], value, rel_tol=1e-12), key


# Each latency of the corpus as a quantile may use it — written out by hand, independent of
# mlobs: a plain decimal (digits, at most one point) below 2^64, else None. JSON numbers count as
# Python's json writes them ("300.0", "100000.0", "1e-07", "1e+21").
USABLE_BY_HAND = [12.5, 80.0, 150.25, 0.0, 7.0, 99.5, 300.0, 42.0, 12.5, None, None, None, None,
                  None, None, None, None, None, None, None, None, None, None, None,
                  100000.0, None, None, None, 5.0, 0.5, 12.0, None, None, None, None,
                  None, None, None, None, None, None, None]  # fmt: skip


def test_real_loki_counted_exactly_the_usable_latencies():
    import numpy as np

    assert len(USABLE_BY_HAND) == len(plan_corpus.LATENCIES)
    usable = [v for v in USABLE_BY_HAND if v is not None]
    per_version = 2 * len(usable)  # two pods
    assert RECORDED["count_usable_latency"]["result"] == [{"metric": {}, "value": str(per_version)}]
    assert float(RECORDED["p99_usable"]["result"][0]["value"]) == np.quantile(usable * 2, 0.99)
    assert float(RECORDED["p50_usable"]["result"][0]["value"]) == np.quantile(usable * 2, 0.5)
    total = sum(float(r["value"]) for r in RECORDED["count_by_status_class"]["result"])
    assert total == 2 * len(plan_corpus.LATENCIES)  # every JSON line, usable latency or not
    marked: dict[str, float] = {}
    for r in RECORDED["count_marked"]["result"]:
        marked[r["metric"].get("mlobs_error", "")] = marked.get(r["metric"].get("mlobs_error", ""), 0) + float(r["value"])
    assert marked == {"": per_version, "LabelFilterErr": total - per_version}


def test_the_log_file_source_agrees_with_real_loki(tmp_path):
    from datetime import UTC, datetime

    from mlobs.slo.checks import CheckSettings, class_share, error_rate, latency_quantile
    from mlobs.slo.model import Scope
    from mlobs.slo.source import FileSource

    with (tmp_path / "logs.jsonl").open("w") as fh:
        for labels, ts, line in plan_corpus.lines():
            if labels["function_name"] != "classifier":
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                fh.write(line + "\n")
                continue
            stamp = datetime.fromtimestamp(ts / 1e9, UTC).isoformat().replace("+00:00", "Z")
            fh.write(json.dumps({"timestamp": stamp, **obj}) + "\n")
    source = FileSource(tmp_path / "logs.jsonl")
    scope = Scope(plan_corpus.SELECTOR, "1h", 3600.0, plan_corpus.T0 + 1, "v2")
    settings = CheckSettings(min_samples=1)
    latency = latency_quantile(scope, settings, 99, 150).evaluate(source)
    assert latency.n == int(RECORDED["count_usable_latency"]["result"][0]["value"])
    assert latency.value == float(RECORDED["p99_usable"]["result"][0]["value"])
    errors = error_rate(scope, settings, 50).evaluate(source)
    by_status: dict[str, float] = {}
    for r in RECORDED["count_by_status_class"]["result"]:
        by_status[r["metric"]["status_code"]] = by_status.get(r["metric"]["status_code"], 0) + float(r["value"])
    assert errors.n == sum(by_status.values())
    assert errors.value == sum(v for k, v in by_status.items() if int(k) >= 500) / errors.n
    share = class_share(scope, settings, "tabby cat", 0, 100).evaluate(source)
    ok = [r for r in RECORDED["count_by_status_class"]["result"] if int(r["metric"]["status_code"]) < 400]
    assert share.n == sum(float(r["value"]) for r in ok)
