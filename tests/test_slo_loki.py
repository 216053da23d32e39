"""slo-validate against the Loki double over real HTTP, and reported to the GitHub double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli
from mlobs.loki import LokiClient
from servers.loki import LokiDouble

REPO = Path(__file__).resolve().parents[1]
END = str(loggen.END)
SELECTOR = '{namespace="openfaas-fn", function_name="pytorch-classifier"}'

CONTRACT = """
    Feature: pytorch-classifier in production
      Background:
        Given the logs of stream ${SELECTOR}
        And the window is the last "1h"
        And the model version is "${MODEL_VERSION}"

      Scenario: latency
        Then the p99 latency is below 150 ms
      Scenario: errors
        Then the 5xx error rate is below 1 percent
      Scenario: mix
        Then the share of class "golden retriever" is between 5 and 15 percent
      Scenario: drift
        Then the prediction distribution does not drift from version "${BASELINE_VERSION}"
"""


@pytest.fixture
def loki():
    with LokiDouble() as double:
        yield double


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "slo.feature").write_text(textwrap.dedent(CONTRACT).lstrip())
    return tmp_path


def push(loki, lines, pod="a"):
    loggen.push(LokiClient(loki.url), lines, pod=pod)


def run(workspace, *args, env=None):
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": "", **(env or {})}
    result = CliRunner().invoke(cli, ["slo-validate", f"--working-directory={workspace}",
                                      f"--window-end={END}", "--features=features", *args],
                                env=env, catch_exceptions=False)
    path = workspace / ".mlobs" / "slo-results.json"
    return result, (json.loads(path.read_text()) if path.exists() else None)


def checks(data) -> dict[str, dict]:
    return {s["name"]: s["checks"][0] for s in data["scenarios"] if s["checks"]}


def test_p99_is_over_both_replicas_not_one_pods_series(loki, workspace):
    fast = loggen.requests(900, latency_ms=(50, 5), pod="a", seed=1)
    slow = loggen.requests(900, latency_ms=(300, 20), pod="b", seed=2)
    push(loki, fast, pod="a")
    push(loki, slow, pod="b")
    _, data = run(workspace, f"--loki-url={loki.url}")
    latency = checks(data)["latency"]
    every = [line["latency_ms"] for line in fast + slow]
    assert latency["n"] == 1800
    assert latency["value"] == pytest.approx(np.quantile(every, 0.99), rel=1e-9)
    assert latency["verdict"] == "fail"
    assert any("by ()" in q for q in latency["queries"])


def test_file_and_loki_sources_agree_on_the_same_lines(loki, workspace):
    v1 = loggen.requests(1500, version="v1", server_errors=0.004, client_errors=0.05, seed=4)
    v2 = loggen.requests(1500, version="v2", latency_ms=(90, 30), seed=5,
                         classes={"golden retriever": 0.2, "labrador retriever": 0.3, "tabby cat": 0.5})
    v2[3]["latency_ms"] = "n/a"
    push(loki, v1 + v2)
    loggen.write(workspace / "logs.jsonl", v1 + v2)
    args = ["--model-version=v2", "--baseline-version=v1"]
    _, via_loki = run(workspace, f"--loki-url={loki.url}", *args)
    _, via_file = run(workspace, "--logs-file=logs.jsonl", *args)
    for name, check in checks(via_loki).items():
        other = checks(via_file)[name]
        assert (check["verdict"], check["n"]) == (other["verdict"], other["n"]), name
        assert check["value"] == pytest.approx(other["value"], rel=1e-9), name
        assert check["reason"] == other["reason"], name


def test_429_twice_then_success(loki, workspace):
    push(loki, loggen.requests(1200))
    loki.fail_next(429, times=2, retry_after=0)
    result, data = run(workspace, f"--loki-url={loki.url}")
    assert result.exit_code == 0, result.output
    assert checks(data)["latency"]["verdict"] == "pass"
    statuses = [r for r in loki.requests if r.path.endswith("/query")]
    assert len(statuses) >= 3  # two refused, then the same query again


def test_loki_down_is_exit_2_with_one_clear_line(workspace):
    with LokiDouble() as gone:
        url = gone.url
    result, _ = run(workspace, f"--loki-url={url}", "--loki-timeout=1")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mlobs: error:") and url in lines[0]


def test_a_loki_400_quotes_the_message_and_the_query(loki, workspace):
    (workspace / "features" / "slo.feature").write_text(textwrap.dedent("""
        Feature: f
          Scenario: bad field
            Given the logs of stream {namespace="openfaas-fn"}
            And the latency field is "latency-ms"
            Then the p99 latency is below 150 ms
    """))
    result, data = run(workspace, f"--loki-url={loki.url}")
    assert result.exit_code == 2
    assert "latency-ms" in data["scenarios"][0]["error"]


def test_hostile_model_version_cannot_change_the_query(loki, workspace):
    push(loki, loggen.requests(1200, version="v1", latency_ms=(400, 5)))
    _, data = run(workspace, f"--loki-url={loki.url}", '--model-version=v1"} or {x="')
    latency = checks(data)["latency"]
    assert latency["verdict"] == "inconclusive" and latency["n"] == 0  # matched nothing, not v1
    assert 'model_version="v1\\"} or {x=\\""' in latency["queries"][0]


def test_identical_measurements_are_queried_once(loki, workspace):
    push(loki, loggen.requests(1200, version="v2"))
    push(loki, loggen.requests(1200, version="v1", seed=9), pod="b")
    (workspace / "features" / "more.feature").write_text(textwrap.dedent("""
        Feature: the same numbers again
          Background:
            Given the logs of stream ${SELECTOR}
            And the model version is "${MODEL_VERSION}"
          Scenario: errors again
            Then the 5xx error rate is below 1 percent
          Scenario: volume
            Then there are at least 100 requests
    """))
    _, data = run(workspace, f"--loki-url={loki.url}", "--model-version=v2", "--baseline-version=v1")
    queries = [r.params["query"] for r in loki.requests if r.path.endswith("/query")]
    assert len(queries) == len(set(queries)) == data["queries_issued"]


def test_auth_and_tenant_reach_loki(loki, workspace):
    push(loki, loggen.requests(10))
    run(workspace, f"--loki-url={loki.url}", "--loki-tenant=team-a", "--loki-username=u",
        env={"MLOBS_LOKI_PASSWORD": "p"})
    query = next(r for r in loki.requests if r.path.endswith("/query"))
    headers = {k.lower(): v for k, v in query.headers.items()}
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["authorization"] == "Basic dTpw"


def test_full_github_report_through_the_cli(loki, workspace, github, gha_env):
    push(loki, loggen.requests(1500, latency_ms=(200, 20), version="v2"))
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    result, data = run(workspace, f"--loki-url={loki.url}", "--model-version=v2", env=env)
    assert result.exit_code == 1

    comment = github.state.issue_comments[7][0]["body"]
    assert "SLO validation: 1 fail, 1 inconclusive, 2 pass of 4 scenarios" in comment
    assert "| ❌ fail | latency |" in comment and "`features/slo.feature:8`" in comment
    run_ = next(iter(github.state.check_runs.values()))
    assert run_["conclusion"] == "failure" and run_["head_sha"] == "a" * 40
    failures = [a for a in run_["output"]["annotations"] if a["annotation_level"] == "failure"]
    assert [(a["path"], a["start_line"]) for a in failures] == [("features/slo.feature", 8)]
    assert "quantile_over_time" in failures[0]["raw_details"]
    outputs = Path(gha_env["GITHUB_OUTPUT"]).read_text()
    assert "result=fail" in outputs and "violations=1" in outputs
    assert "latency" in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()

    run(workspace, f"--loki-url={loki.url}", "--model-version=v2", env=env)  # a second run
    assert len(github.state.issue_comments[7]) == 1  # edited in place


def test_403_on_comments_keeps_summary_and_the_modes_exit_code(loki, workspace, github, gha_env):
    push(loki, loggen.requests(1500, latency_ms=(200, 20)))
    github.refuse("POST", r"/issues/\d+/comments$")
    github.refuse("POST", r"/check-runs$")
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    result, _ = run(workspace, f"--loki-url={loki.url}", env=env)
    assert result.exit_code == 1  # the SLO verdict, not the API refusal
    assert result.stdout.count("::warning::") == 1
    assert "::error file=features/slo.feature,line=8," in result.stdout
    assert "❌ fail" in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert f"::add-mask::{github.token}" in result.stdout
    assert result.stdout.count(github.token) == 1  # only inside the mask command


def test_action_inputs_reach_the_cli_through_the_entrypoint(loki, workspace, tmp_path):
    push(loki, loggen.requests(1200))
    output = tmp_path / "gh_output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update({
        "INPUT_MODE": "slo-validate",
        "INPUT_LOKI-URL": loki.url,  # hyphen kept, as the runner passes it
        "INPUT_WORKING-DIRECTORY": str(workspace),
        "INPUT_FEATURES": "features",
        "INPUT_WINDOW-END": END,
        "INPUT_FAIL-ON": "violation",
        "INPUT_LOKI-TENANT": "ops",
        "INPUT_GITHUB-TOKEN": "",
        "INPUT_DATASET": "",
        "GITHUB_OUTPUT": str(output),
    })
    proc = subprocess.run([sys.executable, str(REPO / "entrypoint.py")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    queried = [r for r in loki.requests if r.path.endswith("/query")]
    assert queried and all({k.lower(): v for k, v in r.headers.items()}["x-scope-orgid"] == "ops"
                           for r in queried)
    # drift has no baseline-version here: inconclusive, which fail-on: violation lets through
    assert "result=inconclusive" in output.read_text()
    verdicts = {s["name"]: s["verdict"] for s in json.loads((workspace / ".mlobs/slo-results.json").read_text())["scenarios"]}
    assert verdicts == {"latency": "pass", "errors": "pass", "mix": "pass", "drift": "inconclusive"}


def test_empty_window_over_loki_is_inconclusive_and_exit_2_when_asked(loki, workspace):
    push(loki, loggen.requests(500, start=loggen.END - 9000, end=loggen.END - 7200))
    default, data = run(workspace, f"--loki-url={loki.url}")
    assert default.exit_code == 0
    assert {s["verdict"] for s in data["scenarios"]} == {"inconclusive"}
    strict, _ = run(workspace, f"--loki-url={loki.url}", "--fail-on=inconclusive")
    assert strict.exit_code == 2


def test_verdicts_link_to_grafana_explore_with_the_exact_query(loki, workspace):
    from urllib.parse import parse_qs, urlsplit

    push(loki, loggen.requests(1200))
    _, data = run(workspace, f"--loki-url={loki.url}", "--grafana-url=https://grafana.example/",
                  "--dry-run")
    latency = checks(data)["latency"]
    state = json.loads(parse_qs(urlsplit(latency["explore_urls"][0]).query)["left"][0])
    assert latency["explore_urls"][0].startswith("https://grafana.example/explore?left=")
    assert state["queries"][0]["expr"] == latency["queries"][0]
    assert int(state["range"]["to"]) == int(loggen.END * 1000)
    comment = (workspace / ".mlobs" / "dry-run" / "slo-validate" / "comment.md").read_text()
    assert f"[Open in Grafana Explore]({latency['explore_urls'][0]})" in comment


def test_loki_down_is_reported_to_github_as_could_not_evaluate(workspace, github, gha_env):
    with LokiDouble() as gone:
        url = gone.url
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    result, _ = run(workspace, f"--loki-url={url}", "--loki-timeout=1", env=env)
    assert result.exit_code == 2
    comment = github.state.issue_comments[7][0]["body"]
    assert "could not evaluate" in comment and url in comment
    run_ = next(iter(github.state.check_runs.values()))
    assert run_["conclusion"] == "failure"
    assert "result=error" in Path(gha_env["GITHUB_OUTPUT"]).read_text()
