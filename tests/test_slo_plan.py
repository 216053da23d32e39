"""slo-validate plans its Loki queries before sending any: the fewest queries, concurrently, with
long windows split — and the same verdicts, values and evidence as one query per measurement.

Every number is checked against an independent computation over the lines pushed (numpy for
quantiles, plain counting for the rest)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli
from mlobs.loki import LokiClient
from servers.loki import LokiDouble

END = str(loggen.END)
REPO = Path(__file__).resolve().parents[1]


def run(workspace, *args, env=None):
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": "", **(env or {})}
    result = CliRunner().invoke(cli, ["slo-validate", f"--working-directory={workspace}",
                                      f"--window-end={END}", "--github-token=", *args],
                                env=env, catch_exceptions=False)
    path = workspace / ".mlobs" / "slo-results.json"
    data = json.loads(path.read_text()) if path.exists() else None
    if path.exists():
        path.unlink()
    return result, data


def checks(data) -> dict[str, dict]:
    return {s["name"]: s["checks"][0] for s in data["scenarios"] if s["checks"]}


def queries_sent(loki: LokiDouble) -> list[str]:
    return [r.params["query"] for r in loki.requests if r.path.endswith("/query")]


def push(loki, lines, pod="a"):
    loggen.push(LokiClient(loki.url), lines, pod=pod)


def p(values, q):
    return float(np.quantile(np.asarray(values, dtype=float), q))


def ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int]:
    """The equal-tailed order-statistic ranks (1-based) of the q-quantile's interval, from the
    binomial distribution directly: the largest l with F(l − 1) ≤ tail and the smallest u with
    F(u − 1) ≥ 1 − tail, F the Binomial(n, q) CDF — written here, independent of mlobs.stats."""
    from scipy.stats import binom

    tail = (1 - confidence) / 2
    low = max(r for r in range(1, n + 1) if binom.cdf(r - 1, n, q) <= tail)
    high = min(r for r in range(1, n + 1) if binom.cdf(r - 1, n, q) >= 1 - tail)
    return low, high


def bounds(values, q: float, confidence: float = 0.95) -> tuple[float, float]:
    ordered = sorted(float(v) for v in values)
    low, high = ranks(len(ordered), q, confidence)
    return ordered[low - 1], ordered[high - 1]


def order_statistic_levels(n: int, q: float) -> tuple[float, float]:
    """The quantile levels that make linear interpolation return those order statistics."""
    from mlobs.stats.quantiles import quantile_plan

    plan = quantile_plan(n, q)
    assert (plan.rank_low, plan.rank_high) == ranks(n, q)
    return plan.level_low, plan.level_high


@pytest.fixture
def loki():
    with LokiDouble() as double:
        yield double


# --- the plan ------------------------------------------------------------------------------


def test_the_bundled_contract_sends_two_queries_with_the_values_of_one_query_each(loki, tmp_path):
    a = loggen.requests(900, version="v2", latency_ms=(60, 20), server_errors=0.004,
                        client_errors=0.03, seed=1, pod="a")
    b = loggen.requests(900, version="v2", latency_ms=(80, 20), seed=2, pod="b")
    push(loki, a, pod="a")
    push(loki, b, pod="b")
    result, data = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2")
    assert result.exit_code == 0, result.output

    sent = queries_sent(loki)
    assert len(sent) == 2 == data["queries_issued"]  # pinned: the minimal plan's two queries
    assert sum(q.startswith("sum by (status_code, top1_class, mlobs_error) (count_over_time(")
               for q in sent) == 1
    assert sum(q.startswith("quantile_over_time(0.99,") and q.endswith("by ()") for q in sent) == 1

    every = a + b
    got = checks(data)
    assert got["Enough traffic to judge the other promises"]["n"] == len(every)
    latency = got["p99 latency"]
    assert latency["n"] == len(every)
    assert latency["value"] == pytest.approx(p([x["latency_ms"] for x in every], 0.99), rel=1e-9)
    errors = got["Server errors"]
    assert errors["value"] == sum(x["status_code"] >= 500 for x in every) / len(every)
    mix = got["Prediction mix"]
    ok = [x for x in every if x["status_code"] < 400]
    assert mix["n"] == len(ok)
    assert mix["value"] == sum(x.get("top1_class") == "golden retriever" for x in ok) / len(ok)
    # every verdict shows the exact query (or queries) its number came from
    assert set(q for c in got.values() for q in c["queries"]) == set(sent)


def test_two_versions_are_compared_in_the_same_queries(loki, tmp_path):
    v1 = loggen.requests(1500, version="v1", latency_ms=(50, 5), seed=3)
    v2 = loggen.requests(1500, version="v2", latency_ms=(80, 5), seed=4,
                         classes={"golden retriever": 0.4, "labrador retriever": 0.3, "tabby cat": 0.3})
    push(loki, v1 + v2)
    _, data = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2", "--baseline-version=v1")
    sent = queries_sent(loki)
    # Pinned: one count for both versions, the p99, the p95 of both versions — and, in a second
    # round once n is known, the p95's two order-statistic bounds. Both versions have n = 1500,
    # so the bounds sit at the same levels and each level is one query by (model_version): the
    # latency-regression intervals cost 2 queries (4 when the versions' n differ).
    assert len(sent) == 5 == data["queries_issued"]
    assert sum(q.startswith("sum by (") and q.split(" (count_over_time(")[0].endswith("model_version)")
               for q in sent) == 1
    assert sum(q.startswith("quantile_over_time(0.95,") and q.endswith("by (model_version)")
               for q in sent) == 1
    low, high = order_statistic_levels(1500, 0.95)
    assert sum(q.startswith(f"quantile_over_time({low!r},") and q.endswith("by (model_version)")
               for q in sent) == 1
    assert sum(q.startswith(f"quantile_over_time({high!r},") and q.endswith("by (model_version)")
               for q in sent) == 1
    regression = checks(data)["No latency regression after a model update"]
    cur_values, base_values = [x["latency_ms"] for x in v2], [x["latency_ms"] for x in v1]
    cur, base = p(cur_values, 0.95), p(base_values, 0.95)
    assert regression["value"] == pytest.approx(cur / base - 1, rel=1e-9)
    assert regression["verdict"] == "fail"
    # the intervals are the order statistics at the binomial bounds, and the evidence has every
    # query behind them
    (c_lo, c_hi), (b_lo, b_hi) = bounds(cur_values, 0.95), bounds(base_values, 0.95)
    assert regression["measured"].startswith(
        f"{cur:.1f} ms [{c_lo:.1f}, {c_hi:.1f}] vs {base:.1f} ms [{b_lo:.1f}, {b_hi:.1f}]")
    assert f"×{cur / base:.3f} [{c_lo / b_hi:.3f}, {c_hi / b_lo:.3f}]" in regression["measured"]
    assert len(regression["queries"]) == 4  # the count, the p95 and its two bounds
    assert set(regression["queries"]) <= set(sent)
    drift = checks(data)["No drift after a model update"]
    assert drift["verdict"] == "fail" and drift["n"] == 1500


def test_the_plan_and_the_log_file_agree_on_dirty_lines(loki, tmp_path):
    v1 = loggen.requests(1200, version="v1", server_errors=0.01, client_errors=0.05, seed=5)
    v2 = loggen.requests(1200, version="v2", latency_ms=(70, 30), seed=6, server_errors=0.003)
    for i, bad in enumerate(["n/a", "NaN", "Infinity", "-Infinity", -4, None, "", "1e999"]):
        v2[10 + i]["latency_ms"] = bad
    del v2[40]["latency_ms"]
    v2[50]["status_code"] = "oops"
    push(loki, v1 + v2)
    loggen.write(tmp_path / "logs.jsonl", v1 + v2)
    args = ["--model-version=v2", "--baseline-version=v1"]
    _, via_loki = run(tmp_path, f"--loki-url={loki.url}", *args)
    _, via_file = run(tmp_path, "--logs-file=logs.jsonl", *args)
    assert checks(via_loki).keys() == checks(via_file).keys()
    for name, check in checks(via_loki).items():
        other = checks(via_file)[name]
        assert (check["verdict"], check["n"], check["reason"]) == (other["verdict"], other["n"], other["reason"])
        assert check["value"] == pytest.approx(other["value"], rel=1e-9), name
    latency = checks(via_loki)["p99 latency"]
    usable = [x["latency_ms"] for x in v2 if isinstance(x.get("latency_ms"), int | float)
              and x["latency_ms"] >= 0]
    assert latency["n"] == len(usable) == 1200 - 9
    assert latency["value"] == pytest.approx(p(usable, 0.99), rel=1e-9)
    assert "9 line(s) without a usable latency_ms (a plain number ≥ 0) were left out" in latency["reason"]


# --- concurrency, retries, deadline ----------------------------------------------------------


def test_queries_run_concurrently_up_to_the_limit(loki, tmp_path):
    push(loki, loggen.requests(1200, version="v2"))
    loki.stall_next(0.5, times=2)
    _, concurrent = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2")
    assert loki.max_in_flight == 2
    with LokiDouble() as single:
        push(single, loggen.requests(1200, version="v2"))
        single.stall_next(0.2, times=2)
        _, serial = run(tmp_path, f"--loki-url={single.url}", "--model-version=v2",
                        "--loki-concurrency=1")
        assert single.max_in_flight == 1
    for name, check in checks(concurrent).items():
        assert (check["verdict"], check["n"], check["value"]) == \
            (checks(serial)[name]["verdict"], checks(serial)[name]["n"], checks(serial)[name]["value"])


def test_429_with_retry_after_while_queries_run_concurrently(loki, tmp_path):
    push(loki, loggen.requests(1200, version="v2"))
    _, clean = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2")
    loki.fail_next(429, times=3, retry_after=0)
    result, retried = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2")
    assert result.exit_code == 0, result.output
    assert checks(retried) == checks(clean)


def test_a_loki_that_keeps_failing_is_one_line_and_exit_2_within_the_deadline(loki, tmp_path):
    push(loki, loggen.requests(1200, version="v2"))
    loki.fail_next(503, times=10_000, retry_after=0)
    result, _ = run(tmp_path, f"--loki-url={loki.url}", "--model-version=v2", "--loki-timeout=1")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlobs: error: Loki at") and "HTTP 503" in line


def test_loki_concurrency_must_be_a_whole_number_above_zero(tmp_path):
    result, _ = run(tmp_path, "--loki-url=http://127.0.0.1:9", "--loki-concurrency=0")
    assert result.exit_code == 2
    assert "Invalid value for '--loki-concurrency'" in result.stderr and "0 is not in the range x>=1" in result.stderr


# --- long windows --------------------------------------------------------------------------

LONG = """
    Feature: a month
      Background:
        Given the logs of stream {namespace="openfaas-fn", function_name="pytorch-classifier"}
        And the window is the last "${WINDOW}"
      Scenario: volume
        Then there are at least 100 requests
      Scenario: errors
        Then the 5xx error rate is below 1 percent
      Scenario: latency
        Then the p99 latency is below 150 ms
