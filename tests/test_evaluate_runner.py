"""The evaluation runner against a real ``bentoml serve`` of the example Bento and loopback doubles.

One server for the whole module (BentoML takes seconds to start): the example model is trained
once into a BENTOML_HOME under pytest's tmp dir, never the user's store, and the stopping test
comes last (pytest runs a module's tests in file order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from mlobs.errors import SourceUnavailable
from mlobs.evaluate.bento import BentoServer, free_port
from mlobs.evaluate.client import Prediction, parse_item, predict
from mlobs.evaluate.dataset import open_dataset
from mlobs.evaluate.progress import Progress, format_line
from mlobs.lake.schema import sample_arrow_schema

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EVALUATION = REPO / "evaluation"
GOLDEN = EVALUATION / "golden.csv"
SLICES = ["language", "length_bucket"]

psutil = pytest.importorskip("psutil")  # comes with bentoml
joblib = pytest.importorskip("joblib")  # comes with scikit-learn
pytest.importorskip("bentoml")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bento_home(tmp_path_factory) -> Path:
    """A private model store holding mlobs-sentiment:v1 and :v2 (trained by the real script)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, str(EVALUATION / "train.py"), "v1", "v2"], env=env,
                   check=True, capture_output=True, timeout=120)
    return home


def stored_model(home: Path, version: str):
    """The very artifact the server loads, loaded here in-process."""
    return joblib.load(home / "models" / "mlobs-sentiment" / version / "model.joblib")


@pytest.fixture(scope="module")
def server(bento_home):
    env = {"BENTOML_HOME": str(bento_home), "MLOBS_EXAMPLE_MODEL": "mlobs-sentiment:v1"}
    with BentoServer("service:SentimentClassifier", cwd=EVALUATION, env=env, ready_timeout=120,
                     log_path=bento_home / "serve.log") as srv:
        yield srv


def golden(batch_size: int = 37):
    return open_dataset(GOLDEN, input_columns=["text"], label_column="label", id_column="id",
                        slice_columns=SLICES, batch_size=batch_size)


def run(url: str, dataset, **kw) -> pa.Table:
    args = {"input_columns": dataset.input_columns, "label_column": dataset.label_column,
            "slice_columns": dataset.slice_columns, "concurrency": 3, "timeout": 30.0,
            "deadline_per_batch": 60.0, "progress": None, **kw}
    return pa.Table.from_batches(list(predict(url, dataset.iter_batches(), **args)),
                                 schema=sample_arrow_schema())


def processes_running(needle: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if needle in " ".join(proc.info["cmdline"] or []):
                found.append(proc.info["pid"])
        except psutil.Error:
            continue
    return found


def wait_gone(needle: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_running(needle)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --- a loopback double for failure modes -------------------------------------------------------


class Double:
    """A tiny Bento stand-in: ``respond(texts, call_no) -> (status, json body)`` per POST."""

    def __init__(self, respond: Callable[[list[str], int], tuple[int, object]]) -> None:
        self.respond = respond
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200 if self.path == "/readyz" else 404, {})

            def do_POST(self):
                texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
                with outer._lock:
                    outer.calls.append(texts)
                    call_no = len(outer.calls)
                self._send(*outer.respond(texts, call_no))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Double:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(texts: list[str]) -> list[dict]:
    return [{"label": "positive" if "great" in t else "negative",
             "scores": {"positive": 0.9, "negative": 0.1}} for t in texts]


def small_dataset(tmp_path: Path, texts: list[str]):
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "positive", "language": "en"}) + "\n"
                            for t in texts))
    return open_dataset(path, input_columns=["text"], label_column="label",
                        slice_columns=["language"], batch_size=2)


# --- the real Bento ----------------------------------------------------------------------------


def test_golden_set_predictions_are_complete_and_joined(server, bento_home):
    dataset = golden(batch_size=37)  # 480 = 12 × 37 + 36: uneven batches, several in flight
    lines: list[str] = []
    table = run(server.url, dataset, progress=Progress(total=dataset.rows, tty=False, emit=lines.append))
    rows = table.to_pylist()

    source = pa.Table.from_batches(list(dataset.iter_batches())).to_pylist()
    assert [r["sample_id"] for r in rows] == [s["sample_id"] for s in source]  # all, in order
    assert all(r["error"] is None for r in rows)

    model = stored_model(bento_home, "v1")
    probs = model.predict_proba([s["text"] for s in source])
    classes = list(model.classes_)
    for row, src, p in zip(rows, source, probs, strict=True):
        assert row["label"] == src["label"]
        assert dict(row["slices"]) == {k: src[k] for k in SLICES}
        scores = dict(row["scores"])
        assert set(scores) == set(classes)
        assert all(abs(scores[c] - float(p[i])) < 1e-9 for i, c in enumerate(classes))
        assert row["prediction"] == classes[int(p.argmax())]
        assert row["confidence"] == pytest.approx(float(p.max()))
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert 0.8 < accuracy < 1.0  # held-out words keep v1 honest
    assert lines[-1].startswith("evaluated 480/480 samples (100%)") and lines[-1].endswith("0 errors")


