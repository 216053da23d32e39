"""mlobs evaluate end to end: the example Bento served for real, one Iceberg snapshot per run,
baseline gates, idempotent retries, and a run killed half-way that leaves no trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlobs.evaluate.bento import BentoServer
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine

REPO = Path(__file__).resolve().parents[1]
EVALUATION = REPO / "evaluation"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bento_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    subprocess.run([sys.executable, str(EVALUATION / "train.py"), "v1", "v2"], env=env, check=True,
                   capture_output=True, timeout=300)
    return home


def server_env(home: Path, version: str) -> dict[str, str]:
    return {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
            "MLOBS_EXAMPLE_MODEL": f"mlobs-sentiment:{version}"}


@pytest.fixture(scope="module")
def served_v2(bento_home):
    with BentoServer("service:SentimentClassifier", cwd=EVALUATION, env=server_env(bento_home, "v2"),
                     base_env=os.environ) as server:
        yield server.url


def evaluate(workspace: Path, *args: str, env: dict | None = None, timeout: int = 300):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    full_env.update(env or {})
    cmd = [str(BIN / "mlobs"), "evaluate", f"--working-directory={workspace}", "--github-token=",
           f"--dataset={EVALUATION / 'golden.csv'}", "--id-column=id", "--input-columns=text",
           "--label-column=label", "--slice-columns=language,length_bucket", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def engine_for(workspace: Path):
    return open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                         workspace / ".mlobs" / "lake"))


def results(workspace: Path) -> dict:
    return json.loads((workspace / ".mlobs" / "evaluate-results.json").read_text())


def test_serve_evaluate_compare_and_gate(tmp_path, bento_home, served_v2):
    out = tmp_path / "gh_output"
    out.touch()
    # serve mode: a folder with a bentofile.yaml (absolute here; relative paths resolve against
    # the working directory)
    first = evaluate(tmp_path, f"--bento={EVALUATION}", "--model-version=v1", "--run-id=run-v1",
                     env={**server_env(bento_home, "v1"), "GITHUB_OUTPUT": str(out)}, timeout=600)
    assert first.returncode == 0, first.stderr
    v1 = results(tmp_path)
    assert v1["verdict"] == "pass" and v1["metrics"]["overall"]["n"] == 480
    assert v1["metrics"]["overall"]["errors"] == 0
    assert {s["name"] for s in v1["metrics"]["slices"]} == {"language", "length_bucket"}
    outputs = out.read_text()
    assert "run-id=run-v1" in outputs and f"snapshot-id={v1['snapshot_id']}" in outputs

    second = evaluate(tmp_path, f"--bento-url={served_v2}", "--model-version=v2", "--run-id=run-v2",
                      "--baseline-version=v1", "--max-regression=accuracy=0.01", "--dry-run")
    v2 = results(tmp_path)
    assert v2["baseline_run_id"] == "run-v1"
    drop = v1["metrics"]["overall"]["accuracy"] - v2["metrics"]["overall"]["accuracy"]
    assert second.returncode == (1 if drop > 0.01 else 0), second.stderr
    comment = (tmp_path / ".mlobs" / "dry-run" / "evaluate" / "comment.md").read_text()
    assert "| accuracy |" in comment and "Worst slices" in comment and "run-v2" in comment

    engine = engine_for(tmp_path)
    try:
        assert [r.run_id for r in engine.runs()] == ["run-v1", "run-v2"]  # one snapshot per run
    finally:
        engine.close()


def test_retry_with_the_same_run_id_writes_nothing(tmp_path, served_v2):
    for _ in range(2):
        proc = evaluate(tmp_path, f"--bento-url={served_v2}", "--model-version=v2", "--run-id=retry-me")
        assert proc.returncode == 0, proc.stderr
    assert results(tmp_path)["written"] is False
    engine = engine_for(tmp_path)
    try:
        assert [r.run_id for r in engine.runs()] == ["retry-me"]
    finally:
        engine.close()


def test_a_run_killed_half_way_leaves_the_table_as_it_was(tmp_path, served_v2):
    assert evaluate(tmp_path, f"--bento-url={served_v2}", "--model-version=v2", "--run-id=before").returncode == 0
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    cmd = [str(BIN / "mlobs"), "evaluate", f"--working-directory={tmp_path}", "--github-token=",
           f"--dataset={EVALUATION / 'golden.csv'}", "--id-column=id", "--input-columns=text",
           "--slice-columns=language", f"--bento-url={served_v2}", "--model-version=v2",
           "--run-id=killed", "--batch-size=4", "--concurrency=1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=full_env)
    killed_at = None
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # progress lines: "... 240/480 samples (50%) ..."
        if "(" in line and "%)" in line:
            pct = int(line.split("(")[1].split("%")[0])
            if 40 <= pct < 100:
                proc.send_signal(signal.SIGKILL)
                killed_at = pct
                break
        if time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait(timeout=30)
    assert killed_at is not None, "never saw a progress line between 40% and 99%"
    engine = engine_for(tmp_path)
    try:
        assert [r.run_id for r in engine.runs()] == ["before"]
        assert engine.find_run("killed") is None
        only = engine.read_run(engine.find_run("before"), columns=["run_id"])
        assert only.num_rows == 480
    finally:
        engine.close()


def test_bento_down_is_exit_2_with_one_line(tmp_path):
    proc = evaluate(tmp_path, "--bento-url=http://127.0.0.1:9", "--model-version=v1")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlobs: error:")]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]


def test_missing_label_column_is_a_clear_error(tmp_path):
    proc = evaluate(tmp_path, "--bento-url=http://127.0.0.1:9", "--model-version=v1",
                    "--label-column=sentiment")
    assert proc.returncode == 2
    assert "sentiment" in proc.stderr and "mlobs: error:" in proc.stderr
    assert not (tmp_path / ".mlobs" / "lake").exists() or not any((tmp_path / ".mlobs" / "lake").rglob("*.parquet"))
