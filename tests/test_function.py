"""The OpenFaaS classifier function over real HTTP: status codes, one schema-valid log line per
request, startup failures, and the traffic generator feeding a log file, Loki and slo-validate.

The model is the tiny synthetic-shapes CNN, trained once per session (seconds, offline).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the function's package (function/) is not installed")
pytest.importorskip("flask", reason="the function's package (function/) is not installed")

import urllib3  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from mlobs_function import logschema as f  # noqa: E402
from mlobs_function import synthetic  # noqa: E402
from mlobs_function.config import FunctionConfig  # noqa: E402
from mlobs_function.handler import FunctionHandler, handler_from_env  # noqa: E402
from mlobs_function.imaging import UndecodableImage, decode_image  # noqa: E402
from mlobs_function.logline import (  # noqa: E402
    EVENT_STARTUP_FAILED,
    MESSAGE,
    JsonLineWriter,
    request_line_problems,
)
from mlobs_function.serve import LocalServer  # noqa: E402
from mlobs_function.traffic import BAD_KINDS, Mix, generate_requests, parse_mix  # noqa: E402
from mlobs_function.train import parse_mislabel, train  # noqa: E402

from mlobs.cli import cli  # noqa: E402
from mlobs.loki.logql import Selector  # noqa: E402
from servers.loki import LokiDouble  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_BODY = 256 * 1024  # small, so the oversize case stays cheap
VERSION = "v-test"


class LogCapture(io.TextIOBase):
    """The function's stdout, kept as parsed JSON lines (the writer already serialises writes)."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.lines += [json.loads(line) for line in text.splitlines() if line.strip()]
        return len(text)

    def for_request(self, request_id: str) -> list[dict]:
        with self._lock:
            return [line for line in self.lines if line.get(f.REQUEST_ID) == request_id]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return train(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def function_env(tiny_model) -> dict[str, str]:
    return {**tiny_model.env(), "MODEL_VERSION": VERSION, "MAX_BODY_BYTES": str(MAX_BODY)}


@pytest.fixture(scope="module")
def served(function_env):
    logs = LogCapture()
    handler = handler_from_env(function_env, stdout=logs)
    with LocalServer(handler.handle) as server:
        yield server.url, logs


@pytest.fixture(scope="module")
def http():
    return urllib3.PoolManager(retries=False, timeout=30)


def post(http, url, body: bytes, content_type: str | None, request_id: str):
    headers = {"X-Request-Id": request_id}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return http.request("POST", url, body=body, headers=headers)


def image_bytes(label: str, image_format: str, seed: int = 0, size: int = 120) -> bytes:
    return synthetic.encode(synthetic.render(label, random.Random(seed), size), image_format)


def only_line(logs: LogCapture, request_id: str) -> dict:
    lines = logs.for_request(request_id)
    assert len(lines) == 1, lines
    assert request_line_problems(lines[0]) == []
    return lines[0]


# --- successful requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_images_get_200_and_a_top5(served, http, image_format):
    url, logs = served
    correct = 0
    for seed, label in enumerate(synthetic.CLASSES):
        request_id = f"ok-{image_format}-{seed}"
        response = post(http, url, image_bytes(label, image_format, seed), f"image/{image_format.lower()}",
                        request_id)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["X-Request-Id"] == request_id
        body = json.loads(response.data)
        predictions = body["predictions"]
        assert len(predictions) == 5
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1.0 + 1e-6
        assert body["model_version"] == VERSION and body["request_id"] == request_id
        line = only_line(logs, request_id)
        assert line[f.STATUS_CODE] == 200 and line[f.LEVEL] == "info"
        assert line[f.CONTENT_TYPE] == f"image/{image_format.lower()}"
        assert line[f.TOP1_CLASS] == predictions[0]["label"]
        assert line[f.TOP1_PROB] == pytest.approx(predictions[0]["probability"], abs=1e-6)
        assert line[f.ERROR_TYPE] is None and line[f.MODEL_VERSION] == VERSION
        assert line[f.LATENCY_MS] > 0
        correct += predictions[0]["label"] == label
    # The tiny model is real: it recognises its shapes (≈99% on held-out images).
    assert correct >= len(synthetic.CLASSES) - 1


def test_a_request_id_is_generated_when_absent_or_unsafe(served, http):
    url, logs = served
    body = image_bytes("beagle", "PNG")
    for sent in (None, "x" * 500, "spaces and <angle> brackets", 'quote"d'):
        headers = {"Content-Type": "image/png"} | ({"X-Request-Id": sent} if sent else {})
        response = http.request("POST", url, body=body, headers=headers)
        assert response.status == 200
        generated = response.headers["X-Request-Id"]
        assert generated != sent and len(generated) == 32
        assert only_line(logs, generated)[f.STATUS_CODE] == 200


# --- client errors: 400, never 5xx ---------------------------------------------------------------


BAD_INPUTS = {
    "empty body": (b"", "image/png", "EmptyBody"),
    "undecodable bytes": (b"\x89PNG\r\n\x1a\n not really a png", "image/png", "UndecodableImage"),
    "truncated jpeg": (image_bytes("tabby cat", "JPEG")[:300], "image/jpeg", "UndecodableImage"),
    "wrong content type": (b'{"image_url": "https://example.com/a.jpg"}', "application/json",
                           "UnsupportedContentType"),
    "image sent as text": (image_bytes("beagle", "PNG"), "text/plain", "UnsupportedContentType"),
    "no content type": (image_bytes("beagle", "PNG"), None, "UnsupportedContentType"),
    "oversize body": (b"\xff" * (MAX_BODY + 1), "image/jpeg", "PayloadTooLarge"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_400_with_one_log_line(served, http, case):
    url, logs = served
    body, content_type, error_type = BAD_INPUTS[case]
    request_id = "bad-" + case.replace(" ", "-")
    response = post(http, url, body, content_type, request_id)
    assert response.status == 400
    payload = json.loads(response.data)
    assert payload["error"]["type"] == error_type and payload["error"]["message"]
    line = only_line(logs, request_id)
    assert line[f.STATUS_CODE] == 400 and line[f.LEVEL] == "warning"
    assert line[f.ERROR_TYPE] == error_type
    assert line[f.TOP1_CLASS] is None and line[f.TOP1_PROB] is None
    assert line[f.LATENCY_MS] >= 0


def test_only_post_classifies_and_health_is_not_logged(served, http):
    url, logs = served
    before = len(logs.lines)
    assert http.request("GET", url + "/_/health").status == 200
    assert len(logs.lines) == before  # probes are not requests
    response = http.request("GET", url, headers={"X-Request-Id": "get-1"})
    assert response.status == 405 and response.headers["Allow"] == "POST"
    assert only_line(logs, "get-1")[f.STATUS_CODE] == 405


def test_every_log_line_matches_the_schema(served, http):
    url, logs = served
    post(http, url, image_bytes("siamese cat", "JPEG"), "image/jpeg", "schema-ok")
    for case, (body, content_type, _) in BAD_INPUTS.items():
        post(http, url, body, content_type, f"schema-{case}")
    assert len(logs.lines) >= 1 + len(BAD_INPUTS)  # plus whatever the tests before sent
    for line in logs.lines:
        assert request_line_problems(line) == [], line
        assert set(line) == set(f.FIELDS)


def test_the_request_mix_and_training_options_parse():
    assert parse_mix("golden retriever=0.5, tabby cat=1.5") == {"golden retriever": 0.5,
                                                                 "tabby cat": 1.5}  # fmt: skip
    assert parse_mislabel("labrador retriever=golden retriever:1") == (
        "labrador retriever", "golden retriever", 1.0)
    for bad in ("poodle=1", "tabby cat", "tabby cat=-1", ""):
        with pytest.raises(ValueError):
            parse_mix(bad)
    for bad in ("labrador retriever=golden retriever", "a=b:0.5", "beagle=tabby cat:0"):
        with pytest.raises(ValueError):
            parse_mislabel(bad)
    specs = list(generate_requests(Mix(bad_fraction=0.5), 40, MAX_BODY, seed=3))
    assert specs == list(generate_requests(Mix(bad_fraction=0.5), 40, MAX_BODY, seed=3))
    assert {s.kind for s in specs} == {"image", *BAD_KINDS}


# --- server errors: 500 without internals ---------------------------------------------------------


class ExplodingModel:
    def predict(self, batch):
        raise RuntimeError("CUDA error: device-side assert at /opt/secret/model_internals.py:42")


def test_a_model_failure_is_a_500_without_internals(http):
    logs = LogCapture()
    handler = FunctionHandler(ExplodingModel(), model_version=VERSION, input_size=64,
                              max_body_bytes=MAX_BODY, max_pixels=10**6,
                              log_writer=JsonLineWriter(logs))
    with LocalServer(handler.handle) as server:
        response = post(http, server.url, image_bytes("beagle", "PNG"), "image/png", "boom-1")
    assert response.status == 500
    text = response.data.decode()
    for internal in ("secret", "CUDA", "RuntimeError", "Traceback", ".py"):
        assert internal not in text
    assert json.loads(text)["error"]["type"] == "ModelError"
    line = only_line(logs, "boom-1")
    assert line[f.STATUS_CODE] == 500 and line[f.LEVEL] == "error"
    assert line[f.ERROR_TYPE] == "ModelError" and line[f.LATENCY_MS] >= 0


# --- startup failures: one structured line, non-zero exit ----------------------------------------


def run_function(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=120)


def startup_line(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    line = json.loads(lines[0])
    assert line[f.LEVEL] == "error" and line[f.EVENT] == EVENT_STARTUP_FAILED
    assert line[f.TIMESTAMP].endswith("Z") and line[MESSAGE]
    return line


def test_a_missing_model_file_is_one_error_line_through_the_template_adapter(tmp_path, function_env):
    # What the python3-http template's index.py does: `from function import handler`.
    env = {**function_env, "MODEL_PATH": str(tmp_path / "nope.pt")}
    line = startup_line(run_function(["-c", "from function import handler"], env))
    assert line[f.ERROR_TYPE] == "ModelFileNotFound"
    assert line[f.MODEL_VERSION] == VERSION and "nope.pt" in line[MESSAGE]


def test_a_broken_model_file_is_one_error_line_from_the_server(tmp_path, function_env):
    broken = tmp_path / "weights.pt"
    broken.write_bytes(b"PK\x03\x04 this is not a torch checkpoint")
    env = {**function_env, "MODEL_PATH": str(broken)}
    line = startup_line(run_function(["-m", "mlobs_function.serve", "--port", "0"], env))
    assert line[f.ERROR_TYPE] == "ModelFileUnreadable"


@pytest.mark.parametrize(("change", "error_type"), [
    ({"MODEL_ARCH": "resnet_9000"}, "UnknownArchitecture"),
    ({"MODEL_ARCH": "resnet18"}, "WeightsMismatch"),
    ({"MODEL_PATH": ""}, "ConfigInvalid"),
    ({"MODEL_DEVICE": "tpu"}, "ConfigInvalid"),
])  # fmt: skip
def test_other_startup_failures_are_one_line_too(function_env, change, error_type):
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        handler_from_env({**function_env, **change}, stdout=out)
    assert exited.value.code != 0
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert line[f.ERROR_TYPE] == error_type and line[f.EVENT] == EVENT_STARTUP_FAILED


# --- the traffic generator → log file, Loki, slo-validate ----------------------------------------


def test_traffic_feeds_the_log_file_loki_and_slo_validate(tmp_path, tiny_model):
    log_file = tmp_path / "function.jsonl"
    with LokiDouble() as loki:
        result = subprocess.run(
            [sys.executable, "-m", "mlobs_function.traffic",
             "--model-dir", str(tiny_model.weights_path.parent), "--model-version", "v1",
             "--requests", "120", "--rate", "0", "--concurrency", "4", "--bad-fraction", "0.1",
             "--max-body-bytes", str(MAX_BODY), "--log-file", str(log_file),
             "--loki-url", loki.url, "--pod", "pytorch-classifier-abc12"],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        pushes = [r for r in loki.requests if r.path == "/loki/api/v1/push"]
        loki_url = loki.url
        pushed_streams = [s for r in pushes for s in json.loads(r.body)["streams"]]

        # The file holds exactly the function's lines: one schema-valid line per request.
        lines = log_file.read_text().splitlines()
        assert len(lines) == 120
        parsed = [json.loads(line) for line in lines]
        assert all(request_line_problems(line) == [] for line in parsed)
        assert {line[f.MODEL_VERSION] for line in parsed} == {"v1"}
        statuses = {line[f.STATUS_CODE] for line in parsed}
        assert 200 in statuses and 400 in statuses and not any(s >= 500 for s in statuses)

        # Loki got the same lines under stack.yml's labels plus the pod.
        expected = {m.name: m.value for m in Selector.parse(f.DEFAULT_SELECTOR).matchers}
        expected["pod"] = "pytorch-classifier-abc12"
        assert pushed_streams and all(s["stream"] == expected for s in pushed_streams)
        assert sorted(v[1] for s in pushed_streams for v in s["values"]) == sorted(lines)

        # slo-validate reads both: the file and the Loki stream give the same verdicts.
        from_file = slo_validate(tmp_path / "file", f"--logs-file={log_file}")
        from_loki = slo_validate(tmp_path / "loki", f"--loki-url={loki_url}")
    assert from_file["exit_code"] in (0, 1) and from_loki["exit_code"] in (0, 1)
    assert from_file["verdicts"] == from_loki["verdicts"]
    assert from_file["verdicts"]["Enough traffic to judge the other promises"] == "pass"
    assert from_file["verdicts"]["Server errors"] == "pass"


def slo_validate(workdir: Path, *args: str) -> dict:
    workdir.mkdir()
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""}
    result = CliRunner().invoke(cli, ["slo-validate", f"--working-directory={workdir}",
                                      "--github-token=", "--model-version=v1", "--window=1h",
                                      *args], env=env, catch_exceptions=False)  # fmt: skip
    data = json.loads((workdir / ".mlobs" / "slo-results.json").read_text())
    return {"exit_code": result.exit_code,
            "verdicts": {s["name"]: s["verdict"] for s in data["scenarios"]}}  # fmt: skip


def test_traffic_generator_help():
    result = run_function(["-m", "mlobs_function.traffic", "--help"], {})
    assert result.returncode == 0 and "--loki-url" in result.stdout and "--mix" in result.stdout


# --- pieces ------------------------------------------------------------------------------------


def test_decoding_refuses_images_over_the_pixel_limit():
    data = image_bytes("beagle", "PNG", size=64)
    assert decode_image(data, max_pixels=64 * 64).size == (64, 64)
    with pytest.raises(UndecodableImage):
        decode_image(data, max_pixels=64 * 64 - 1)


def test_stack_yml_deploys_what_the_slo_selector_reads():
    yaml = pytest.importorskip("yaml")
    # faas-cli substitutes ${VAR:-default} from the environment before parsing; here, the defaults.
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (REPO / "function" / "stack.yml").read_text())
    stack = yaml.safe_load(text)
    selector = {m.name: m.value for m in Selector.parse(f.DEFAULT_SELECTOR).matchers}
    assert selector == f.STREAM_LABELS
    function = stack["functions"][selector["function_name"]]
    assert function["namespace"] == selector["namespace"]
    assert "MODEL_VERSION" in function["environment"]
    assert function["environment"]["prefix_logs"] == "false"
    assert {"com.openfaas.scale.min", "com.openfaas.scale.max"} <= set(function["labels"])
    # The image's settings are the ones the handler reads.
    config = FunctionConfig.from_env({k: str(v) for k, v in function["environment"].items()})
    assert config.model_path.name == "weights.pt" and config.device == "auto"


# --- the function is its own package; it shares only the log schema with the action -------------


def test_the_log_schema_is_the_actions_byte_for_byte():
    """The function writes the lines the action reads: the two copies of the schema (each package
    ships its own, neither imports the other) must be the same file."""
    import mlobs.logschema

    ours = (REPO / "function" / "mlobs_function" / "logschema.py").read_bytes()
    assert ours == Path(mlobs.logschema.__file__).read_bytes(), (
        "function/mlobs_function/logschema.py and lib/mlobs/logschema.py differ: change both")
    assert Path(f.__file__).resolve() == REPO / "function" / "mlobs_function" / "logschema.py"


def test_the_function_imports_nothing_of_the_action():
    import ast

    for path in sorted((REPO / "function").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n == "mlobs" or n.startswith("mlobs.")], (path, names)
