"""slo-validate over a JSON-lines log file: verdicts, honest inconclusives, results files, exit codes."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli

END = str(loggen.END)


def feature(tmp_path, body: str, name: str = "slo.feature"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def run(tmp_path, *args, env=None):
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": "", **(env or {})}
    result = CliRunner().invoke(
        cli, ["slo-validate", f"--working-directory={tmp_path}", f"--window-end={END}",
              "--github-token=", *args], env=env, catch_exceptions=False)
    data = None
    results = tmp_path / ".mlobs" / "slo-results.json"
    if results.exists():
        data = json.loads(results.read_text())
    return result, data


def verdicts(data) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in data["scenarios"]}


CONTRACT = """
    Feature: pytorch-classifier
      Background:
        Given the logs of stream {namespace="openfaas-fn"}
        And the window is the last "1h"
        And the model version is "${MODEL_VERSION}"

      Scenario: latency
        Then the p99 latency is below 150 ms
      Scenario: errors
        Then the 5xx error rate is below 1 percent
      Scenario: mix
        Then the share of class "golden retriever" is between 5 and 15 percent
      Scenario: volume
        Then there are at least 1000 requests
"""


def test_a_healthy_service_passes(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(2000, latency_ms=(60, 10)))
    feature(tmp_path, CONTRACT)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 0, result.output
    assert verdicts(data) == {"latency": "pass", "errors": "pass", "mix": "pass", "volume": "pass"}
    latency = data["scenarios"][0]["checks"][0]
    assert latency["n"] == 2000 and latency["value"] < 150 and latency["line"] == 8


def test_slow_and_failing_service_fails_with_exit_1(tmp_path):
    loggen.write(tmp_path / "logs.jsonl",
                 loggen.requests(2000, latency_ms=(140, 30), server_errors=0.05))
    feature(tmp_path, CONTRACT)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 1
    assert verdicts(data)["latency"] == "fail" and verdicts(data)["errors"] == "fail"
    errors = data["scenarios"][1]["checks"][0]
    assert 0.04 < errors["value"] < 0.06
    assert "4xx client errors, not counted" in errors["reason"]


def test_client_errors_are_not_server_errors(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(2000, client_errors=0.2))
    feature(tmp_path, CONTRACT)
    _, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    errors = data["scenarios"][1]["checks"][0]
    assert errors["verdict"] == "pass" and errors["value"] == 0
    assert "4xx client errors" in errors["reason"]


def test_too_few_samples_for_a_p99_is_inconclusive_not_a_pass(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(37, latency_ms=(20, 1)))
    feature(tmp_path, CONTRACT)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    latency = data["scenarios"][0]["checks"][0]
    assert latency["verdict"] == "inconclusive"
    assert latency["reason"].startswith("n=37 < 1000 needed for a p99")
    assert result.exit_code == 1  # volume fails: 37 < 1000


ERRORS_ONLY = """
    Feature: f
      Scenario: errors
        Given the logs of stream {namespace="x"}
        Then the 5xx error rate is below 1 percent
