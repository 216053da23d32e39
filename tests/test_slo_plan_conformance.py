"""The queries slo-validate's plan sends, answered by the Loki double exactly as a real Loki 3.7
answered them (tests/loki-plan-recordings, recorded with ``python tests/plan_corpus.py record``):
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
