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
import time
from pathlib import Path

import pyarrow as pa
import pytest

from mlobs.errors import SourceUnavailable
from mlobs.evaluate.bento import BentoServer, free_port
from mlobs.evaluate.client import (
    BatchSizer,
    BentoStopped,
    DeadlineExceeded,
    ProbeFailed,
    predict,
)
from mlobs.evaluate.dataset import open_dataset
from mlobs.evaluate.progress import Progress, format_line
from mlobs.lake.schema import sample_arrow_schema
from servers.bento import Double

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
    with BentoServer("service:SentimentClassifier", cwd=EVALUATION, env=env, ready_timeout=120, base_env=os.environ,
                     log_path=bento_home / "serve.log") as srv:
        yield srv


def golden(batch_size: int = 37):
    return open_dataset(GOLDEN, input_columns=["text"], label_column="label", id_column="id",
                        slice_columns=SLICES, batch_size=batch_size)


def run(url: str, dataset, **kw) -> pa.Table:
    args = {"input_columns": dataset.input_columns, "label_column": dataset.label_column,
            "slice_columns": dataset.slice_columns, "concurrency": 3, "timeout": 30.0,
            "retry_window": 10.0, "progress": None, "batch_size": dataset.batch_size, **kw}
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


# --- failure modes against the loopback double (tests/servers/bento.py) -------------------


def ok(texts: list[str]) -> list[dict]:
    return [{"label": "positive" if "great" in t else "negative",
             "scores": {"positive": 0.9, "negative": 0.1}} for t in texts]


def small_dataset(tmp_path: Path, texts: list[str], batch_size: int = 2):
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "positive", "language": "en"}) + "\n"
                            for t in texts))
    return open_dataset(path, input_columns=["text"], label_column="label",
                        slice_columns=["language"], batch_size=batch_size)


PROBE = [f"probe {i}" for i in range(8)]  # the first 8 rows go alone, before the rest


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
        slice_columns=[], concurrency=1, timeout=30, batch_size=1492, progress=None)))
    assert out.column("prediction").null_count == 0
    preds = out.column("prediction").to_pylist()
    assert preds == ["positive" if i % 2 else "negative" for i in range(1500)]


def test_a_wrong_input_column_stops_at_the_probe_quoting_the_api(server, tmp_path):
    path = tmp_path / "renamed.csv"
    path.write_text("body,label\nThe app is great.,positive\nSo bad.,negative\n")
    dataset = open_dataset(path, input_columns=["body"], label_column="label", slice_columns=[],
                           batch_size=8)
    with pytest.raises(ProbeFailed) as err:  # on main: every row an error row, committed
        run(server.url, dataset)
    assert err.value.one_line() == (
        "the Bento refused the probe (2 samples sent before the dataset): HTTP 400: 1 validation "
        "error for Input (text: Field required) — sent as one list parameter per input column "
        "(from default); set input-format to send it another way")


def test_unreachable_url_is_source_unavailable_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dataset = golden()
    with pytest.raises(SourceUnavailable) as err:
        run(url, dataset, retry_window=0.5)
    assert err.value.one_line() == f"could not reach the Bento at {url}: connection refused"


def test_broken_service_reports_its_log_tail_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "broken_svc.py").write_text(
        "import bentoml\nraise RuntimeError('model store has no mlobs-sentiment')\n")
    with pytest.raises(SourceUnavailable) as err, BentoServer(
            "broken_svc:Nope", cwd=tmp_path, ready_timeout=60, log_path=tmp_path / "bento.log",
            base_env=os.environ):
        pass
    msg = err.value.one_line()
    assert "broken_svc:Nope" in msg and "exited with code" in msg
    assert "RuntimeError: model store has no mlobs-sentiment" in msg
    assert any("RuntimeError" in line for line in err.value.log_tail)
    assert msg.endswith(f"server log: {tmp_path / 'bento.log'}")
    assert wait_gone("broken_svc:Nope") == []


def test_service_that_never_gets_ready_is_stopped_at_the_deadline(tmp_path, monkeypatch, caplog):
    from mlobs.evaluate import bento

    monkeypatch.setattr(bento, "_HEARTBEAT_S", 0.3)
    caplog.set_level("INFO", logger="mlobs.evaluate.bento")
    (tmp_path / "stuck_svc.py").write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(SourceUnavailable, match="was not ready after 2 s"), BentoServer(
            "stuck_svc:Svc", cwd=tmp_path, ready_timeout=2, stop_grace=2,
            log_path=tmp_path / "bento.log", base_env=os.environ):
        pass
    assert wait_gone("stuck_svc:Svc") == []
    beats = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("waiting for the Bento to become ready")]
    assert beats and all(b.startswith("waiting for the Bento to become ready (")
                         and b.endswith(" of 2 s)") for b in beats)  # no log line to show yet


# --- failure modes against the double ----------------------------------------------------------


