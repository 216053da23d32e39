"""Contracts a pull request can bring: placeholders that must not reach secrets, numbers that
cannot mean anything, and latencies no quantile can use."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli
from mlobs.loki import LokiClient
from servers.loki import LokiDouble

END = str(loggen.END)


def run(tmp_path, *args, env=None):
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": "", **(env or {})}
    result = CliRunner().invoke(cli, ["slo-validate", f"--working-directory={tmp_path}",
                                      f"--window-end={END}", "--github-token=",
                                      "--features=slo.feature", *args], env=env,
                                catch_exceptions=False)
    path = tmp_path / ".mlobs" / "slo-results.json"
    return result, (json.loads(path.read_text()) if path.exists() else None)


def feature(tmp_path, body: str) -> None:
    (tmp_path / "slo.feature").write_text(textwrap.dedent(body).lstrip())


# --- ${NAME} resolves from the inputs, vars and SLO_* only ------------------------------------

SECRETS = {"MLOBS_GITHUB_TOKEN": "ghp_secretvalue0001", "GITHUB_TOKEN": "ghs_secretvalue0002",
           "MLOBS_LOKI_PASSWORD": "hunter2-secret-0003", "HOME": "/root"}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_the_environment_never_fills_a_placeholder(tmp_path, name):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(300))
    feature(tmp_path, f"""
        Feature: exfiltration
          Scenario: leak
            Given the logs of stream {{namespace="openfaas-fn"}}
            Then the share of class "${{{name}}}" is between 5 and 15 percent
    """)
    output, summary = tmp_path / "out.txt", tmp_path / "summary.md"
    result, data = run(tmp_path, "--logs-file=logs.jsonl",
                       env={**SECRETS, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)})
    check = data["scenarios"][0]["checks"][0]
    assert check["verdict"] == "inconclusive"
    assert check["reason"].startswith(f"${{{name}}} is not set")
    everything = "\n".join([result.output, json.dumps(data), summary.read_text(), output.read_text(),
                            (tmp_path / ".mlobs" / "slo-junit.xml").read_text()])
    assert SECRETS[name] not in everything


def test_slo_variables_vars_and_inputs_do_fill_placeholders(tmp_path):
    lines = loggen.requests(1200, version="v7")
    loggen.write(tmp_path / "logs.jsonl", lines)
    feature(tmp_path, """
        Feature: values
          Background:
            Given the logs of stream {namespace="openfaas-fn"}
            And the model version is "${MODEL_VERSION}"
          Scenario: from SLO_ variables
            Then the share of class "${SLO_CLASS}" is between 5 and 15 percent
          Scenario: from vars
            Then the share of class "${FROM_VARS}" is between 20 and 40 percent
    """)
    result, data = run(tmp_path, "--logs-file=logs.jsonl", "--model-version=v7",
                       "--vars=FROM_VARS=labrador retriever", env={"SLO_CLASS": "golden retriever"})
    golden, labrador = (s["checks"][0] for s in data["scenarios"])
    ok = [x for x in lines if x["status_code"] < 400]
    assert golden["name"] == "share of 'golden retriever'" and labrador["name"] == "share of 'labrador retriever'"
    assert golden["value"] == sum(x["top1_class"] == "golden retriever" for x in ok) / len(ok)
    assert labrador["value"] == sum(x["top1_class"] == "labrador retriever" for x in ok) / len(ok)
    assert golden["n"] == len(ok)  # ${MODEL_VERSION} came from the input: v7's lines
    assert result.exit_code == 0


# --- contracts that cannot mean anything -------------------------------------------------------

BAD = [
    ("Then the p99 latency is below inf ms", "the latency threshold (ms) must be a finite number"),
    ("Then the p99 latency is below nan ms", "the latency threshold (ms) must be a finite number"),
    ("Then the p99 latency is below -5 ms", "the latency threshold (ms) must be at least 0"),
    ("Then the p0 latency is below 150 ms", "a percentile must be between 0 and 100 (exclusive), got p0"),
    ("Then the p150 latency is below 150 ms", "got p150"),
    ("Then the p100 latency is below 150 ms", "got p100"),
    ("Then the p99 latency should be below inf ms", "must be a finite number"),
    ("Then the 5xx error rate is below nan percent", "the error-rate threshold (percent) must be a finite"),
    ("Then the 5xx error rate is below -1 percent", "must be at least 0"),
    ('Then the share of class "cat" is between 90 and 10 percent', "the band 90–10 percent is inverted"),
    ('Then the share of class "cat" is between -5 and 10 percent', "lower bound must be at least 0"),
    ('Then the share of class "cat" is between 5 and inf percent', "upper bound must be a finite number"),
    ('Then the p0 latency is at most 20 percent above version "${BASELINE_VERSION}"', "got p0"),
    ('Then the p95 latency is at most -20 percent above version "v1"', "allowed increase"),
    ("Then there are at least -5 requests", "the minimum number of requests must be at least 0"),
]


@pytest.mark.parametrize("step, message", BAD)
def test_a_contract_that_cannot_mean_anything_is_one_line_naming_file_and_line(tmp_path, step, message):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(300))
    feature(tmp_path, f"""
        Feature: contracts
          Background:
            Given the logs of stream {{namespace="openfaas-fn"}}
          Scenario: fine
            Then the 5xx error rate is below 1 percent
          Scenario: nonsense
            {step}
    """)
    result, data = run(tmp_path, "--logs-file=logs.jsonl")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlobs: error: bad contract at slo.feature:7: ")
    assert message in line
    # Nothing was evaluated: the results file is an error record with the same line, no numbers.
    assert data == {"schema": "mlobs.error/1", "mode": "slo-validate", "verdict": "error",
                    "error": line.removeprefix("mlobs: error: ")}


def test_every_bad_contract_is_counted_in_the_one_line(tmp_path):
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(300))
    feature(tmp_path, """
        Feature: contracts
          Background:
            Given the logs of stream {namespace="openfaas-fn"}
          Scenario: one
            Then the p0 latency is below 5 ms
          Scenario: two
            Then the share of class "cat" is between 20 and 10 percent
    """)
    result, _ = run(tmp_path, "--logs-file=logs.jsonl")
    assert result.exit_code == 2
    assert "bad contract at slo.feature:5:" in result.stderr and "(and 1 more)" in result.stderr


# --- latencies no quantile can use ---------------------------------------------------------------

UNUSABLE = ["Infinity", "-Infinity", "NaN", -5, -0.5, "inf", "n/a", None, "", "1e999"]


def _lines_with_unusable_latencies():
    lines = loggen.requests(1500, latency_ms=(60, 10), seed=21)
    for i, value in enumerate(UNUSABLE):
        lines[100 * i + 7]["latency_ms"] = value
    usable = [x["latency_ms"] for x in lines
              if isinstance(x["latency_ms"], int | float) and math.isfinite(x["latency_ms"])
              and x["latency_ms"] >= 0]
    return lines, usable


CONTRACT = """
    Feature: latency
      Scenario: p99
        Given the logs of stream {namespace="openfaas-fn", function_name="pytorch-classifier"}
        Then the p99 latency is below 150 ms