def test_v2_is_a_real_regression_of_v1(bento_home):
    dataset = golden(batch_size=480)
    source = pa.Table.from_batches(list(dataset.iter_batches())).to_pylist()
    texts, labels = [s["text"] for s in source], [s["label"] for s in source]
    acc = {v: sum(p == y for p, y in zip(stored_model(bento_home, v).predict(texts), labels, strict=True))
           / len(labels) for v in ("v1", "v2")}
    assert acc["v1"] - acc["v2"] > 0.1


def test_server_order_is_positional_within_large_merged_batches(server):
    # One request larger than the service's max_batch_size (1024) is split and merged back.
    texts = [f"The app is great {i}." if i % 2 else f"Die App ist nicht gut {i}." for i in range(1500)]
    table = pa.table({"sample_id": [str(i) for i in range(1500)], "text": texts,
                      "label": ["x"] * 1500})
    out = pa.Table.from_batches(list(predict(
        server.url, table.to_batches(), input_columns=["text"], label_column="label",
        slice_columns=[], concurrency=1, timeout=30, deadline_per_batch=60, progress=None)))
    preds = out.column("prediction").to_pylist()
    assert preds == ["positive" if i % 2 else "negative" for i in range(1500)]


def test_wrong_input_column_becomes_error_rows_naming_the_field(server, tmp_path):
    path = tmp_path / "renamed.csv"
    path.write_text("body,label\nThe app is great.,positive\n")
    dataset = open_dataset(path, input_columns=["body"], label_column="label", slice_columns=[],
                           batch_size=8)
    (row,) = run(server.url, dataset).to_pylist()
    assert row["prediction"] is None
    assert row["error"] == "HTTP 400: 1 validation error for Input (text: Field required)"


def test_unreachable_url_is_source_unavailable_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dataset = golden()
    with pytest.raises(SourceUnavailable) as err:
        run(url, dataset, deadline_per_batch=0.5)
    assert err.value.one_line() == f"could not reach the Bento at {url}: connection refused"


def test_broken_service_reports_its_log_tail_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "broken_svc.py").write_text(
        "import bentoml\nraise RuntimeError('model store has no mlobs-sentiment')\n")
    with pytest.raises(SourceUnavailable) as err, BentoServer(
            "broken_svc:Nope", cwd=tmp_path, ready_timeout=60, log_path=tmp_path / "bento.log"):
        pass
    msg = err.value.one_line()
    assert "broken_svc:Nope" in msg and "exited with code" in msg
    assert "RuntimeError: model store has no mlobs-sentiment" in msg
    assert any("RuntimeError" in line for line in err.value.log_tail)
    assert msg.endswith(f"server log: {tmp_path / 'bento.log'}")
    assert wait_gone("broken_svc:Nope") == []


def test_service_that_never_gets_ready_is_stopped_at_the_deadline(tmp_path):
    (tmp_path / "stuck_svc.py").write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(SourceUnavailable, match="was not ready after 1 s"), BentoServer(
            "stuck_svc:Svc", cwd=tmp_path, ready_timeout=1, stop_grace=2,
            log_path=tmp_path / "bento.log"):
        pass
    assert wait_gone("stuck_svc:Svc") == []


# --- failure modes against the double ----------------------------------------------------------


def test_503_twice_then_200_is_retried(tmp_path):
    def respond(texts, call_no):
        return (503, {"error": "process is overloaded"}) if call_no <= 2 else (200, ok(texts))

    dataset = small_dataset(tmp_path, ["great a", "bad b", "great c"])
    with Double(respond) as double:
        table = run(double.url, dataset, concurrency=1, deadline_per_batch=10)
    assert table.column("error").null_count == 3
    assert table.column("prediction").to_pylist() == ["positive", "negative", "positive"]
    assert len(double.calls) == 4  # batch 1 three times, batch 2 once


def test_a_batch_that_keeps_failing_becomes_error_rows(tmp_path):
    def respond(texts, call_no):
        if "boom" in texts:
            return 500, {"error": "An unexpected error has occurred, please check the server log."}
        return 200, ok(texts)

    dataset = small_dataset(tmp_path, ["great a", "bad b", "boom", "great d", "bad e"])
    with Double(respond) as double:
        rows = run(double.url, dataset, concurrency=2).to_pylist()
    assert [r["sample_id"] for r in rows] == ["0", "1", "2", "3", "4"]  # nothing dropped
    assert [r["prediction"] for r in rows] == ["positive", "negative", None, None, "negative"]
    assert rows[2]["error"] == rows[3]["error"] == (
        "HTTP 500: An unexpected error has occurred, please check the server log.")
    assert rows[2]["slices"] == [("language", "en")] and rows[2]["label"] == "positive"
    assert rows[0]["error"] is None and rows[4]["error"] is None
    assert sum(texts == ["boom", "great d"] for texts in double.calls) == 1  # a 500 is not retried