def test_503_twice_then_200_is_retried(tmp_path):
    def respond(texts, call_no):
        return (503, {"error": "process is overloaded"}) if call_no in (2, 3) else (200, ok(texts))

    dataset = small_dataset(tmp_path, [*PROBE, "great a", "bad b", "great c"])
    with Double(respond) as double:
        table = run(double.url, dataset, concurrency=1)
    assert table.column("error").null_count == 11
    assert table.column("prediction").to_pylist()[8:] == ["positive", "negative", "positive"]
    assert len(double.calls) == 5  # the probe, batch 1 three times, batch 2 once


def test_only_the_samples_the_model_fails_on_become_error_rows(tmp_path):
    def respond(texts, call_no):
        if "boom" in texts:
            return 500, {"error": "An unexpected error has occurred, please check the server log."}
        return 200, ok(texts)

    dataset = small_dataset(tmp_path, [*PROBE, "great a", "bad b", "boom", "great d", "bad e"],
                            batch_size=4)
    with Double(respond) as double:
        rows = run(double.url, dataset, concurrency=2).to_pylist()
    rows = rows[8:]
    assert [r["sample_id"] for r in rows] == ["8", "9", "10", "11", "12"]  # nothing dropped
    # On main the whole batch ("boom", "great d") was lost; the batch is split until the one
    # failing sample is alone.
    assert [r["prediction"] for r in rows] == ["positive", "negative", None, "positive", "negative"]
    assert rows[2]["error"] == "HTTP 500: An unexpected error has occurred, please check the server log."
    assert rows[2]["slices"] == [("language", "en")] and rows[2]["label"] == "positive"
    assert [r["error"] is None for r in rows] == [True, True, False, True, True]
    assert sum(texts == ["boom"] for texts in double.calls) == 1  # alone once, not retried


def test_one_bad_sample_in_the_probe_is_not_a_mismatch(tmp_path):
    def respond(texts, call_no):
        if "boom" in texts:
            return 500, {"error": "Input contains NaN."}
        return 200, ok(texts)

    dataset = small_dataset(tmp_path, ["great 0", "boom", *PROBE[2:], "great x"], batch_size=4)
    with Double(respond) as double:
        rows = run(double.url, dataset, concurrency=1).to_pylist()
    assert [r["error"] for r in rows][:3] == [None, "HTTP 500: Input contains NaN.", None]
    assert rows[-1]["prediction"] == "positive"


def test_a_probe_that_fails_on_every_sample_stops_the_run(tmp_path):
    dataset = small_dataset(tmp_path, [*PROBE, "x"])
    with Double(lambda texts, n: (500, {"error": "model not loaded"})) as double, \
            pytest.raises(ProbeFailed, match="the Bento refused the probe .*: HTTP 500: model not loaded"):
        run(double.url, dataset)
    assert len(double.calls) == 1 + 8  # the probe, then each of its rows alone; nothing else


def test_answers_of_the_wrong_length_or_shape_are_error_rows(tmp_path):
    def respond(texts, call_no):
        if texts[0] == "short":
            return 200, ["positive"]  # one answer for two samples
        if texts[0] == "odd":
            return 200, {"weird": 1}
        return 200, ["positive", {"prediction": 3, "probabilities": {"3": 0.7, "4": 0.3}}] * (len(texts) // 2)

    dataset = small_dataset(tmp_path, [*PROBE, "short", "y", "odd", "z"], batch_size=2)
    with Double(respond) as double:
        rows = run(double.url, dataset, concurrency=1, batch_size=2).to_pylist()
    assert rows[0]["prediction"] == "positive" and rows[0]["confidence"] is None
    assert rows[1]["prediction"] == "3" and rows[1]["confidence"] == 0.7
    assert dict(rows[1]["scores"]) == {"3": 0.7, "4": 0.3}
    assert rows[8]["error"] == rows[9]["error"] == "the Bento answered 1 predictions for 2 samples"
    assert rows[10]["error"] == rows[11]["error"] == (
        "the Bento answered an object with keys weird: none holds 2 predictions; set "
        "prediction-path to where the predictions are (e.g. 'output.labels' or 'results.*.label')")


def test_a_server_that_dies_mid_run_stops_the_run(tmp_path):
    double = Double(lambda texts, n: (200, ok(texts))).__enter__()
    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(18)])  # probe + 5 batches
    results = predict(double.url, dataset.iter_batches(), input_columns=["text"],
                      label_column="label", slice_columns=["language"], concurrency=1,
                      timeout=5, retry_window=1.0, batch_size=2, progress=None)
    first = next(results)
    assert first.num_rows == 8 and first.column("error").null_count == 8
    double.shutdown()
    # On main the rest became error rows and the run was committed; now it stops, exit 2.
    with pytest.raises(BentoStopped, match="the Bento stopped answering after about .*: "
                                           "connection refused"):
        list(results)


def test_a_server_that_stays_overloaded_stops_the_run(tmp_path):
    dataset = small_dataset(tmp_path, [f"t{i}" for i in range(10)])
    with Double(lambda texts, n: (503, {"error": "process is overloaded"})) as double, \
            pytest.raises(BentoStopped) as err:
        run(double.url, dataset, concurrency=1, retry_window=0.5)
    assert err.value.one_line().startswith(
        "the probe (8 samples sent before the dataset) failed: HTTP 503: process is overloaded (")
    assert len(double.calls) >= 2