"""


def test_a_window_with_no_line_in_it_could_not_be_evaluated_and_says_why(tmp_path):
    # Every line is two hours before the window: "0 requests" would be a lie about the service.
    lines = loggen.requests(500, start=loggen.END - 9000, end=loggen.END - 7200)
    path = tmp_path / "logs.jsonl"
    loggen.write(path, lines)
    with path.open("a") as fh:
        fh.write("Traceback (most recent call last): not json\n")
        fh.write(json.dumps({**lines[0], "timestamp": "yesterday"}) + "\n")
    feature(tmp_path, ERRORS_ONLY)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlobs: error: logs-file logs.jsonl: no line to evaluate in the window")
    assert "502 line(s) read, 0 in the window; skipped 1 not JSON, 1 without a valid timestamp, " \
           "500 outside the window" in line


@pytest.mark.parametrize("content", ["", "\n\n", "not json\n[1, 2]\n\"a string\"\n",
                                     '{"timestamp": "2026-11-24T10:00:00", "status_code": 200}\n'])
def test_an_empty_or_unreadable_log_file_could_not_be_evaluated(tmp_path, content):
    (tmp_path / "logs.jsonl").write_text(content)
    feature(tmp_path, CONTRACT)
    result, _ = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 2  # not "0 requests" → a violation of "at least 1000 requests"
    (line,) = result.stderr.strip().splitlines()
    read = len([x for x in content.splitlines() if x.strip()])
    assert f"{read} line(s) read, 0 in the window" in line


def test_skipped_lines_are_counted_in_the_evidence(tmp_path):
    lines = loggen.requests(1200)
    early = loggen.requests(7, start=loggen.END - 9000, end=loggen.END - 7200, seed=5)
    path = tmp_path / "logs.jsonl"
    loggen.write(path, lines + early)
    with path.open("a") as fh:
        fh.write("{not json\n" * 3)
        fh.write(json.dumps({**lines[0], "timestamp": None}) + "\n")
        fh.write(json.dumps({**lines[0], "timestamp": "2026-13-45T99:00:00Z"}) + "\n")
    feature(tmp_path, CONTRACT)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    evidence = "1212 line(s) read, 1200 in the window; skipped 3 not JSON, 2 without a valid " \
               "timestamp, 7 outside the window"
    for scenario in data["scenarios"]:
        assert all(evidence in query for query in scenario["checks"][0]["queries"]), scenario


def test_non_numeric_latency_lines_are_left_out_and_counted(tmp_path):
    lines = loggen.requests(1200)
    lines[5]["latency_ms"] = "n/a"
    lines[6]["latency_ms"] = None
    lines[7].pop("latency_ms")
    path = tmp_path / "logs.jsonl"
    loggen.write(path, lines)
    with path.open("a") as fh:
        fh.write("Traceback (most recent call last): not json\n")
    feature(tmp_path, CONTRACT)
    _, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    latency = data["scenarios"][0]["checks"][0]
    assert latency["n"] == 1197
    # "n/a", null and a missing field: none of them is a latency the p99 can use
    assert "3 line(s) without a usable latency_ms (a plain number ≥ 0) were left out" in latency["reason"]


def test_model_version_filters_and_a_quote_cannot_escape(tmp_path):
    lines = loggen.requests(1500, version="v1", latency_ms=(40, 5)) + \
        loggen.requests(1500, version='v2"} or {x="', latency_ms=(400, 5), seed=2)
    loggen.write(tmp_path / "logs.jsonl", lines)
    feature(tmp_path, CONTRACT)
    _, v1 = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature", "--model-version=v1")
    assert v1["scenarios"][0]["checks"][0]["n"] == 1500
    assert verdicts(v1)["latency"] == "pass"
    _, v2 = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature",
                '--model-version=v2"} or {x="')
    assert verdicts(v2)["latency"] == "fail"
    assert v2["scenarios"][0]["checks"][0]["n"] == 1500


def test_drift_and_latency_regression_against_a_baseline(tmp_path):
    v1 = loggen.requests(2000, version="v1", latency_ms=(50, 5))
    v2 = loggen.requests(2000, version="v2", latency_ms=(80, 5), seed=3,
                         classes={"golden retriever": 0.4, "labrador retriever": 0.3, "tabby cat": 0.3})
    loggen.write(tmp_path / "logs.jsonl", v1 + v2)
    feature(tmp_path, """
        Feature: update
          Background:
            Given the logs of stream {namespace="openfaas-fn"}
            And the model version is "${MODEL_VERSION}"
          Scenario: drift
            Then the prediction distribution does not drift from version "${BASELINE_VERSION}"
          Scenario: regression
            Then the p95 latency is at most 20 percent above version "${BASELINE_VERSION}"
    """)
    same, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature",
                     "--model-version=v1", "--baseline-version=v1")
    assert verdicts(data) == {"drift": "pass", "regression": "pass"}
    moved, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature",
                      "--model-version=v2", "--baseline-version=v1")
    assert moved.exit_code == 1
    assert verdicts(data) == {"drift": "fail", "regression": "fail"}
    drift = data["scenarios"][0]["checks"][0]
    assert drift["value"] > 0.1 and "p=" in drift["measured"]


def test_missing_baseline_is_inconclusive_naming_the_variable(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(300))
    feature(tmp_path, """
        Feature: update
          Scenario: drift
            Given the logs of stream {namespace="openfaas-fn"}
            Then the prediction distribution does not drift from version "${BASELINE_VERSION}"
    """)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature",
                       env={"BASELINE_VERSION": ""} if False else None)
    check = data["scenarios"][0]["checks"][0]
    assert check["verdict"] == "inconclusive" and "${BASELINE_VERSION} is not set" in check["reason"]
    assert result.exit_code == 0


def test_undefined_step_is_an_error_naming_the_line(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(100))
    feature(tmp_path, """
        Feature: f
          Scenario: typo
            Given the logs of stream {namespace="openfaas-fn"}
            Then the p99 latncy is below 150 ms
    """)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 2
    scenario = data["scenarios"][0]
    assert scenario["verdict"] == "error"
    assert "undefined step 'Then the p99 latncy is below 150 ms' at slo.feature:4" in scenario["error"]


def test_malformed_feature_file_is_one_clear_line_and_exit_2(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(10))
    feature(tmp_path, "Feature: f\n  Scenario: a\n    Then the p99 latency is below 1 ms\n  Examples: oops\n    | a |\n")
    result, _ = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error: malformed feature file slo.feature")


@pytest.mark.parametrize("args,message", [
    (["--features=slo.feature"], "no log source: set loki-url"),
    (["--logs-file=missing.jsonl", "--features=slo.feature"], "logs-file"),
    (["--logs-file=logs.jsonl", "--features=nope/"], "features path"),
    (["--logs-file=logs.jsonl", "--features=slo.feature", "--window=an hour"], "an hour"),
    (["--logs-file=logs.jsonl", "--features=slo.feature", "--vars=JUSTANAME"], "NAME=VALUE"),
])
def test_bad_inputs_are_one_line_exit_2(tmp_path, args, message):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(10))
    feature(tmp_path, CONTRACT)
    result, _ = run(tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error:") and message in lines[0]


def test_results_json_junit_and_outputs(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(2000, latency_ms=(300, 10)))
    feature(tmp_path, CONTRACT)
    output, summary = tmp_path / "out.txt", tmp_path / "summary.md"
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--features=slo.feature",
                       env={"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs["result"] == "fail" and outputs["violations"] == "1"
    assert outputs["summary-json"].endswith(".mlobs/slo-results.json")
    assert data["schema"] == "mlobs.slo-results/1" and data["verdict"] == "fail"
    junit = (tmp_path / ".mlobs" / "slo-junit.xml").read_text()
    assert 'failures="1"' in junit and 'name="latency"' in junit
    text = summary.read_text()
    assert "❌ fail" in text and "| 2000 |" in text and "`slo.feature:8`" in text


def test_bundled_features_run_by_default(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(1500, latency_ms=(60, 10)))
    result, data = run(tmp_path, "--logs-file=logs.jsonl")
    names = verdicts(data)
    assert names["p99 latency"] == "pass" and names["Server errors"] == "pass"
    assert names["No drift after a model update"] == "inconclusive"  # no baseline-version given
    assert result.exit_code == 0