def test_wrong_number_of_answers_and_odd_items(tmp_path):
    def respond(texts, call_no):
        if texts[0] == "short":
            return 200, ["positive"]  # one answer for two samples
        return 200, ["positive", {"prediction": 3, "probabilities": {"3": 0.7, "4": 0.3}}]

    dataset = small_dataset(tmp_path, ["great", "x", "short", "y"])
    with Double(respond) as double:
        rows = run(double.url, dataset, concurrency=1).to_pylist()
    assert rows[0]["prediction"] == "positive" and rows[0]["confidence"] is None
    assert rows[1]["prediction"] == "3" and rows[1]["confidence"] == 0.7
    assert rows[2]["error"] == rows[3]["error"] == "the Bento answered 1 predictions for 2 samples"


def test_a_server_that_dies_mid_run_fails_the_rest_fast(tmp_path):
    double = Double(lambda texts, n: (200, ok(texts))).__enter__()
    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(10)])  # 5 batches
    results = predict(double.url, dataset.iter_batches(), input_columns=["text"],
                      label_column="label", slice_columns=["language"], concurrency=1,
                      timeout=5, deadline_per_batch=1.0, progress=None)
    first = next(results)
    double.shutdown()
    rest = pa.Table.from_batches(list(results)).to_pylist()
    assert first.column("error").null_count == 2
    assert [r["sample_id"] for r in rest] == [str(i) for i in range(2, 10)]  # none dropped
    # The window may have sent the next batch before the shutdown; the rest could not connect.
    failed = [r for r in rest if r["error"] is not None]
    assert len(failed) >= 6
    assert all(r["prediction"] is None and "connection refused" in r["error"] for r in failed)


def test_a_server_that_stays_overloaded_fails_the_rest_fast(tmp_path):
    dataset = small_dataset(tmp_path, [f"t{i}" for i in range(8)])  # 4 batches
    with Double(lambda texts, n: (503, {"error": "process is overloaded"})) as double:
        rows = run(double.url, dataset, concurrency=1, deadline_per_batch=0.5).to_pylist()
    assert len(rows) == 8 and all(r["prediction"] is None for r in rows)
    assert rows[0]["error"].startswith("HTTP 503: process is overloaded (gave up after")
    assert rows[7]["error"] == "HTTP 503: process is overloaded"
    tries = [sum(c[0] == first for c in double.calls) for first in ("t0", "t2", "t4", "t6")]
    assert tries[0] >= 2 and tries[1:] == [1, 1, 1]  # the first batch retried, the rest once


def test_parse_item_variants():
    assert parse_item("cat") == Prediction("cat")
    assert parse_item(2) == Prediction("2")
    assert parse_item({"label": "a", "scores": {"a": 0.6, "b": 0.4}}) == Prediction(
        "a", 0.6, {"a": 0.6, "b": 0.4})
    assert parse_item({"label": "a", "confidence": 0.9}) == Prediction("a", 0.9)
    assert parse_item({"error": "bad input"}).error == "bad input"
    assert parse_item([1, 2]).error.startswith("unreadable prediction item")


def test_progress_lines_for_ci():
    assert format_line(3200, 10_000, 2950.4, 3) == "evaluated 3,200/10,000 samples (32%), 2,950/s, 3 errors"
    assert format_line(5, None, 1.0, 1) == "evaluated 5 samples, 1/s, 1 error"
    now = [0.0]
    lines: list[str] = []
    progress = Progress(total=1000, tty=False, emit=lines.append, clock=lambda: now[0])
    for _ in range(20):  # 50 samples per second of fake time
        now[0] += 1.0
        progress.update(50)
    progress.close()
    progress.close()
    assert len(lines) == 10  # one per 10 % step; the last from close() only
    assert lines[0] == "evaluated 100/1,000 samples (10%), 50/s, 0 errors"
    assert lines[-1] == "evaluated 1,000/1,000 samples (100%), 50/s, 0 errors"
    slow: list[str] = []
    progress = Progress(total=None, tty=False, emit=slow.append, clock=lambda: now[0])
    now[0] += 11.0
    progress.update(7, errors=1)  # no total: a line every 10 s
    assert slow == ["evaluated 7 samples, 1/s, 1 error"]


# --- last: stopping the shared server ----------------------------------------------------------


def test_server_stops_its_whole_process_tree(server):
    leader = server.pid
    tree = [leader, *(p.pid for p in psutil.Process(leader).children(recursive=True))]
    assert len(tree) >= 2  # the CLI process and at least one worker in its own session
    server.stop()
    server.stop()  # idempotent; the fixture's exit calls it again
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
              for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