def test_a_hung_bento_is_bounded_by_bento_timeout_with_heartbeats(tmp_path, caplog):
    # On main: 60 s per request and 300 s per batch, hard-coded, and silence while waiting.
    def respond(texts, call_no):
        return (0, 200, ok(texts)) if call_no == 1 else (30, 200, ok(texts))

    dataset = small_dataset(tmp_path, [*PROBE, *(f"t{i}" for i in range(8))], batch_size=4)
    caplog.set_level("INFO", logger="mlobs.evaluate.client")
    with Double(respond) as double, pytest.raises(BentoStopped) as err:
        run(double.url, dataset, concurrency=1, timeout=0.6, heartbeat_s=0.2)
    assert err.value.one_line().endswith(
        "no answer within 0.6 s (bento-timeout), again for a smaller batch: the Bento seems hung")
    beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for the Bento")]
    assert beats and "1 request(s) in flight, the oldest for" in beats[0]
    assert "(bento-timeout 0.6 s)" in beats[0]


def test_the_overall_deadline_stops_a_slow_run(tmp_path):
    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(40)], batch_size=1)
    with Double(lambda texts, n: (0.1, 200, ok(texts))) as double, \
            pytest.raises(DeadlineExceeded) as err:
        run(double.url, dataset, concurrency=1, batch_size=1, deadline=time.monotonic() + 0.5)
    assert err.value.one_line().startswith("the evaluation passed its deadline after ")
    assert len(double.calls) < 40


def test_a_dead_served_process_stops_the_run_at_once(tmp_path):
    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(12)])
    with Double(lambda texts, n: (200, ok(texts))) as double, \
            pytest.raises(BentoStopped, match="the Bento's server process has exited"):
        run(double.url, dataset, concurrency=1, alive=lambda: False)


def test_batches_grow_while_throughput_grows_and_shrink_on_413(tmp_path):
    # Answers cost 2 ms plus 5 µs per sample: bigger batches are faster until the 413 limit.
    def respond(texts, call_no):
        if len(texts) > 1000:
            return 413, {"error": "Request Entity Too Large"}
        return 0.002 + 5e-6 * len(texts), 200, ok(texts)

    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(20_000)], batch_size=500)
    with Double(respond) as double:
        table = run(double.url, dataset, concurrency=2, batch_size=None)
    assert table.num_rows == 20_000 and table.column("error").null_count == 20_000
    sizes = [len(c) for c in double.calls]
    assert sizes[0] == 8  # the probe, whose time per row picks the first measured size
    assert sizes[1] in (8, 16, 32, 64, 128, 256, 512, 1024)
    assert max(sizes) > 1000  # it grew past the limit ...
    assert max(sizes[-10:]) <= 1000  # ... and stayed under it after the 413s


def test_a_bento_that_sheds_big_batches_gets_smaller_ones(tmp_path):
    # BentoML answers 503 to requests it expects to miss their max latency: big batches split.
    def respond(texts, call_no):
        return (503, {"error": "process is overloaded"}) if len(texts) > 100 else (200, ok(texts))

    dataset = small_dataset(tmp_path, [f"great {i}" for i in range(2_000)], batch_size=500)
    with Double(respond) as double:
        table = run(double.url, dataset, concurrency=2, batch_size=400)
    assert table.num_rows == 2_000 and table.column("error").null_count == 2_000
    sizes = [len(c) for c in double.calls]
    assert max(sizes[-10:]) <= 100  # split, and the later batches are cut small to begin with


def test_batch_sizer_leaps_grows_and_settles_on_the_best_level():
    sizer = BatchSizer(start=64, samples_per_level=1)
    now, seen = 0.0, []
    # seconds per batch → rows/s: 64: 1,280; 128: 2,133 (×1.7: leap to 512); 512: 5,120 (×2.4:
    # leap to 2048); 2048: 4,551 (within the tolerance: grow); 4096: 2,048 (clearly worse)
    cost = {64: 0.05, 128: 0.06, 512: 0.1, 2048: 0.45, 4096: 2.0}
    for _ in range(5):
        size = sizer.size
        seen.append(size)
        sizer.completed(size, now, now + cost[size], body_bytes=size * 10)
        now += cost[size]
    assert seen == [64, 128, 512, 2048, 4096]
    assert (sizer.size, sizer.phase) == (512, "settled")
    sizer.too_big(512)
    assert sizer.size == 256 and sizer.ceiling == 511


def test_the_probe_picks_the_first_size():
    cheap, medium, heavy = BatchSizer(), BatchSizer(), BatchSizer()
    cheap.start_from(8, 0.05)  # the server's overhead, not the model: the default start
    medium.start_from(8, 0.25)  # 31 ms per sample: a quarter of the 2 s cap is 16 samples
    heavy.start_from(8, 0.8)  # 100 ms per sample (a big CNN on a CPU)
    assert (cheap.size, medium.size, heavy.size) == (256, 16, 8)
    fixed = BatchSizer(fixed=100)
    fixed.start_from(8, 0.008)
    assert fixed.size == 100


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
