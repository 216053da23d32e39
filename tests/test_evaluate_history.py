"""What becomes history: only trustworthy runs are committed, a run id names one evaluation, the
baseline is one run everywhere, and parallel first runs all land.

`mlobs evaluate` and `mlobs publish-report` run as real processes against a loopback Bento that
answers like ``bentoml serve``: the OpenAPI document is the one BentoML generates for the declared
service, request and error bodies are BentoML's. Behind it, a scikit-learn model trained here;
every number the action reports is checked against that model called in-process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "evaluation" / "golden.csv"
BIN = Path(sys.executable).parent
# BentoML's own body for an exception in an API (_bentoml_impl/server/app.py).
BENTOML_500 = {"error": "An unexpected error has occurred, please check the server log."}


def golden_rows(path: Path = GOLDEN) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model():
    """A TF-IDF + logistic regression trained on the even rows; it errs on some odd ones."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = golden_rows()
    train = rows[::2]
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=500))
    pipeline.fit([r["text"] for r in train], [r["label"] for r in train])
    return pipeline


@pytest.fixture(scope="module")
def openapi() -> dict:
    """The OpenAPI document BentoML serves at /docs.json for a batchable ``predict(text)``."""
    import bentoml

    @bentoml.service(name="sentiment")
    class Sentiment:
        @bentoml.api(batchable=True)
        def predict(self, text: list[str]) -> list[dict[str, Any]]:
            raise NotImplementedError  # only its signature matters: the schema is generated

    spec = Sentiment.openapi_spec
    return spec.asdict() if hasattr(spec, "asdict") else dict(spec)


Behaviour = Callable[[list[str]], tuple[int, object]]


class LoopbackBento:
    """A Bento stand-in on 127.0.0.1: ``behaviour(texts) -> (status, body)`` answers each batch;
    swap it to "fix" the service between runs."""

    def __init__(self, openapi: dict, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path in ("/readyz", "/livez", "/healthz"):
                    self._send(200, "OK")
                elif self.path == "/docs.json":
                    self._send(200, openapi)
                else:
                    self._send(404, {"error": f"Not Found: {self.path}"})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/predict" or not isinstance(payload.get("text"), list):
                    detail = [{"type": "missing", "loc": ["text"], "msg": "Field required"}]
                    self._send(400, {"error": "1 validation error for Input", "detail": detail})
                    return
                self._send(*outer.behaviour(payload["text"]))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bento(openapi):
    server = LoopbackBento(openapi, lambda texts: (500, BENTOML_500))
    yield server
    server.close()


def answers(model, poisoned: Callable[[str], bool] = lambda text: False) -> Behaviour:
    """``[{"label", "score"}]`` per text from the model; a poisoned text gets a null label (the
    model had nothing to say), which no reader can score."""

    def behaviour(texts: list[str]) -> tuple[int, object]:
        if not texts:
            return 200, []
        probs = model.predict_proba(texts)
        classes = [str(c) for c in model.classes_]
        out = []
        for text, row in zip(texts, probs.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": None if poisoned(text) else classes[best],
                        "score": round(row[best], 6)})
        return 200, out

    return behaviour


def expected_accuracy(model, rows, poisoned: Callable[[str], bool] = lambda text: False) -> float:
    """Accuracy as the action must report it: a failed sample counts as a wrong answer."""
    predicted = model.predict([r["text"] for r in rows])
    right = sum(p == r["label"] and not poisoned(r["text"]) for p, r in zip(predicted, rows, strict=True))
    return right / len(rows)


def evaluate(workspace: Path, url: str, *args: str, dataset: Path = GOLDEN, env: dict | None = None,
             output_dir: str = ".mlobs") -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    full_env.update(env or {})
    cmd = [str(BIN / "mlobs"), "evaluate", f"--working-directory={workspace}", "--github-token=",
           f"--output-dir={output_dir}", f"--dataset={dataset}", "--id-column=id",
           "--input-columns=text", "--label-column=label", "--slice-columns=language",
           f"--bento-url={url}", "--dry-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def results(workspace: Path, output_dir: str = ".mlobs") -> dict:
    return json.loads((workspace / output_dir / "evaluate-results.json").read_text())


def comment(workspace: Path) -> str:
    return (workspace / ".mlobs" / "dry-run" / "evaluate" / "comment.md").read_text()


def engine_for(workspace: Path):
    return open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                         workspace / ".mlobs" / "lake"))


