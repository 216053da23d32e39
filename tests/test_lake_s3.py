"""The lake on the same store: an Iceberg warehouse in an S3 bucket (moto's S3 server on loopback).

`mlobs evaluate` on one fresh runner writes the run into s3://lake/warehouse; `mlobs
publish-report` on another reads it back and publishes into s3://reports/…. The endpoint and the
credentials come from the standard AWS variables only. The model is a scikit-learn pipeline behind
a loopback HTTP service speaking the Bento API; every number on the page is checked against the
same model called in-process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from servers.stores import S3Server
from test_publish_report import tables

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "evaluation" / "golden.csv"
BIN = Path(sys.executable).parent


def golden() -> list[dict]:
    with GOLDEN.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def model():
    rows = golden()
    train = [r for i, r in enumerate(rows) if i % 4 == 0]  # a weak model: it sees a quarter
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 1)), LogisticRegression(C=0.5, max_iter=500))
    pipeline.fit([r["text"] for r in train], [r["label"] for r in train])
    return pipeline


@pytest.fixture(scope="module")
def service(model):
    """POST /predict {"text": [...]} → [{"label", "scores"}]; GET /readyz → 200."""
    classes = [str(c) for c in model.classes_]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self._answer(200 if self.path == "/readyz" else 404, b"ok")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            probs = model.predict_proba(body["text"])
            items = [{"label": classes[row.argmax()], "scores": dict(zip(classes, row.tolist(), strict=True))}
                     for row in probs]
            self._answer(200, json.dumps(items).encode(), "application/json")

        def _answer(self, status, payload, kind="text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def mlobs(mode: str, workspace: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    workspace.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(BIN / "mlobs"), mode, f"--working-directory={workspace}", "--github-token=",
                           *args], env=env, capture_output=True, text=True, timeout=600)


def test_evaluate_into_an_s3_warehouse_then_publish_from_it(tmp_path, service, model):
    with S3Server() as s3:
        s3.bucket("lake")
        s3.bucket("reports")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_", "AWS_"))}
        env.update(s3.env)
        # the catalog database is shared between the runners; every table file lives in the bucket
        catalog = f"uri=sqlite:///{tmp_path / 'catalog' / 'catalog.db'},warehouse=s3://lake/warehouse"
        evaluated = mlobs("evaluate", tmp_path / "runner-1", env, f"--bento-url={service}",
                          f"--dataset={GOLDEN}", "--id-column=id", "--input-columns=text",
                          "--slice-columns=language", "--model-version=v1", "--run-id=s3-run-1",
                          f"--catalog={catalog}")
        assert evaluated.returncode == 0, evaluated.stderr
        lake = s3.dump("lake", "warehouse/")
        assert any(k.endswith(".parquet") for k in lake) and any(k.endswith(".metadata.json") for k in lake)
        assert not (tmp_path / "runner-1" / ".mlobs" / "lake").exists()

        published = mlobs("publish-report", tmp_path / "runner-2", env, f"--catalog={catalog}",
                          "--versions=v1", "--publish-to=s3://reports/models",
                          "--report-url=https://reports.example/models")
        assert published.returncode == 0, published.stderr
        site = s3.dump("reports", "models/")
        assert {"v1/index.html", "v1/report.json", "index.html", "versions.json"} <= set(site)
        document = json.loads(site["v1/report.json"])
        assert document["run"]["run_id"] == "s3-run-1"

        rows = golden()
        truth = [r["label"] for r in rows]
        predicted = list(model.predict([r["text"] for r in rows]))
        expected_accuracy = accuracy_score(truth, predicted)
        expected_macro_f1 = f1_score(truth, predicted, average="macro")
        assert document["headline"]["n"] == len(rows)
        assert document["headline"]["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)
        assert document["headline"]["macro_f1"] == pytest.approx(expected_macro_f1, abs=1e-6)
        page = tmp_path / "v1.html"
        page.write_bytes(site["v1/index.html"])
        headline = {row[0]: row[1:] for row in tables(page)[0][1:]}
        assert headline["accuracy"][0] == f"{expected_accuracy:.3f}"
        bounds = document["intervals"]["headline"]["accuracy"]
        assert headline["accuracy"][1] == f"[{bounds['low']:.3f}, {bounds['high']:.3f}]"
        assert bounds["low"] < expected_accuracy < bounds["high"]
        summary = json.loads((tmp_path / "runner-2" / ".mlobs" / "publish-results.json").read_text())
        assert summary["report_url"] == "https://reports.example/models/v1/index.html"
        assert s3.ENV["AWS_SECRET_ACCESS_KEY"] not in evaluated.stdout + evaluated.stderr + published.stdout \
            + published.stderr
