"""Nothing secret leaves the job: one redaction step on every surface (issue 10, item 1).

The end-to-end tests run the real CLI in a real process against the Loki and GitHub doubles and
then read every surface there is: each request body GitHub received (comment, check run,
annotations), the job summary, the step outputs, the results JSON and JUnit files, the dry-run
files, stdout (workflow commands) and stderr (the error line and log records).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

import loggen
from mlobs.github import markdown as md
from mlobs.loki import LokiClient
from mlobs.redact import RedactingFilter, Redactor, strip_userinfo
from servers.loki import LokiDouble

BIN = Path(sys.executable).parent
END = str(loggen.END)

CONTRACT = """
    Feature: classifier
      Scenario: latency
        Then the p99 latency is below 150 ms
      Scenario: errors
        Then the 5xx error rate is below 1 percent
"""


def mlobs(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    return subprocess.run([str(BIN / "mlobs"), *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=timeout)


def every_surface(workspace: Path, proc, github=None, gha_env=None) -> dict[str, str]:
    """Every text the run made visible to anyone, by surface."""
    surfaces = {"stdout": proc.stdout, "stderr": proc.stderr}
    for path in sorted((workspace / ".mlobs").rglob("*")):
        if path.is_file() and path.suffix in (".json", ".xml", ".md"):
            surfaces[str(path.relative_to(workspace))] = path.read_text(encoding="utf-8")
    if gha_env:
        surfaces["outputs"] = Path(gha_env["GITHUB_OUTPUT"]).read_text(encoding="utf-8")
        surfaces["summary"] = Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    if github is not None:
        for i, request in enumerate(github.requests):
            surfaces[f"request {i} {request.method} {request.path}"] = json.dumps(request.body)
        surfaces["github state"] = json.dumps(github.state.__dict__, default=str)
    return surfaces


def assert_nowhere(surfaces: dict[str, str], *secrets: str) -> None:
    for name, text in surfaces.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {name}"


@pytest.fixture
def loki():
    with LokiDouble() as double:
        yield double


def test_credentials_in_the_loki_url_reach_no_surface(loki, tmp_path, github, gha_env):
    loggen.push(LokiClient(loki.url), loggen.requests(1500, latency_ms=(200, 20)))
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "slo.feature").write_text(textwrap.dedent(CONTRACT).lstrip())
    host = loki.url.removeprefix("http://")
    url = f"http://ops-reader:Pa55-w0rd.x@{host}"
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    args = ["slo-validate", f"--working-directory={tmp_path}", "--features=features",
            f"--window-end={END}", f"--loki-url={url}"]

    proc = mlobs(*args, env=env)
    assert proc.returncode == 1, proc.stderr  # the latency SLO is violated: the run went through
    dry = mlobs(*args, "--dry-run", env=env)
    assert dry.returncode == 1, dry.stderr

    # the credentials went where they belong: Loki's Authorization header, nowhere else
    query = next(r for r in loki.requests if r.path.endswith("/query"))
    auth = {k.lower(): v for k, v in query.headers.items()}["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == "ops-reader:Pa55-w0rd.x"
    surfaces = every_surface(tmp_path, proc, github, gha_env)
    surfaces.update({f"dry-run {k}": v for k, v in every_surface(tmp_path, dry).items()})
    assert_nowhere(surfaces, "Pa55-w0rd", "ops-reader", quote("Pa55-w0rd.x"))
    # the source is still named, without its userinfo
    results = json.loads((tmp_path / ".mlobs" / "slo-results.json").read_text())
    assert results["source"] == f"Loki http://{host}"
    assert f"http://{host}" in github.state.issue_comments[7][0]["body"]
    assert {".mlobs/slo-junit.xml", ".mlobs/dry-run/slo-validate/comment.md"} <= {
        name.removeprefix("dry-run ") for name in surfaces}


def test_a_secret_that_a_contract_tries_to_print_is_masked(loki, tmp_path, github, gha_env):
    """A pull request can add a feature file; whatever it makes the action print, a secret input's
    value comes out as *** (on every surface, whether the name resolves or not)."""
    loggen.push(LokiClient(loki.url), loggen.requests(1200))
    token = "lk_" + "S3cr3tLokiToken" * 2
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "leak.feature").write_text(textwrap.dedent(f"""
        Feature: exfiltrate {token}
          Scenario: share of class "{token}" via ${{MLOBS_LOKI_TOKEN}} and ${{MLOBS_GITHUB_TOKEN}}
            Then the share of class "${{MLOBS_LOKI_TOKEN}}" is between 5 and 15 percent
          Scenario: second try {github.token}
            Then the share of class "{token}" is between 5 and 15 percent
    """).lstrip())
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token, MLOBS_LOKI_TOKEN=token)
    proc = mlobs("slo-validate", f"--working-directory={tmp_path}", "--features=features",
                 f"--window-end={END}", f"--loki-url={loki.url}", env=env)
    assert proc.returncode in (0, 1, 2), proc.stderr
    surfaces = every_surface(tmp_path, proc, github, gha_env)
    # the token is visible once per run by design: in the ::add-mask:: command that protects the log
    surfaces["stdout"] = "\n".join(line for line in proc.stdout.splitlines()
                                   if not line.startswith("::add-mask::"))
    assert_nowhere(surfaces, token, github.token, md.text(token))
    comment = github.state.issue_comments[7][0]["body"]
    assert "exfiltrate" in comment or "second try" in comment  # the run was reported
    assert "second try \\*\\*\\*" in comment or "second try ***" in comment


@pytest.mark.parametrize("option", ["github-token", "loki-token", "loki-password"])
def test_a_secret_with_a_line_break_is_refused_up_front(loki, tmp_path, github, gha_env, option):
    value = "ghp_abcdefgh\r\nX-Injected: yes"
    loggen.write(tmp_path / "logs.jsonl", loggen.requests(100))
    env = dict(gha_env, **{"MLOBS_" + option.upper().replace("-", "_"): value})
    if option != "github-token":
        env["MLOBS_GITHUB_TOKEN"] = github.token
    extra = ["--loki-username=u"] if option == "loki-password" else []
    proc = mlobs("slo-validate", f"--working-directory={tmp_path}", f"--loki-url={loki.url}",
                 f"--window-end={END}", *extra, env=env)

    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]
    assert len(errors) == 1 and option in errors[0] and "line break" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    surfaces = every_surface(tmp_path, proc, github, gha_env)
    surfaces["stdout"] = "\n".join(line for line in proc.stdout.splitlines()
                                   if not line.startswith("::add-mask::"))
    assert_nowhere(surfaces, "ghp_abcdefgh", "X-Injected", "abcdefgh")
    assert not [r for r in loki.requests if "query" in r.path]  # refused before any request
    assert "result=error" in surfaces["outputs"]


def test_credentials_of_a_bento_url_and_the_catalog_are_masked(tmp_path, gha_env, github):
    """evaluate: "could not reach the Bento at …" names the URL without its userinfo, and a
    catalog's secret-looking values are *** wherever they appear."""
    secret = "AKIA-very-secret-key-1"
    (tmp_path / "golden.csv").write_text("id,text,label\n1,good,positive\n2,bad,negative\n")
    catalog = (f"uri=sqlite:///{tmp_path}/cat.db,warehouse=file://{tmp_path}/wh,"
               f"s3.secret-access-key={secret},token=tok-zyxwvu")
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    proc = mlobs("evaluate", f"--working-directory={tmp_path}", "--dataset=golden.csv",
                 "--id-column=id", "--input-columns=text", f"--catalog={catalog}",
                 "--bento-url=http://ml-robot:B3nt0-pass@127.0.0.1:9", f"--model-version={secret}",
                 "--comment-key=tok-zyxwvu", env=env)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]
    assert len(error) == 1 and "could not reach the Bento at http://127.0.0.1:9" in error[0], proc.stderr
    surfaces = every_surface(tmp_path, proc, github, gha_env)
    surfaces["stdout"] = "\n".join(line for line in proc.stdout.splitlines()
                                   if not line.startswith("::add-mask::"))
    assert_nowhere(surfaces, "B3nt0-pass", "ml-robot", secret, "tok-zyxwvu")
    assert "could not evaluate" in github.state.issue_comments[7][0]["body"]