def table_runs(workspace: Path) -> list:
    with engine_for(workspace) as engine:
        return engine.runs()


def data_files(workspace: Path) -> list[Path]:
    return sorted((workspace / ".mlobs" / "lake" / "warehouse").rglob("*.parquet"))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]


# -- only trustworthy runs become history ---------------------------------------------------------


def test_a_run_in_which_every_sample_failed_is_not_history(tmp_path, bento, model):
    rows = golden_rows()
    broken = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=nightly-v1")
    # The probe (the first rows, sent alone before the dataset streams) fails on every sample:
    # the run stops there, quoting the Bento's own words, and nothing is recorded.
    assert broken.returncode == 2, broken.stderr
    failed = results(tmp_path)
    assert failed == {"schema": "mlobs.error/1", "mode": "evaluate", "verdict": "error",
                      "error": failed["error"]}
    assert f"HTTP 500: {BENTOML_500['error']}" in failed["error"]
    assert BENTOML_500["error"] in comment(tmp_path)
    assert [line for line in broken.stderr.splitlines() if line.startswith("mlobs: error:")] == [
        f"mlobs: error: {failed['error']}"]
    assert table_runs(tmp_path) == [] and data_files(tmp_path) == []  # nothing, not even files

    # The failed v1 is no baseline: v2 has nothing to compare with (not "0.317 vs 0.000 ▲ better").
    bento.behaviour = answers(model)
    v2 = evaluate(tmp_path, bento.url, "--model-version=v2", "--run-id=nightly-v2",
                  "--baseline-version=v1", "--max-regression=accuracy=0.01")
    assert v2.returncode == 0, v2.stderr
    assert results(tmp_path)["verdict"] == "inconclusive"
    assert results(tmp_path)["baseline_run_id"] is None

    # The Bento is fixed: the retry with the same run id evaluates afresh and lands.
    retry = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=nightly-v1")
    assert retry.returncode == 0, retry.stderr
    fixed = results(tmp_path)
    assert fixed["written"] is True and fixed["recorded"] is True
    assert fixed["metrics"]["overall"]["n"] == len(rows)
    assert fixed["metrics"]["overall"]["errors"] == 0
    assert fixed["metrics"]["overall"]["accuracy"] == pytest.approx(expected_accuracy(model, rows))
    assert [r.run_id for r in table_runs(tmp_path)] == ["nightly-v2", "nightly-v1"]


def poisoned_by(*words: str) -> Callable[[str], bool]:
    return lambda text: any(word in text.lower() for word in words)


def test_more_than_max_error_rate_failed_is_refused_showing_the_error_kinds(tmp_path, bento, model):
    rows = golden_rows()
    poisoned = poisoned_by("battery", "akku")  # battery reviews: the model has nothing to say
    n_poisoned = sum(poisoned(r["text"]) for r in rows)
    assert 0.05 < n_poisoned / len(rows) < 0.5 and not poisoned(rows[0]["text"])
    bento.behaviour = answers(model, poisoned)

    refused = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=r1")
    assert refused.returncode == 2, refused.stderr
    out = results(tmp_path)
    assert out["verdict"] == "error" and out["recorded"] is False and out["metrics"] is None
    assert out["max_error_rate"] == 0.05
    errors = out["errors"]
    assert (errors["rows"], errors["errors"]) == (len(rows), n_poisoned)
    # n_poisoned texts with n_poisoned different scores: one kind, not one kind per number.
    (kind,) = errors["kinds"]
    assert kind["count"] == n_poisoned and errors["more_kinds"] == 0
    assert kind["example"] == "the Bento answered no label (null)"
    assert errors["lines"] == [f"{n_poisoned} × {kind['example']}"]
    share = f"{n_poisoned / len(rows) * 100:.1f}".rstrip("0").rstrip(".")
    body = comment(tmp_path)
    assert f"{n_poisoned} of {len(rows)} samples failed ({share} %, more than max-error-rate 5 %)" in body
    assert f"- {n_poisoned} × `" in body
    assert table_runs(tmp_path) == [] and data_files(tmp_path) == []

    # A team that accepts it says so; the run is then recorded with its error count.
    accepted = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=r1",
                        "--max-error-rate=50%")
    assert accepted.returncode == 0, accepted.stderr
    out = results(tmp_path)
    assert out["recorded"] is True and out["written"] is True
    assert out["metrics"]["overall"]["errors"] == out["errors"]["errors"] == n_poisoned
    assert out["metrics"]["overall"]["accuracy"] == pytest.approx(expected_accuracy(model, rows, poisoned))
    assert f"- {n_poisoned} × `" in comment(tmp_path)
    (run,) = table_runs(tmp_path)
    assert (run.run_id, run.rows, run.errors) == ("r1", len(rows), n_poisoned)

    # Asked again without the allowance, the committed run is what it is: a retry, not re-judged.
    again = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=r1")
    assert again.returncode == 0 and results(tmp_path)["written"] is False
    assert results(tmp_path)["errors"]["kinds"][0]["count"] == n_poisoned  # read back from the table