"""


def _assert_dropped(data, usable):
    check = data["scenarios"][0]["checks"][0]
    assert check["verdict"] == "pass"  # not FAIL "nan ms" or "inf ms"
    assert check["n"] == len(usable) == 1500 - len(UNUSABLE)
    assert check["value"] == pytest.approx(float(np.quantile(usable, 0.99)), rel=1e-9)
    assert (f"{len(UNUSABLE)} line(s) without a usable latency_ms (a plain number ≥ 0) were left out"
            in check["reason"])


def test_infinite_nan_and_negative_latencies_are_left_out_and_counted_in_a_log_file(tmp_path):
    lines, usable = _lines_with_unusable_latencies()
    loggen.write(tmp_path / "logs.jsonl", lines)
    feature(tmp_path, CONTRACT)
    _, data = run(tmp_path, "--logs-file=logs.jsonl")
    _assert_dropped(data, usable)


def test_infinite_nan_and_negative_latencies_are_left_out_and_counted_over_loki(tmp_path):
    lines, usable = _lines_with_unusable_latencies()
    feature(tmp_path, CONTRACT)
    with LokiDouble() as loki:
        loggen.push(LokiClient(loki.url), lines)
        _, data = run(tmp_path, f"--loki-url={loki.url}")
    _assert_dropped(data, usable)