# ---- the step itself --------------------------------------------------------------------------

def test_every_form_a_secret_takes_on_a_surface_is_masked():
    secret = "p@ss|w_rd*<x>&\"é"
    redactor = Redactor([secret, "svc:" + secret])
    forms = {
        "raw": secret, "markdown": md.text(secret), "code span": md.code(secret),
        "url-encoded": quote(secret, safe=""), "json": json.dumps(secret)[1:-1],
        "json ascii": json.dumps(secret, ensure_ascii=True)[1:-1],
        "repr of bytes": repr(("Bearer " + secret).encode())[2:-1],
        "basic auth": base64.b64encode(f"svc:{secret}".encode()).decode(),
    }
    for name, form in forms.items():
        out = redactor.text(f"before {form} after")
        assert secret not in out and form not in out, name
        assert out.startswith("before ") and out.endswith(" after"), (name, out)


@pytest.mark.parametrize("shown,expected", [
    ("Loki https://user:pass@loki.example:3100/x", "Loki https://loki.example:3100/x"),
    ("at http://a:b@c@host/ and sc://u:p@spark:15002", "at http://host/ and sc://spark:15002"),
    ("[link](https://tok@github.example/x)", "[link](https://github.example/x)"),
    ('{"source": "Loki https://u:p@h"}', '{"source": "Loki https://h"}'),
    ("md: https://user:pass&#64;loki.example", "md: https://loki.example"),
    ("no credentials: https://loki.example/a@b", "no credentials: https://loki.example/a@b"),
    ("mail me: ops@example.com", "mail me: ops@example.com"),
])
def test_urls_lose_their_userinfo(shown, expected):
    assert strip_userinfo(shown) == expected
    assert Redactor().text(shown) == expected


