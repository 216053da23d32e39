"""Keep the Loki double honest: replay what real Loki answered and compare, case by case.

``tests/data/loki-conformance`` holds the streams pushed to a real Loki (3.7 line) and its raw
answers to a set of queries: this project's own test data (copied from the recordings made for
it), so the suite needs nothing outside the repository. Every recorded query is replayed here
against the double with the same parameters; status, content type, result type, series label
sets, every value and timestamp, and error bodies must match.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.loki import LokiDouble, conformance_corpus

CORPUS: Path = conformance_corpus()
SUMMARY: dict[str, dict[str, Any]] = json.loads((CORPUS / "summary.json").read_text())
INSTANT_TIME = SUMMARY["a_quantile.instant"]["params"]["time"]

# summary.json has no entry for the x* recordings; these queries are reconstructed from the file
# names and the pushed data. A mismatch means the double or the reconstruction is wrong.
NONJSON = '{namespace="openfaas-fn", function_name="pytorch-classifier-nonjson"}'
DIRTY = '{namespace="openfaas-fn", function_name="pytorch-classifier-dirty"}'
MAIN = '{namespace="openfaas-fn", function_name="pytorch-classifier"}'
RECONSTRUCTED = {
    "x1_quantile_by_pod": (
        f'quantile_over_time(0.99, {MAIN} | json | model_version="v1.2.1" | unwrap latency_ms [1h]) by (pod)'
    ),
    "x2_missing_latency_only": (
        f'quantile_over_time(0.99, {DIRTY} | json | event="model_loaded" | unwrap latency_ms [1h]) by (function_name)'
    ),
    "x3_null_latency_only": (
        f'quantile_over_time(0.99, {DIRTY} |= "null" | json | unwrap latency_ms [1h]) by (function_name)'
    ),
    # Ungrouped on purpose: a bare `sum(...)` would not parse the lines at all (Loki's parser
    # hints), so the JSON error only surfaces when labels are kept.
    "x4_nonjson_count_no_filter": f"count_over_time({NONJSON} | json [1h])",
    "x5_dirty_errors_by_error": (
        f"sum by (__error__) (count_over_time({DIRTY} | json | unwrap latency_ms [1h]))"
    ),
    "x6_nonjson_errors_by_error": f"sum by (__error__) (count_over_time({NONJSON} | json [1h]))",
    "x7_sum_count_5xx_by_function": (
        f"sum by (function_name) (count_over_time({MAIN} | json | status_code >= 500 [1h]))"
    ),
    "x8_unknown_function_in_agg": f"sum(foo_over_time({MAIN} [1h]))",
    "x9_unwrap_unknown_label": (
        f"quantile_over_time(0.99, {MAIN} | json | unwrap latency_msec [1h]) by (function_name)"
    ),
}


@pytest.fixture(scope="module")
def loki() -> Iterator[LokiDouble]:
    pushed = json.loads((CORPUS / "pushed_streams.json").read_text())
    with LokiDouble() as double:
        status, _, _ = _call(double.url, "/loki/api/v1/push", body={"streams": pushed["streams"]})
        assert status == 204
        yield double


def _call(
    base: str, path: str, params: dict[str, str] | None = None, body: Any = None
) -> tuple[int, str, bytes]:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def _recorded_body(name: str) -> bytes:
    return (CORPUS / f"{name}.json").read_bytes()


def _same_number(got: str, want: str) -> bool:
    a, b = float(got), float(want)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def _series(result: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], Any]:
    keyed = {frozenset((item.get("metric") or {}).items()): item for item in result}
    assert len(keyed) == len(result), "two series share one label set"
    return keyed


def _assert_same_answer(
    got: tuple[int, str, bytes], want_status: int, want_type: str, want_body: bytes
) -> None:
    status, content_type, body = got
    assert status == want_status, body.decode(errors="replace")
    assert content_type == want_type
    if status != 200:
        got_text, want_text = body.decode(), want_body.decode()
        assert got_text.splitlines()[0] == want_text.splitlines()[0]
        assert got_text == want_text
        return
    got_data, want_data = json.loads(body)["data"], json.loads(want_body)["data"]
    assert got_data["resultType"] == want_data["resultType"]
    got_series, want_series = _series(got_data["result"]), _series(want_data["result"])
    assert set(got_series) == set(want_series)
    for labels, want_item in want_series.items():
        got_item = got_series[labels]
        if "value" in want_item:
            got_points, want_points = [got_item["value"]], [want_item["value"]]
        else:
            got_points, want_points = got_item["values"], want_item["values"]
        assert [t for t, _ in got_points] == [t for t, _ in want_points], dict(labels)
        for (t, got_value), (_, want_value) in zip(got_points, want_points, strict=True):
            assert isinstance(got_value, str)
            assert _same_number(got_value, want_value), (dict(labels), t, got_value, want_value)


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_recorded_query(loki: LokiDouble, name: str) -> None:
    case = SUMMARY[name]
    path = "/loki/api/v1/query" if name.endswith(".instant") else "/loki/api/v1/query_range"
    got = _call(loki.url, path, case["params"])
    _assert_same_answer(got, case["http_status"], case["content_type"], _recorded_body(name))
    if case["http_status"] == 200:
        data = json.loads(got[2])["data"]
        assert data["resultType"] == case["resultType"]
        assert len(data["result"]) == case["n_series"]


@pytest.mark.parametrize("name", sorted(RECONSTRUCTED))
def test_reconstructed_query(loki: LokiDouble, name: str) -> None:
    raw = _recorded_body(f"{name}.instant")
    try:
        json.loads(raw)
        want_status, want_type = 200, "application/json; charset=UTF-8"
    except ValueError:
        want_status, want_type = 400, "text/plain; charset=utf-8"
    params = {"query": RECONSTRUCTED[name], "time": INSTANT_TIME}
    got = _call(loki.url, "/loki/api/v1/query", params)
    _assert_same_answer(got, want_status, want_type, raw)


def test_every_recording_is_replayed() -> None:
    recorded = {p.name.removesuffix(".json") for p in CORPUS.glob("*.instant.json")}
    recorded |= {p.name.removesuffix(".json") for p in CORPUS.glob("*.range.json")}
    replayed = set(SUMMARY) | {f"{name}.instant" for name in RECONSTRUCTED}
    assert recorded == replayed


def test_the_corpus_is_part_of_the_repository() -> None:
    # CI runs on a plain checkout: no shared folder beside it. The data must live under tests/.
    tests = Path(__file__).resolve().parent
    assert CORPUS.is_relative_to(tests) and (CORPUS / "summary.json").is_file()
    assert len(list(CORPUS.glob("*.json"))) == 44


def test_no_test_reads_outside_the_repository() -> None:
    """Nothing in tests/ may point at the shared folder beside the checkout (or
    $MLOBS_SHARED_DIR): it is absent on GitHub's runners."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in [*tests.glob("*.py"), *tests.glob("servers/*.py")]:
        if path == Path(__file__).resolve():
            continue  # this test's own pattern
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"MLOBS_SHARED_DIR|parents\[[2-9]\]\s*/\s*[\"']shared|\.\./shared", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_expected_values_agree_with_recordings() -> None:
    # expected.json was computed from the pushed lines; the double must land on the same numbers.
    expected = json.loads((CORPUS / "expected.json").read_text())
    by_function = json.loads(_recorded_body("b_quantile_by_function.instant"))["data"]["result"]
    assert float(by_function[0]["value"][1]) == expected["p99_all"]