"""


def _long(tmp_path, hours: int, per_hour: int = 300):
    lines = []
    for h in range(hours):
        lines += loggen.requests(per_hour, start=loggen.END - 3600 * (h + 1) + 1,
                                 end=loggen.END - 3600 * h - 1, seed=100 + h, server_errors=0.004)
    (tmp_path / "slo.feature").write_text(textwrap.dedent(LONG))
    return lines


def test_a_quantile_over_more_than_max_query_length_is_inconclusive_and_says_why(loki, tmp_path):
    lines = _long(tmp_path, 5)
    push(loki, lines)
    with LokiDouble(max_query_length_s=2 * 3600) as limited:
        push(limited, lines)
        result, data = run(tmp_path, f"--loki-url={limited.url}", "--features=slo.feature", "--window=5h")
    got = checks(data)
    assert got["volume"]["n"] == len(lines) and got["volume"]["verdict"] == "pass"  # counts: whole
    assert got["errors"]["value"] == sum(x["status_code"] >= 500 for x in lines) / len(lines)
    latency = got["latency"]
    assert latency["verdict"] == "inconclusive" and latency["n"] == len(lines)
    assert "Loki refuses a quantile over more than its max_query_length (2h)" in latency["reason"]
    assert "use a window of at most 2h" in latency["reason"]
    assert any("[5h]" in q for q in latency["queries"])  # the query Loki refused
    assert result.exit_code == 0


def test_counts_loki_refuses_as_too_long_are_summed_over_sub_windows(tmp_path):
    lines = _long(tmp_path, 5)
    with LokiDouble(max_query_length_s=2 * 3600, split_instant_queries=False) as limited:
        push(limited, lines)
        _, data = run(tmp_path, f"--loki-url={limited.url}", "--features=slo.feature", "--window=5h")
    got = checks(data)
    assert got["volume"]["n"] == len(lines)  # exactly: the sub-windows partition the window
    assert got["errors"]["value"] == sum(x["status_code"] >= 500 for x in lines) / len(lines)
    windows = sorted(q.split(") (count_over_time(")[1].rsplit("[", 1)[1] for q in got["volume"]["queries"])
    assert windows == ["1h]))", "2h] offset 2h))", "2h] offset 4h))"] or \
        windows == ["1h] offset 4h))", "2h] offset 2h))", "2h]))"]
    assert got["latency"]["verdict"] == "inconclusive"


def _plan_source(loki, **client):
    from mlobs.slo.source import LokiSource

    return LokiSource(LokiClient(loki.url, **client), loki.url, concurrency=1)


def _requests():
    from mlobs.slo.checks import CheckSettings, error_rate, latency_quantile
    from mlobs.slo.model import Scope

    scope = Scope('{namespace="openfaas-fn"}', "1h", 3600.0, loggen.END, "v1")
    return [*error_rate(scope, CheckSettings(), 1).requests,
            *latency_quantile(scope, CheckSettings(), 99, 150).requests]


@pytest.mark.parametrize("fault", ["client read timeout", "HTTP 504"])
def test_a_count_that_times_out_is_split_in_half_and_summed(loki, tmp_path, fault):
    from mlobs.slo.source import FileSource

    lines = loggen.requests(1500, server_errors=0.01, seed=8)
    push(loki, lines)
    loggen.write(tmp_path / "logs.jsonl", lines)
    if fault == "HTTP 504":
        loki.fail_next(504, body="request timed out, decrease the duration of the request")
        source = _plan_source(loki)
    else:
        loki.stall_next(3.0)
        source = _plan_source(loki, timeout=0.5)
    requests = _requests()
    source.prefetch(requests)
    expected = FileSource(tmp_path / "logs.jsonl")
    expected.prefetch(requests)
    for request in requests:
        got, want = source.get(request), expected.get(request)
        if hasattr(want, "groups"):
            assert got.groups == want.groups, request
        else:
            assert got.value == pytest.approx(want.value, rel=1e-9), request
    split = [q for q in queries_sent(loki) if "[30m]" in q]
    assert len(split) == 2 and sum("offset 30m" in q for q in split) == 1


def test_a_quantile_that_times_out_is_inconclusive_not_split(loki):
    from mlobs.slo.model import QuantileRequest, Scope

    push(loki, loggen.requests(1500, seed=9))
    request = QuantileRequest(Scope('{namespace="openfaas-fn"}', "1h", 3600.0, loggen.END), 0.99,
                              "latency_ms")
    loki.fail_next(504, body="request timed out")
    source = _plan_source(loki)
    source.prefetch([request])
    measured = source.get(request)
    assert measured.value is None and "timed out" in measured.note
    assert len(queries_sent(loki)) == 1


def test_too_many_series_for_one_query_falls_back_to_one_query_per_measurement(tmp_path):
    classes = {f"class {i}": 1 / 12 for i in range(12)}
    lines = loggen.requests(1500, classes=classes, server_errors=0.01, client_errors=0.02, seed=10)
    with LokiDouble(max_query_series=12) as loki:  # 12 classes + 400 + 500 = 14 merged groups
        push(loki, lines)
        (tmp_path / "slo.feature").write_text(textwrap.dedent("""
            Feature: many classes
              Background:
                Given the logs of stream {namespace="openfaas-fn"}
              Scenario: errors
                Then the 5xx error rate is below 2 percent
              Scenario: mix
                Then the share of class "class 3" is between 5 and 15 percent
        """))
        _, data = run(tmp_path, f"--loki-url={loki.url}", "--features=slo.feature")
        sent = queries_sent(loki)
    assert len(sent) == 3  # the merged count (refused), then one per measurement
    ok = [x for x in lines if x["status_code"] < 400]
    got = checks(data)
    assert got["mix"]["value"] == sum(x.get("top1_class") == "class 3" for x in ok) / len(ok)
    assert got["errors"]["value"] == sum(x["status_code"] >= 500 for x in lines) / len(lines)


# --- the original design's contracts ---------------------------------------------------------

ORIGINAL = REPO / "tests" / "features" / "original_design.feature"


def _traffic():
    a = loggen.requests(1000, version="v1.2.1", latency_ms=(70, 20), server_errors=0.003,
                        client_errors=0.02, pod="a", seed=11)
    b = loggen.requests(1000, version="v1.2.1", latency_ms=(90, 25), pod="b", seed=12)
    other = loggen.requests(500, version="v1.3.0", latency_ms=(400, 10), pod="a", seed=13)
    return a, b, other


def _check_original(data, lines):
    got = checks(data)
    assert list(got) == ["Inference latency stays within the SLO", "Server errors stay rare",
                         "The prediction mix has not drifted"]
    latency = got["Inference latency stays within the SLO"]
    assert latency["n"] == len(lines) and latency["window"] == "1h"
    assert latency["value"] == pytest.approx(p([x["latency_ms"] for x in lines], 0.99), rel=1e-9)
    errors = got["Server errors stay rare"]
    assert errors["value"] == sum(x["status_code"] >= 500 for x in lines) / len(lines)
    mix = got["The prediction mix has not drifted"]
    ok = [x for x in lines if x["status_code"] < 400]
    assert mix["value"] == sum(x.get("top1_class") == "golden retriever" for x in ok) / len(ok)
    assert [c["verdict"] for c in got.values()] == ["pass", "pass", "pass"]


def test_the_original_design_contract_runs_unchanged_over_a_log_file(tmp_path):
    a, b, other = _traffic()
    loggen.write(tmp_path / "logs.jsonl", a + b + other)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", f"--features={ORIGINAL}")
    assert result.exit_code == 0, result.output
    _check_original(data, a + b)


def test_the_original_design_contract_runs_unchanged_over_loki(loki, tmp_path):
    a, b, other = _traffic()
    push(loki, a + other, pod="a")
    push(loki, b, pod="b")
    # The file names http://loki.monitoring.svc.cluster.local:3100; the loki-url input wins.
    result, data = run(tmp_path, f"--loki-url={loki.url}", f"--features={ORIGINAL}")
    assert result.exit_code == 0, result.output
    _check_original(data, a + b)
    assert data["source"] == f"Loki {loki.url}"
    sent = queries_sent(loki)
    assert len(sent) == 2
    assert all('{namespace="openfaas-fn", function_name="pytorch-classifier"}' in q
               and 'model_version="v1.2.1"' in q for q in sent)


def test_a_loki_url_in_a_feature_file_is_used_only_without_the_input_and_without_credentials(tmp_path):
    a, b, _ = _traffic()
    text = ORIGINAL.read_text()
    with LokiDouble() as named, LokiDouble() as configured:
        for double in (named, configured):
            push(double, a, pod="a")
            push(double, b, pod="b")
        (tmp_path / "slo.feature").write_text(
            text.replace("http://loki.monitoring.svc.cluster.local:3100", named.url))
        secrets = ["--loki-username=bot", "--loki-tenant=team-a"]
        env = {"MLOBS_LOKI_PASSWORD": "s3cret"}
        result, data = run(tmp_path, f"--loki-url={configured.url}", "--features=slo.feature",
                           *secrets, env=env)
        assert result.exit_code == 0, result.output
        assert not queries_sent(named)  # the input wins
        assert all(r.headers.get("authorization", "").startswith("Basic ")
                   for r in configured.requests if r.path.endswith("/query"))

        result, data = run(tmp_path, "--features=slo.feature", *secrets, env=env)
        assert result.exit_code == 0, result.output
        _check_original(data, a + b)
        asked = [r for r in named.requests if r.path.endswith("/query")]
        assert asked and not any("authorization" in r.headers for r in asked)
        assert all(r.headers.get("x-scope-orgid") == "team-a" for r in asked)  # not a secret
        assert data["source"] == f"Loki {named.url}"


def test_a_loki_url_with_credentials_in_a_feature_file_is_refused(tmp_path):
    text = ORIGINAL.read_text().replace("http://loki.monitoring", "http://user:pw@loki.monitoring")
    (tmp_path / "slo.feature").write_text(text)
    result, _ = run(tmp_path, "--features=slo.feature")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlobs: error: bad contract at slo.feature:7: a Loki URL in a feature file")
    assert "pw" not in line


def test_without_any_source_the_error_says_where_one_can_come_from(tmp_path):
    (tmp_path / "slo.feature").write_text(
        "Feature: f\n  Scenario: s\n    Given the logs of stream {app=\"x\"}\n"
        "    Then the p99 latency is below 5 ms\n")
    result, _ = run(tmp_path, "--features=slo.feature")
    assert result.exit_code == 2
    assert "no log source: set loki-url" in result.stderr and "Given a Loki instance" in result.stderr


@pytest.mark.parametrize("written, window", [("30 minutes", "30m"), ("1 day", "1d"), ("2 hours", "2h"),
                                             ("90 seconds", "1m30s"), ("1.5 hours", "1h30m"),
                                             ("45m", "45m")])
def test_time_ranges_in_words(loki, tmp_path, written, window):
    push(loki, loggen.requests(300, version="v1.2.1"))
    text = ORIGINAL.read_text().replace('the last "1 hour"', f'the last "{written}"')
    (tmp_path / "slo.feature").write_text(text)
    _, data = run(tmp_path, f"--loki-url={loki.url}", "--features=slo.feature")
    assert {c["window"] for c in checks(data).values()} == {window}
    assert all(f"[{window}]" in q for q in queries_sent(loki))


def test_an_error_rate_over_successful_predictions_only_is_refused(tmp_path):
    text = ORIGINAL.read_text().replace("When we query the request logs", "When we query the successful prediction logs")
    (tmp_path / "slo.feature").write_text(text)
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(100, version="v1.2.1"))
    result, _ = run(tmp_path, "--features=slo.feature", "--logs-file=logs.jsonl")
    assert result.exit_code == 2
    assert "bad contract at slo.feature:17: an error rate over the successful prediction logs" in result.stderr


def test_every_step_declares_every_measurement_it_reads(loki, tmp_path):
    """A check that read a measurement its step did not declare would still be right, but would
    cost a query of its own after the plan: none does."""
    from mlobs.config import build_settings
    from mlobs.slo import mode
    from mlobs.slo.runner import collect_feature_files, run_features
    from mlobs.slo.session import Defaults

    push(loki, loggen.requests(1500, version="v2", seed=30) + loggen.requests(1500, version="v1", seed=31))
    (tmp_path / "all.feature").write_text(textwrap.dedent("""
        Feature: every check
          Background:
            Given the logs of stream {namespace="openfaas-fn"}
            And the model version is "v2"
            And at least 10 samples are required
          Scenario: all of them
            Then there are at least 10 requests
            And the p99 latency is below 500 ms
            And the p90 latency of successful requests is below 500 ms
            And the 5xx error rate is below 5 percent
            And the share of class "tabby cat" is between 1 and 99 percent
            And the prediction distribution does not drift from version "v1"
            And the p95 latency is at most 50 percent above version "v1"
    """))
    params = {"loki_url": loki.url, "window_end": END, "working_directory": str(tmp_path),
              "github_token": "", "features": ["all.feature"]}
    settings = build_settings("slo-validate", params, {})
    sources = mode.make_sources(settings)
    result = run_features(collect_feature_files(list(settings.features)), sources, dict(settings.variables),
                          Defaults(settings.selector, "1h", loggen.END), tmp_path,
                          baseline_version=None, end_text="")
    (source,) = sources.used()
    assert source.unplanned == 0
    assert [c.verdict.value for c in result.scenarios[0].checks] == ["pass"] * 7
    # one count for everything (both versions), the p99, the p90 of successful requests, the
    # p95 of both versions, and its two interval bounds (both versions have n = 1500)
    assert len(queries_sent(loki)) == source.queries_issued == 6


# --- the latency regression's intervals: a second round, as few queries as the levels ----------


REGRESSION = """
    Feature: latency regression
      Background:
        Given the logs of stream {namespace="openfaas-fn"}
        And the model version is "v2"
      Scenario: p95 vs v1
        Then the p95 latency is at most 20 percent above version "v1"