def test_secrets_come_from_the_inputs_the_catalog_and_the_environment():
    params = {"github_token": "ghs_job_token", "loki_token": None, "loki_password": "hunter22",
              "loki_url": "https://reader:url-pass@loki.example", "bento_url": None,
              "catalog": "uri=postgresql://svc:db-pass@pg:5432/x,warehouse=s3://w,"
                         "s3.secret-access-key=AKIAXYZ,s3.access-key-id=AKID123,token=oauth-tok",
              "comment_key": "prod-key"}
    env = {"AWS_SECRET_ACCESS_KEY": "aws-secret-1", "PYICEBERG_CATALOG__PROD__CREDENTIAL": "c:s3cr",
           "PYICEBERG_CATALOG__PROD__URI": "https://rest.example", "HOME": "/root"}
    redactor = Redactor.from_inputs(params, env)
    for secret in ("ghs_job_token", "hunter22", "url-pass", "db-pass", "AKIAXYZ", "AKID123",
                   "oauth-tok", "aws-secret-1", "c:s3cr"):
        assert secret in redactor.secrets, secret
    assert not {"prod-key", "/root", "https://rest.example"} & redactor.secrets
    assert redactor.text("comment-key prod-key") == "comment-key prod-key"


def test_short_values_are_not_shredded_but_their_urls_still_lose_userinfo():
    redactor = Redactor(["pw"])
    assert redactor.text("upward pw http://u:pw@h") == "upward pw http://h"


def test_log_records_pass_the_step():
    from mlobs.cli import _redacted_logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with _redacted_logs(Redactor(["sekrit-value"])):
            log = logging.getLogger("mlobs.test")
            log.warning("retrying %s at %s", "sekrit-value", "https://u:p@loki.example")
            try:
                raise ValueError("bad header b'Bearer sekrit-value'")
            except ValueError:
                log.exception("failed")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "sekrit-value" not in text and "u:p@" not in text
    assert "retrying *** at https://loki.example" in text and "Bearer ***" in text


def test_redacting_filter_leaves_clean_records_alone():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d rows", (5,), None)
    assert RedactingFilter(Redactor(["abcdef"])).filter(record)
    assert record.getMessage() == "5 rows"