@pytest.mark.parametrize("value", ["abc", "1.5", "-1%", "nan"])
def test_a_bad_max_error_rate_is_one_line(tmp_path, value):
    proc = evaluate(tmp_path, "http://127.0.0.1:9", "--model-version=v1", f"--max-error-rate={value}")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "max-error-rate" in line and repr(value) in line


# -- run identity ---------------------------------------------------------------------------------


def test_a_reused_run_id_for_another_model_version_dataset_or_commit_is_exit_2_showing_both(
        tmp_path, bento, model):
    bento.behaviour = answers(model)
    at = {"GITHUB_SHA": "a" * 40}
    first = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=release", env=at)
    assert first.returncode == 0, first.stderr
    assert results(tmp_path)["dataset_hash"] == hashlib.sha256(GOLDEN.read_bytes()).hexdigest()

    other_version = evaluate(tmp_path, bento.url, "--model-version=v2", "--run-id=release", env=at)
    assert other_version.returncode == 2
    (line,) = error_lines(other_version)
    assert "'release'" in line and "model version 'v1'" in line and "model version 'v2'" in line
    assert "model version 'v2'" in comment(tmp_path)  # the comment says so too, not "pass"

    smaller = tmp_path / "golden-without-last-row.csv"
    lines = GOLDEN.read_text(encoding="utf-8").rstrip("\n").split("\n")
    smaller.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    other_data = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=release", env=at,
                          dataset=smaller)
    assert other_data.returncode == 2
    (line,) = error_lines(other_data)
    assert "dataset sha256" in line
    assert hashlib.sha256(GOLDEN.read_bytes()).hexdigest()[:12] in line
    assert hashlib.sha256(smaller.read_bytes()).hexdigest()[:12] in line

    other_commit = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=release",
                            env={"GITHUB_SHA": "b" * 40})
    assert other_commit.returncode == 2
    (line,) = error_lines(other_commit)
    assert f"commit '{'a' * 12}" in line and f"commit '{'b' * 12}" in line

    retry = evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=release", env=at)
    assert retry.returncode == 0, retry.stderr
    assert results(tmp_path)["written"] is False
    assert [r.run_id for r in table_runs(tmp_path)] == ["release"]


# -- one baseline everywhere ----------------------------------------------------------------------


