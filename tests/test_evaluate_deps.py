"""A Bento that needs a library the action's image lacks (as PyTorch or transformers would be):
the error when `bento` cannot start names the module and the routes, and both routes work —

- the Bento in its own environment (what `bentoml containerize` + a job `services:` entry gives),
  with mlobs attached by `bento-url` from an environment that lacks the library;
- mlobs on the runner beside the user's dependencies: `cli/action.yml`'s own steps, run the way
  the runner runs a composite action (its `${{ }}` expressions filled in, `bash -eo pipefail`).

The library is a package in a folder only the "user's" environment has on its path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlobs.evaluate.bento import BentoServer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
pytest.importorskip("bentoml")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

LIBRARY = '''\
"""Stands in for a library the action's image does not have."""


def classify(text: str) -> tuple[str, float]:
    long = len(text) > 12
    return ("long" if long else "short", 0.75 if long else 0.6)
'''

SERVICE = '''\
import bentoml

import acme_textkit  # the user's dependency, absent from the action's environment


@bentoml.service(name="needs_acme", workers=1)
class NeedsAcme:
    @bentoml.api(batchable=True)
    def predict(self, text: list[str]) -> list[dict]:
        return [dict(zip(("label", "score"), acme_textkit.classify(t))) for t in text]
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's repository (service + golden set) and the folder where their deps live."""
    root = tmp_path_factory.mktemp("user-project")
    site = root / "site-packages"
    (site / "acme_textkit").mkdir(parents=True)
    (site / "acme_textkit" / "__init__.py").write_text(LIBRARY)
    ws = root / "workspace"
    ws.mkdir()
    (ws / "service.py").write_text(SERVICE)
    texts = [f"sample {'x' * (i % 9)} {i}" for i in range(60)]
    labels = ["long" if i % 4 else "short" for i in range(60)]  # not the model's rule: errors
    (ws / "golden.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels,
                                                                                        strict=True)))
    sys.path.insert(0, str(site))
    try:
        import acme_textkit  # the very library the service uses, called in-process
    finally:
        sys.path.remove(str(site))
    predicted = [acme_textkit.classify(t)[0] for t in texts]
    accuracy = sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
    return {"site": site, "ws": ws, "accuracy": accuracy, "home": root / "bentoml-home"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_")) and k != "PYTHONPATH"}
    return {**env, "BENTOML_DO_NOT_TRACK": "true", **extra}


def test_a_missing_module_names_itself_and_the_routes(project, tmp_path):
    env = clean_env(BENTOML_HOME=str(project["home"]))
    proc = subprocess.run(
        [str(BIN / "mlobs"), "evaluate", f"--working-directory={project['ws']}", "--github-token=",
         "--bento=service:NeedsAcme", "--dataset=golden.csv", "--model-version=v1",
         f"--output-dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlobs: error:")]
    assert "exited with code" in line
    assert "it needs the Python module 'acme_textkit', which is not installed where mlobs runs" in line
    assert "bentoml containerize; a job `services:` entry) and attach with bento-url" in line
    assert "`uses: org/ml-observability-action/cli@v1`" in line
    assert line.endswith(f"server log: {tmp_path / 'bento-server.log'}")
    assert "acme_textkit" in (tmp_path / "bento-server.log").read_text()  # kept for the reader


BLOCK_BENTOML = """\
import importlib.abc, sys


class NoBentoML(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bentoml" or name.startswith("bentoml."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoBentoML())
"""


def test_serving_without_bentoml_is_one_line_naming_the_routes(project, tmp_path):
    """The action's image has no BentoML server side: the bento input says so and how to go on,
    before any server is started (the container test checks the same in the real image)."""
    blocker = tmp_path / "no-bentoml"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_BENTOML)
    proc = subprocess.run(
        [str(BIN / "mlobs"), "evaluate", f"--working-directory={project['ws']}", "--github-token=",
         "--bento=service:NeedsAcme", "--dataset=golden.csv", "--model-version=v1",
         f"--output-dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=180,
        env=clean_env(PYTHONPATH=str(blocker), BENTOML_HOME=str(project["home"])))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mlobs: error: the bento input serves the Bento with BentoML, which is not installed where "
        "mlobs runs (the action's image leaves BentoML's server side out: serving needs the Bento's "
        "own dependencies anyway) — run the Bento in its own container (bentoml containerize; a job "
        "`services:` entry) and attach with bento-url, or run mlobs beside your dependencies with "
        "`uses: org/ml-observability-action/cli@v1` (README: Bentos with their own dependencies)"]
    assert not (tmp_path / "out" / "bento-server.log").exists()  # nothing was started


def test_route_1_the_bentos_own_environment_and_bento_url(project, tmp_path):
    # The Bento runs where its library is (its container); mlobs runs where it is not.
    env = {"PYTHONPATH": str(project["site"]), "BENTOML_HOME": str(project["home"])}
    with BentoServer("service:NeedsAcme", cwd=project["ws"], env=env, ready_timeout=180,
                     log_path=tmp_path / "bento.log", base_env=os.environ) as bento:
        proc = subprocess.run(
            [str(BIN / "mlobs"), "evaluate", f"--working-directory={project['ws']}",
             "--github-token=", f"--bento-url={bento.url}", "--dataset=golden.csv",
             "--model-version=v1", f"--output-dir={tmp_path}"],
            capture_output=True, text=True, env=clean_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "evaluate-results.json").read_text())
    assert result["metrics"]["overall"]["n"] == 60
    assert result["metrics"]["overall"]["accuracy"] == pytest.approx(project["accuracy"], abs=1e-12)


def _expand(value: str, inputs: dict[str, str], action_path: Path) -> str:
    value = value.replace("${{ github.action_path }}", str(action_path))
    return re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], value)


def test_route_2_the_cli_action_on_the_runner_beside_the_users_dependencies(project, tmp_path):
    action = yaml.safe_load((REPO / "cli" / "action.yml").read_text())
    given = {"mode": "evaluate", "github-token": "", "bento": "service:NeedsAcme",
             "dataset": "golden.csv", "model-version": "v1", "working-directory": str(project["ws"]),
             "output-dir": str(tmp_path / "out"), "python": sys.executable}
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs.update(given)
    output = tmp_path / "github_output"
    output.touch()
    # The user's job installed their dependencies into the interpreter they run (PYTHONPATH
    # stands in for that pip install); mlobs is installed there too (the venv running this test),
    # so the install step finds it and skips.
    runner_env = clean_env(PYTHONPATH=str(project["site"]), BENTOML_HOME=str(project["home"]),
                           GITHUB_OUTPUT=str(output), GITHUB_ACTIONS="true")
    for step in action["runs"]["steps"]:
        env = {**runner_env, **{k: _expand(v, inputs, REPO / "cli") for k, v in step["env"].items()}}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                              cwd=project["ws"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (step["name"], proc.stdout, proc.stderr)
    result = json.loads((tmp_path / "out" / "evaluate-results.json").read_text())
    assert result["metrics"]["overall"]["accuracy"] == pytest.approx(project["accuracy"], abs=1e-12)
    assert "result=pass" in output.read_text()
    assert not (tmp_path / "out" / "bento-server.log").exists()  # kept only when a run fails
