"""mlobs evaluate's new inputs and refusals, through the real CLI in a subprocess, against the
loopback Bento double: duplicate ids refused before anything is sent, a hung Bento bounded by
bento-timeout, the overall deadline, and one clear line for each bad value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers.bento import Double

BIN = Path(sys.executable).parent


def ok(texts: list[str]) -> list[dict]:
    return [{"label": "positive" if "great" in t else "negative",
             "scores": {"positive": 0.9, "negative": 0.1}} for t in texts]


def dataset(tmp_path: Path, n: int = 30, ids=None) -> Path:
    path = tmp_path / "golden.jsonl"
    ids = ids or [f"s{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": ids[i], "text": f"great {i}" if i % 2 else f"bad {i}",
                                        "label": "positive" if i % 3 else "negative"}) + "\n"
                            for i in range(n)))
    return path


def evaluate(workspace: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    cmd = [str(BIN / "mlobs"), "evaluate", f"--working-directory={workspace}", "--github-token=",
           "--model-version=v1", "--id-column=id", "--input-columns=text", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("mlobs: error:")]


def test_duplicate_ids_are_refused_before_anything_is_sent(tmp_path):
    ids = [f"s{i}" for i in range(28)] + ["s3", "s7"]
    with Double(lambda texts, n: (200, ok(texts))) as bento:
        proc = evaluate(tmp_path, f"--bento-url={bento.url}", f"--dataset={dataset(tmp_path, ids=ids)}")
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [
        "mlobs: error: dataset golden.jsonl: id column 'id' repeats 2 id(s): 's3' ×2, 's7' ×2; ids "
        "must be unique (each row is one sample in the table)"]
    assert bento.calls == []  # on main they were accepted and sent


def test_a_hung_bento_fails_within_bento_timeout(tmp_path):
    # The probe is answered; everything after it hangs for a minute.
    def respond(texts, call_no):
        return (0, 200, ok(texts)) if call_no == 1 else (60, 200, ok(texts))

    with Double(respond) as bento:
        proc = evaluate(tmp_path, f"--bento-url={bento.url}", f"--dataset={dataset(tmp_path)}",
                        "--bento-timeout=1", "--batch-size=4", "--concurrency=1")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("mlobs: error: the Bento stopped answering after about 8 samples: no "
                           "answer within 1 s (bento-timeout)")
    assert "waiting for the Bento: 1 request(s) in flight" not in proc.stderr  # < 10 s: no beat
    assert not list((tmp_path / ".mlobs").rglob("*.parquet"))  # nothing committed


def test_the_deadline_stops_a_slow_run_and_nothing_is_committed(tmp_path):
    with Double(lambda texts, n: (0.3, 200, ok(texts))) as bento:
        proc = evaluate(tmp_path, f"--bento-url={bento.url}", f"--dataset={dataset(tmp_path, 200)}",
                        "--deadline=2s", "--batch-size=1", "--concurrency=1")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("mlobs: error: the evaluation passed its deadline after ")
    assert line.endswith("samples; nothing was committed — raise the deadline input, or make the "
                         "Bento faster (more workers, a smaller dataset)")
    assert len(bento.calls) < 200
    assert not list((tmp_path / ".mlobs").rglob("*.parquet"))


@pytest.mark.parametrize(("arg", "message"), [
    ("--deadline=soon", "deadline must be a positive duration like 90, 90s, 15m or 2h, got 'soon'"),
    ("--bento-timeout=0", "bento-timeout must be a positive duration like 90, 90s, 15m or 2h, got '0'"),
    ("--batch-size=many", "batch-size must be auto or a whole number, got 'many'"),
    ("--input-format=xml", "input-format must be auto or one of columns, row, records, dataframe, "
                           "array (optionally FORMAT:PARAMETER), got 'xml'"),
    ("--class-names=classes.txt", "class-names: 'classes.txt' is neither comma-separated names nor "
                                  "a file (looked for {ws}/classes.txt)"),
    ("--prediction-path=a..b", "prediction-path 'a..b' has an empty segment; write it like "
                               "'output.predictions' or 'results.*.label'"),
])
def test_bad_values_are_one_line_and_exit_2(tmp_path, arg, message):
    proc = evaluate(tmp_path, "--bento-url=http://127.0.0.1:9", f"--dataset={dataset(tmp_path)}", arg)
    assert proc.returncode == 2
    assert error_lines(proc) == [f"mlobs: error: {message.format(ws=tmp_path)}"]


def test_a_bento_without_an_openapi_document_gets_one_list_per_column(tmp_path):
    with Double(lambda texts, n: (200, ok(texts)), docs=None) as bento:
        proc = evaluate(tmp_path, f"--bento-url={bento.url}", f"--dataset={dataset(tmp_path)}")
    assert proc.returncode == 0, proc.stderr
    assert "serves no OpenAPI document (/docs.json): sending one list parameter per input column" \
        in proc.stderr
    assert sum(len(c) for c in bento.calls) == 30


def test_one_column_goes_to_the_one_parameter_whatever_its_name(tmp_path):
    # The double's API takes `text`; the dataset calls it `review` (on main: HTTP 400 per row).
    path = tmp_path / "reviews.csv"
    path.write_text("id,review,label\n" + "".join(f"r{i},great {i},positive\n" for i in range(12)))
    with Double(lambda texts, n: (200, ok(texts))) as bento:
        proc = evaluate(tmp_path, f"--bento-url={bento.url}", f"--dataset={path}",
                        "--input-columns=review")
    assert proc.returncode == 0, proc.stderr
    assert "with one list parameter per input column ('review' as 'text') (from OpenAPI)" in proc.stderr
    assert sum(len(c) for c in bento.calls) == 12