def test_the_baseline_is_one_run_for_the_deltas_the_gates_and_publish_report(tmp_path, bento, model):
    rows = golden_rows()
    bento.behaviour = answers(model)
    assert evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=v1-a").returncode == 0
    few = poisoned_by("charger")  # 8 of 480 fail: under max-error-rate, recorded with its errors
    bento.behaviour = answers(model, few)
    assert evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=v1-b").returncode == 0
    bento.behaviour = lambda texts: (500, BENTOML_500)  # v1's newest attempt fails entirely
    assert evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=v1-c").returncode == 2

    bento.behaviour = answers(model)
    v2 = evaluate(tmp_path, bento.url, "--model-version=v2", "--run-id=v2-a",
                  "--baseline-version=v1", "--max-regression=accuracy=0")
    out = results(tmp_path)
    base_accuracy = expected_accuracy(model, rows, few)
    assert out["baseline_run_id"] == "v1-b"  # the latest v1 run that is history
    assert out["baseline_metrics"]["overall"]["accuracy"] == pytest.approx(base_accuracy)
    (gate,) = out["gates"]
    assert gate["baseline"] == pytest.approx(base_accuracy)
    assert gate["current"] == pytest.approx(expected_accuracy(model, rows))
    assert v2.returncode == 0 and out["verdict"] == "pass"  # v2 answers everything: not worse
    assert f"{base_accuracy:.3f}" in comment(tmp_path)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    report = subprocess.run([str(BIN / "mlobs"), "publish-report", f"--working-directory={tmp_path}",
                             "--github-token=", "--dry-run", "--versions=v2", "--baseline-version=v1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert report.returncode == 0, report.stderr
    manifest = json.loads((tmp_path / "public" / "versions.json").read_text())
    assert {v["version"]: v["run_id"] for v in manifest["versions"]} == {"v1": "v1-b", "v2": "v2-a"}
    page = (tmp_path / "public" / "compare" / "v1...v2" / "index.html").read_text()
    assert f"<td>{base_accuracy:.3f}<spanclass=\"ci\">[" in page.replace(" ", "")


# -- parallel first runs --------------------------------------------------------------------------


@pytest.mark.slow  # six evaluate processes at once
def test_six_parallel_first_runs_on_a_fresh_catalog_all_land(tmp_path, openapi, model):
    rows = golden_rows()
    bento = LoopbackBento(openapi, answers(model))
    shared = tmp_path / "shared-lake"
    catalog = f"--catalog=uri=sqlite:///{shared / 'catalog.db'},warehouse={(shared / 'wh').as_uri()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    try:
        procs = [subprocess.Popen(
            [str(BIN / "mlobs"), "evaluate", f"--working-directory={tmp_path}", "--github-token=",
             f"--output-dir=out-{i}", f"--dataset={GOLDEN}", "--id-column=id",
             "--input-columns=text", f"--bento-url={bento.url}", f"--model-version=v{i % 2}",
             f"--run-id=job-{i}", catalog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env) for i in range(6)]
        outcomes = [(proc.wait(timeout=600), proc.stderr.read()) for proc in procs]
    finally:
        bento.close()
    assert [code for code, _ in outcomes] == [0] * 6, [err[-600:] for _, err in outcomes]
    for i in range(6):
        out = results(tmp_path, f"out-{i}")
        assert out["written"] is True and out["run_id"] == f"job-{i}"
        assert out["metrics"]["overall"]["accuracy"] == pytest.approx(expected_accuracy(model, rows))
    config = CatalogConfig.parse(catalog.split("=", 1)[1], "mlobs.predictions", tmp_path)
    with open_engine("pyiceberg", config) as engine:
        runs = engine.runs()
        assert sorted(r.run_id for r in runs) == [f"job-{i}" for i in range(6)]
        assert all(r.rows == len(rows) and r.errors == 0 for r in runs)
        assert all(engine.read_run(r, columns=["sample_id"]).num_rows == len(rows) for r in runs)


def test_a_baseline_evaluated_on_another_dataset_is_not_compared(tmp_path, bento, model):
    bento.behaviour = answers(model)
    assert evaluate(tmp_path, bento.url, "--model-version=v1", "--run-id=v1").returncode == 0
    fewer = tmp_path / "golden-200.csv"
    lines = GOLDEN.read_text(encoding="utf-8").split("\n")
    fewer.write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")  # header + 200 rows
    proc = evaluate(tmp_path, bento.url, "--model-version=v2", "--run-id=v2",
                    "--baseline-version=v1", "--max-regression=accuracy=0", dataset=fewer)
    out = results(tmp_path)
    assert proc.returncode == 0 and out["verdict"] == "inconclusive" and out["gates"] == []
    assert out["baseline_run_id"] == "v1"
    assert out["baseline_dataset_hash"] == hashlib.sha256(GOLDEN.read_bytes()).hexdigest()
    assert hashlib.sha256(fewer.read_bytes()).hexdigest()[:16] in out["reason"]
    assert "another dataset" in comment(tmp_path)
