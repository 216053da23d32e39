"""Every mode, hostile values in every input that reaches a surface, every surface checked
(issue 10, item 3).

The Markdown the action sends is rendered with GitHub's own renderer (cmark-gfm, raw HTML let
through so nothing is hidden by a sanitizer) and the HTML is audited: only the tags the action
itself writes, no HTML comment but the sticky marker, every <details> closed, links only to
http(s) URLs, no live @mention in any text GitHub would scan, and each hostile value still shown
as the literal text it is. Plain-text surfaces are checked for GitHub's limits; workflow commands
and step outputs for injected lines.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import pytest
import yaml
from cmarkgfm.cmark import Options

import lakegen
import loggen
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EVALUATION = REPO / "evaluation"
OUTPUTS = set(yaml.safe_load((REPO / "action.yml").read_text())["outputs"])
END = str(loggen.END)

# One per input, so each can be found again; all of them one line (versions must be).
VERSION = "v2 <img src=x onerror=alert(1)> @acme/sre <!-- hide the verdict </details> **bold**"
BASELINE = "v1 <script>alert(2)</script> @acme/ml [x](javascript:alert(2)) | cell"
KEY = "prod <img src=k onerror=alert(3)> @acme/key\n::warning::injected\nresult=pass"
SCENARIO = "p99 <img src=s onerror=alert(4)> @acme/scenario <!-- x"
FEATURE = "Evil feature <script>alert(5)</script> @acme/feature"
CLASS = "<b>tabby</b> @acme/cats ~~x~~"
VAR = "<img src=v onerror=alert(6)> @acme/vars"
GRAFANA = "https://grafana.example/) <img src=g onerror=alert(7)> @acme/grafana [y](javascript:y)"
REPORT_URL = "https://reports.example/) <img src=r onerror=alert(8)> @acme/reports <!--"
LABEL = "<img src=l onerror=alert(9)> @acme/label"
SLICE = "<script>alert(10)</script> @acme/slice"
DATASET = "golden <img src=d onerror=alert(11)> @acme.csv"
RUN_ID = "run <img src=i onerror=alert(12)> @acme/run"
SLICE_COLUMN = "<b>lang</b> @acme/column"
EVIL_ERROR = "<img src=e onerror=alert(14)> @acme/error <!--"

ALLOWED_TAGS = {"p", "h2", "h4", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "strong",
                "em", "a", "details", "summary", "sub", "br", "blockquote", "ul", "li", "del"}
MENTION = re.compile(r"(?<![\w`/.])@[A-Za-z0-9]")


class Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.comments: list[str] = []
        self.hrefs: list[str] = []
        self.open_details = 0
        self.unbalanced = False
        self.code_depth = 0
        self.scanned: list[str] = []  # text GitHub scans for mentions (not code, not link text)
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "details":
            self.open_details += 1
        if tag in ("code", "pre", "a"):
            self.code_depth += 1
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag):
        if tag == "details":
            self.open_details -= 1
            self.unbalanced |= self.open_details < 0
        if tag in ("code", "pre", "a"):
            self.code_depth -= 1

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_data(self, data):
        self.text.append(data)
        if self.code_depth == 0:
            self.scanned.append(data)


def audit_markdown(markdown: str, where: str, marker_allowed: bool = False) -> str:
    """Render like GitHub, check the HTML, return its text (for 'shown literally' checks)."""
    rendered = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    audit = Audit()
    audit.feed(rendered)
    audit.close()
    assert set(audit.tags) <= ALLOWED_TAGS, (where, set(audit.tags) - ALLOWED_TAGS)
    allowed_comments = 1 if marker_allowed else 0
    assert len(audit.comments) <= allowed_comments, (where, audit.comments)
    if audit.comments:
        assert audit.comments[0].strip().startswith("mlobs:sticky"), (where, audit.comments)
        assert markdown.startswith("<!-- mlobs:sticky"), where
    assert audit.open_details == 0 and not audit.unbalanced, where
    for href in audit.hrefs:
        assert re.match(r"https?://[^\s<>\"']+$", href), (where, href)
    scanned = " ".join(audit.scanned)
    assert not MENTION.search(scanned), (where, MENTION.search(scanned), scanned[:300])
    return " ".join(" ".join(audit.text).split())


def shown(value: str) -> str:
    """A hostile value as it reads on the page (the zero-width space after @ is invisible)."""
    return " ".join(value.split())


def check_surfaces(github, gha_env, procs, expect_shown: list[str]) -> None:
    """Every surface of every run so far."""
    comments = [c["body"] for cs in github.state.issue_comments.values() for c in cs]
    assert comments, "nothing was reported"
    texts = []
    for body in comments:
        assert len(body) <= 65_536
        texts.append(audit_markdown(body, "comment", marker_allowed=True))
    summary = Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    texts.append(audit_markdown(summary, "job summary"))
    for run in github.state.check_runs.values():
        output = run["output"]
        assert len(run["name"]) <= 255 and "\n" not in run["name"]
        assert len(output["title"]) <= 255 and "\n" not in output["title"]
        for key in ("summary", "text"):
            assert len(output[key].encode()) <= 65_535
            texts.append(audit_markdown(output[key], f"check run {key}"))
        for ann in output["annotations"]:
            assert len(ann.get("title", "")) <= 255 and len(ann["message"].encode()) <= 64_000
    everything = " ".join(texts).replace("\u200b", "")
    for value in expect_shown:  # escaped, not dropped: the reader sees what the user wrote
        assert shown(value) in everything, value

    # workflow commands: only our own, one per line; nothing a value could inject
    for proc in procs:
        for line in proc.stdout.splitlines():
            if line.startswith("::"):
                assert re.match(r"::(error|warning|notice|add-mask|group|endgroup|debug)( |::)", line), line
            assert "::warning::injected" not in line or not line.startswith("::warning::injected"), line
        errors = [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]
        assert len(errors) <= 1 and "Traceback" not in proc.stderr, proc.stderr
    # step outputs: the runner's parser must find only the action's outputs, with sane values
    outputs = parse_outputs(Path(gha_env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))
    assert {name for name, _ in outputs} <= OUTPUTS, outputs
    assert all(v in ("pass", "fail", "inconclusive", "error") for k, v in outputs if k == "result")


def parse_outputs(text: str) -> list[tuple[str, str]]:
    """$GITHUB_OUTPUT as the runner reads it: name=value lines and name<<DELIMITER heredocs."""
    found, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            found.append((name, "\n".join(lines[i + 1 : end])))
            i = end + 1
            continue
        if line:
            name, value = line.split("=", 1)
            found.append((name, value))
        i += 1
    return found


def mlobs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    return subprocess.run([str(BIN / "mlobs"), *args, "--comment-mode=new"], env={**base, **env},
                          capture_output=True, text=True, timeout=600)


# ---- the modes ----------------------------------------------------------------------------------

def run_slo_validate(workspace: Path, env: dict[str, str]) -> tuple[list, list[str]]:
    lines = (loggen.requests(1200, version=VERSION, classes={CLASS: 0.3, "tabby cat": 0.7})
             + loggen.requests(1200, version=BASELINE, seed=2, classes={CLASS: 0.1, "tabby cat": 0.9}))
    logs = workspace / "logs <img src=f onerror=alert(13)> @acme.jsonl"
    loggen.write(logs, lines)
    (workspace / "features").mkdir()
    (workspace / "features" / "evil.feature").write_text(f"""Feature: {FEATURE}

  Background:
    Given the logs of stream {{namespace="openfaas-fn"}}
    And the window is the last "1h"
    And the model version is "${{MODEL_VERSION}}"

  Scenario: {SCENARIO}
    Then the p99 latency is below 10 ms

  Scenario: share of a class from the logs
    Then the share of class "{CLASS}" is between 5 and 15 percent

  Scenario: share of a class from the vars input
    Then the share of class "${{EVIL}}" is between 5 and 15 percent

  Scenario: drift
    Then the prediction distribution does not drift from version "${{BASELINE_VERSION}}"