"""


def _regression(loki, tmp_path, *args):
    (tmp_path / "regression.feature").write_text(textwrap.dedent(REGRESSION))
    result, data = run(tmp_path, f"--loki-url={loki.url}", "--features=regression.feature", *args)
    return result, data, checks(data)["p95 vs v1"]


def test_versions_with_different_n_cost_four_bound_queries(loki, tmp_path):
    """n differs between the versions, so do their bounds' levels: one query per level, each
    filtered to its version — 2 (count, p95) + 4."""
    v1 = loggen.requests(1500, version="v1", latency_ms=(60, 10), seed=40)
    v2 = loggen.requests(1200, version="v2", latency_ms=(90, 15), seed=41)
    push(loki, v1 + v2)
    result, data, regression = _regression(loki, tmp_path)
    assert result.exit_code == 1 and regression["verdict"] == "fail"
    sent = queries_sent(loki)
    assert len(sent) == 6 == data["queries_issued"]
    for n, version in ((1200, "v2"), (1500, "v1")):
        for level in order_statistic_levels(n, 0.95):
            (query,) = [q for q in sent if q.startswith(f"quantile_over_time({level!r},")]
            assert f'model_version="{version}"' in query and query.endswith("by ()")
    (c_lo, c_hi) = bounds([x["latency_ms"] for x in v2], 0.95)
    (b_lo, b_hi) = bounds([x["latency_ms"] for x in v1], 0.95)
    assert c_lo / b_hi > 1.2  # even the favourable ends show more than +20 %
    assert f"[{c_lo / b_hi:.3f}, {c_hi / b_lo:.3f}]" in regression["measured"]
    assert "grew beyond +20% even at the favourable ends of both 95% intervals" in regression["reason"]


def test_an_increase_near_the_allowance_is_inconclusive_and_the_log_file_agrees(loki, tmp_path):
    """A true +20 % on +20 % allowed: the intervals straddle the allowance — inconclusive, where
    the point quantiles alone would pass or fail by chance. The log-file source computes the same
    order statistics from the values."""
    v1 = loggen.requests(1500, version="v1", latency_ms=(100, 20), seed=42)
    v2 = loggen.requests(1500, version="v2", latency_ms=(120, 24), seed=43)
    push(loki, v1 + v2)
    result, data, regression = _regression(loki, tmp_path)
    assert result.exit_code == 0 and regression["verdict"] == "inconclusive"
    assert "straddle +20%" in regression["reason"]
    (c_lo, c_hi) = bounds([x["latency_ms"] for x in v2], 0.95)
    (b_lo, b_hi) = bounds([x["latency_ms"] for x in v1], 0.95)
    assert c_lo / b_hi <= 1.2 < c_hi / b_lo
    loggen.write(tmp_path / "logs.jsonl", v1 + v2)
    (tmp_path / "regression.feature").write_text(textwrap.dedent(REGRESSION))
    _, from_file = run(tmp_path, "--logs-file=logs.jsonl", "--features=regression.feature")
    mine = checks(from_file)["p95 vs v1"]
    for key in ("verdict", "n", "measured", "reason"):
        assert mine[key] == regression[key], key
    assert mine["value"] == pytest.approx(regression["value"], rel=1e-12)


def test_significance_off_compares_the_point_quantiles_in_one_round(loki, tmp_path):
    v1 = loggen.requests(1500, version="v1", latency_ms=(100, 20), seed=42)
    v2 = loggen.requests(1500, version="v2", latency_ms=(120, 24), seed=43)
    push(loki, v1 + v2)
    result, data, regression = _regression(loki, tmp_path, "--significance=off")
    assert len(queries_sent(loki)) == 2 == data["queries_issued"]  # the count and the p95
    cur = p([x["latency_ms"] for x in v2], 0.95)
    base = p([x["latency_ms"] for x in v1], 0.95)
    assert regression["verdict"] == ("pass" if cur / base - 1 <= 0.2 else "fail")
    assert "point quantiles: significance off" in regression["reason"]


def test_significance_sets_the_intervals_confidence(loki, tmp_path):
    """significance 0.2: 80 % intervals, whose ranks are the binomial's 10 % tails."""
    v1 = loggen.requests(1500, version="v1", latency_ms=(100, 20), seed=42)
    v2 = loggen.requests(1500, version="v2", latency_ms=(120, 24), seed=43)
    push(loki, v1 + v2)
    _, _, regression = _regression(loki, tmp_path, "--significance=0.2")
    (c_lo, c_hi) = bounds([x["latency_ms"] for x in v2], 0.95, confidence=0.8)
    assert f"[{c_lo:.1f}, {c_hi:.1f}]" in regression["measured"]
    assert "80% intervals" in regression["threshold"]