""", encoding="utf-8")
    common = ["slo-validate", f"--working-directory={workspace}", f"--logs-file={logs.name}",
              "--features=features", f"--window-end={END}", f"--model-version={VERSION}",
              f"--baseline-version={BASELINE}", f"--comment-key={KEY}", f"--vars=EVIL={VAR}",
              f"--grafana-url={GRAFANA}"]
    procs = [mlobs(*common, env=env)]
    assert procs[0].returncode == 1, procs[0].stderr  # p99 < 10 ms fails: the verdicts rendered
    # inputs whose hostile values are refused: the error report quotes them, escaped
    for bad in (f"--window=1h {EVIL_ERROR}", f"--vars={EVIL_ERROR}", f"--window-end={EVIL_ERROR}",
                f"--features=missing {EVIL_ERROR}.feature"):
        procs.append(mlobs(*common, bad, env=env))
        assert procs[-1].returncode == 2, (bad, procs[-1].stderr)
    return procs, [VERSION, BASELINE, SCENARIO, CLASS, VAR, "@acme.jsonl", EVIL_ERROR]


def run_publish_report(workspace: Path, env: dict[str, str]) -> tuple[list, list[str]]:
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                          workspace / ".mlobs" / "lake"))
    try:
        lakegen.write(engine, "v1", accuracy=0.8, classes=[LABEL, "ok", "meh"], languages=(SLICE,))
    finally:
        engine.close()
    site = f"site {EVIL_ERROR}"
    procs = [
        mlobs("publish-report", f"--working-directory={workspace}", "--model-version=v1",
              f"--report-url={REPORT_URL}", f"--comment-key={KEY}", env=env),
        mlobs("publish-report", f"--working-directory={workspace}", "--model-version=v1",
              f"--report-dir={site}", f"--comment-key={KEY}", env=env),
        mlobs("publish-report", f"--working-directory={workspace}", f"--versions={VERSION}",
              f"--baseline-version={BASELINE}", f"--comment-key={KEY}", env=env),
        mlobs("publish-report", f"--working-directory={workspace}", "--model-version=v1",
              f"--slo-results=missing {EVIL_ERROR}.json", env=env),
    ]
    assert [p.returncode for p in procs] == [0, 0, 2, 2], [p.stderr for p in procs]
    return procs, [VERSION, site, EVIL_ERROR]


def run_evaluate(workspace: Path, env: dict[str, str], bento_url: str) -> tuple[list, list[str]]:
    with open(EVALUATION / "golden.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:60]
    for i, row in enumerate(rows):
        row[SLICE_COLUMN] = SLICE if i % 2 else row.pop("language")
        row.pop("language", None)
        if i % 10 == 0:
            row["label"] = LABEL
    with open(workspace / DATASET, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                          workspace / ".mlobs" / "lake"))
    try:  # the baseline's run, written straight into the table
        lakegen.write(engine, BASELINE, n=60, accuracy=0.95, classes=["negative", "neutral", "positive"])
    finally:
        engine.close()
    common = ["evaluate", f"--working-directory={workspace}", f"--dataset={DATASET}",
              "--id-column=id", "--input-columns=text", f"--slice-columns={SLICE_COLUMN}",
              f"--bento-url={bento_url}", f"--model-version={VERSION}", f"--run-id={RUN_ID}",
              f"--baseline-version={BASELINE}", f"--comment-key={KEY}"]
    procs = [mlobs(*common, "--max-regression=accuracy=0.01", env=env)]
    assert procs[0].returncode in (0, 1), procs[0].stderr
    for bad in (f"--table=mlobs.{EVIL_ERROR}", f"--max-regression={EVIL_ERROR}=0.1",
                f"--label-column={EVIL_ERROR}", f"--input-columns={EVIL_ERROR}"):
        procs.append(mlobs(*common, bad, env=env))
        assert procs[-1].returncode == 2, (bad, procs[-1].stderr)
    return procs, [VERSION, BASELINE, LABEL, SLICE, SLICE_COLUMN, RUN_ID, "@acme.csv", EVIL_ERROR]


@pytest.fixture(scope="module")
def bento_url(tmp_path_factory):
    from mlobs.evaluate.bento import BentoServer

    home = tmp_path_factory.mktemp("bentoml-home")
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    subprocess.run([sys.executable, str(EVALUATION / "train.py"), "v1"], env=env, check=True,
                   capture_output=True, timeout=300)
    server_env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
                  "MLOBS_EXAMPLE_MODEL": "mlobs-sentiment:v1"}
    with BentoServer("service:SentimentClassifier", cwd=EVALUATION, env=server_env,
                     base_env=os.environ) as server:
        yield server.url


@pytest.mark.parametrize("mode", [
    "slo-validate",
    "publish-report",
    pytest.param("evaluate", marks=pytest.mark.slow),  # serves a real Bento
])
def test_hostile_values_in_every_input_reach_every_surface_as_text(mode, tmp_path, github, gha_env,
                                                                   request):
    env = dict(gha_env, MLOBS_GITHUB_TOKEN=github.token)
    if mode == "slo-validate":
        procs, expect = run_slo_validate(tmp_path, env)
    elif mode == "publish-report":
        procs, expect = run_publish_report(tmp_path, env)
    else:
        procs, expect = run_evaluate(tmp_path, env, request.getfixturevalue("bento_url"))
    check_surfaces(github, gha_env, procs, expect)
    for path in (tmp_path / ".mlobs").glob("*.json"):
        json.loads(path.read_text())  # results files stay valid JSON
