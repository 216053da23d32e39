"""Drive the function with a realistic request mix; keep its log lines; optionally push them to Loki.

By default the generator starts the function itself (``python -m mlobs_function.serve`` on a free
loopback port, model settings from the flags or the environment), so it can read the function's
stdout: every line the function writes goes, unchanged, to ``--log-file`` (appended, so several
model versions can share one file) and, with ``--loki-url``, to Loki's push API under the stream
labels the function is deployed with in stack.yml (``namespace``, ``function_name``) plus ``pod``.
With ``--url`` it only sends requests to a function running elsewhere (its logs are the
platform's business there).

The mix: valid PNG and JPEG images of each class in ``--mix`` proportions (the synthetic shapes
the tiny model knows), plus a ``--bad-fraction`` of client errors — empty bodies, truncated or
random bytes, a JSON body with the wrong content type, bodies over the size limit — sent at
``--rate`` requests per second with up to ``--concurrency`` in flight.

Demo: v1 healthy vs v2 slower and shifted — see ``--help`` epilog.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import urllib3

from mlobs_function import config as cfg
from mlobs_function import logschema, synthetic
from mlobs_function.serve import LISTENING_PREFIX

DEFAULT_MIX = {
    "golden retriever": 0.10, "labrador retriever": 0.25, "beagle": 0.20,
    "tabby cat": 0.20, "siamese cat": 0.15, "border collie": 0.10,
}  # fmt: skip
BAD_KINDS = ("empty", "undecodable", "wrong_content_type", "oversize")
START_TIMEOUT_S = 180.0

EPILOG = """\
demo, two model versions into one log file and Loki (v2: a bigger, slower architecture trained on
data where the labradors were labelled golden retrievers, so the class mix shifts; ~1 min on 2 cores):
  python -m mlobs_function.train --out models/v1
  python -m mlobs_function.train --out models/v2 --arch resnet18 --input-size 64 --epochs 8 \\
      --mislabel "labrador retriever=golden retriever:1.0"
  python -m mlobs_function.traffic --model-dir models/v1 --model-version v1 --requests 1000 \\
      --rate 50 --log-file logs.jsonl --loki-url http://127.0.0.1:3100
  python -m mlobs_function.traffic --model-dir models/v2 --model-version v2 --requests 1000 \\
      --rate 50 --log-file logs.jsonl --loki-url http://127.0.0.1:3100
(1000 requests: the p99 contract needs that many to judge. Or shift the traffic instead of the
model: --mix "golden retriever=0.35,labrador retriever=0.05,beagle=0.2,tabby cat=0.2,...")
"""


# --- the request mix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    classes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    bad_fraction: float = 0.03
    jpeg_fraction: float = 0.5
    min_side: int = 96
    max_side: int = 224


@dataclass(frozen=True)
class RequestSpec:
    kind: str  # "image" or one of BAD_KINDS
    body: bytes
    content_type: str
    request_id: str
    label: str | None = None


def parse_mix(text: str) -> dict[str, float]:
    """``"golden retriever=0.1,tabby cat=0.9"`` → weights (normalised later by random.choices)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.rpartition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or weight < 0:
            raise ValueError(f"--mix expects CLASS=WEIGHT items, got {item.strip()!r}")
        if name not in synthetic.PATTERNS:
            raise ValueError(f"unknown class {name!r}; classes: {', '.join(synthetic.CLASSES)}")
        weights[name] = weight
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("--mix needs at least one class with a positive weight")
    return weights


def generate_requests(mix: Mix, count: int, max_body_bytes: int, seed: int) -> Iterator[RequestSpec]:
    """``count`` requests, deterministic for a seed."""
    rng = random.Random(seed)
    names, weights = list(mix.classes), list(mix.classes.values())
    for _ in range(count):
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if rng.random() < mix.bad_fraction:
            kind = rng.choice(BAD_KINDS)
            yield RequestSpec(kind, *_bad_body(kind, rng, max_body_bytes), request_id)
            continue
        label = rng.choices(names, weights)[0]
        image_format = "JPEG" if rng.random() < mix.jpeg_fraction else "PNG"
        image = synthetic.render(label, rng, rng.randint(mix.min_side, mix.max_side))
        yield RequestSpec("image", synthetic.encode(image, image_format),
                          f"image/{image_format.lower()}", request_id, label)  # fmt: skip


def _bad_body(kind: str, rng: random.Random, max_body_bytes: int) -> tuple[bytes, str]:
    if kind == "empty":
        return b"", "image/jpeg"
    if kind == "undecodable":
        if rng.random() < 0.5:  # an upload cut short
            png = synthetic.encode(synthetic.render(synthetic.CLASSES[0], rng, 96), "PNG")
            return png[: len(png) // 2], "image/png"
        return rng.randbytes(rng.randint(16, 2048)), "image/jpeg"
    if kind == "wrong_content_type":  # a client posting JSON at an image endpoint
        return json.dumps({"image_url": "https://example.com/dog.jpg"}).encode(), "application/json"
    if kind == "oversize":
        return b"\xff" * (max_body_bytes + 1), "image/jpeg"
    raise ValueError(kind)


# --- sending -----------------------------------------------------------------------------------


@dataclass
class SendStats:
    statuses: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


def send(url: str, specs: Iterator[RequestSpec], *, rate: float, concurrency: int) -> SendStats:
    """POST each request; ``rate`` per second (0 = as fast as ``concurrency`` allows)."""
    stats, lock = SendStats(), threading.Lock()
    http = urllib3.PoolManager(maxsize=concurrency, retries=False,
                               timeout=urllib3.Timeout(connect=5.0, read=120.0))  # fmt: skip
    slots = threading.BoundedSemaphore(concurrency)

    def post(spec: RequestSpec) -> None:
        try:
            response = http.request("POST", url, body=spec.body, headers={
                "Content-Type": spec.content_type, "X-Request-Id": spec.request_id})  # fmt: skip
            with lock:
                stats.statuses[response.status] += 1
        except Exception:  # refused, reset, timed out: counted, and the run fails at the end
            with lock:
                stats.transport_errors += 1
        finally:
            slots.release()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="traffic") as pool:
        for index, spec in enumerate(specs):
            if rate > 0:  # open-loop schedule: request i leaves at i / rate seconds
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            slots.acquire()  # never more than `concurrency` requests in flight
            pool.submit(post, spec)
    stats.seconds = time.monotonic() - started
    return stats


# --- the function's log: file and Loki -----------------------------------------------------------


def stream_labels(pod: str) -> dict[str, str]:
    """stack.yml's labels (the log schema's, which the default selector is made of), plus ``pod``."""
    return {**logschema.STREAM_LABELS, "pod": pod}


class LokiPush:
    """Loki's push API (``POST /loki/api/v1/push``, JSON): enough for the generator, which shares
    only the log schema with the action. 429 and 5xx are retried a few times with backoff."""

    def __init__(self, url: str, tenant: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/loki/api/v1/push"
        self.headers = {"Content-Type": "application/json"}
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        retries = urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                                allowed_methods=frozenset({"POST"}), raise_on_status=False)
        self._pool = urllib3.PoolManager(retries=retries, timeout=timeout)

    def push(self, streams: list[dict]) -> None:
        body = json.dumps({"streams": streams}).encode()
        response = self._pool.request("POST", self.url, body=body, headers=self.headers)
        if not 200 <= response.status < 300:
            text = response.data.decode("utf-8", errors="replace").strip().splitlines()
            raise RuntimeError(f"Loki answered the push with HTTP {response.status}"
                               + (f": {text[0][:300]}" if text else ""))


def entry_time_ns(line: str) -> int:
    """The line's own timestamp in nanoseconds (Loki orders by it), else now."""
    try:
        stamp = json.loads(line)[logschema.TIMESTAMP]
        # round(): the stamp has millisecond precision; a float product like …076.9999 must not
        # move the entry one millisecond earlier than the line says.
        return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000
    except (ValueError, KeyError, TypeError, AttributeError):
        return time.time_ns()


class LokiForwarder:
    """Pushes lines in batches from a background thread; ``close()`` sends the rest."""

    def __init__(self, client, labels: dict[str, str], interval_s: float = 1.0,
                 batch: int = 1000) -> None:  # fmt: skip
        self.client, self.labels = client, labels
        self.interval_s, self.batch = interval_s, batch
        self.pushed = 0
        self.error: Exception | None = None
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loki-push", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        self._queue.put(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush()

    def _flush(self) -> None:
        while self.error is None:
            lines = []
            while len(lines) < self.batch:
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not lines:
                return
            values = sorted([str(entry_time_ns(line)), line] for line in lines)
            try:
                self.client.push([{"stream": self.labels, "values": values}])
                self.pushed += len(lines)
            except Exception as exc:  # reported at the end; the log file still has every line
                self.error = exc


class FunctionProcess:
    """The function served by a child process; its stdout lines go to ``sinks``."""

    def __init__(self, env: dict[str, str], threads: int, sinks: list) -> None:
        self.sinks = sinks
        self.lines = 0
        self.url: str | None = None
        self._ready = threading.Event()
        command = [sys.executable, "-m", "mlobs_function.serve", "--host", "127.0.0.1",
                   "--port", "0", "--threads", str(threads)]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                        errors="replace")  # fmt: skip
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]  # fmt: skip
        for reader in self._readers:
            reader.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.1):
                return True
            if self.process.poll() is not None:
                return False
        return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for reader in self._readers:
            reader.join(timeout=15)  # EOF once the process is gone: every line is read
        return self.process.wait()

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            if not line:
                continue
            self.lines += 1
            for sink in self.sinks:
                sink(line)

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            if raw.startswith(LISTENING_PREFIX) and self.url is None:
                self.url = raw[len(LISTENING_PREFIX):].strip()
                self._ready.set()
            else:
                sys.stderr.write(raw)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlobs_function.traffic",
        description="Send a realistic request mix to the classifier function; keep its log lines "
        "in a file and push them to Loki.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    target = parser.add_argument_group("the function (started here unless --url is given)")
    target.add_argument("--url", help="send to a function running elsewhere; logs are not captured")
    target.add_argument("--model-dir", type=Path,
                        help="a directory mlobs_function.train wrote (weights, labels, arch, size)")
    target.add_argument("--model-path", help=f"weights file (default ${cfg.ENV_MODEL_PATH})")
    target.add_argument("--labels-path", help=f"labels file (default ${cfg.ENV_LABELS_PATH})")
    target.add_argument("--arch", help=f"architecture name (default ${cfg.ENV_MODEL_ARCH})")
    target.add_argument("--input-size", type=int, help=f"model input side (default ${cfg.ENV_INPUT_SIZE})")
    target.add_argument("--model-version", help=f"the MODEL_VERSION logged (default ${cfg.ENV_MODEL_VERSION})")
    target.add_argument("--max-body-bytes", type=int, default=cfg.DEFAULT_MAX_BODY_BYTES,
                        help="the function's body limit; oversize requests send one byte more")
    target.add_argument("--threads", type=int, default=4, help="the function's waitress threads")

    load = parser.add_argument_group("the traffic")
    load.add_argument("--requests", type=int, default=200, help="how many requests (default 200)")
    load.add_argument("--rate", type=float, default=20.0,
                      help="requests per second; 0 = as fast as the concurrency allows (default 20)")
    load.add_argument("--concurrency", type=int, default=4, help="requests in flight at most")
    load.add_argument("--mix", type=parse_mix, default=dict(DEFAULT_MIX),
                      help="class weights, e.g. 'golden retriever=0.1,tabby cat=0.9' "
                      "(default: golden retriever 10%%, the rest spread over five classes)")
    load.add_argument("--bad-fraction", type=float, default=0.03,
                      help="share of client errors: empty, undecodable, wrong type, oversize")
    load.add_argument("--jpeg-fraction", type=float, default=0.5, help="share of JPEG (else PNG)")
    load.add_argument("--seed", type=int, default=1)

    out = parser.add_argument_group("the function's log")
    out.add_argument("--log-file", type=Path, help="append the function's log lines here")
    out.add_argument("--loki-url", help="push the lines to this Loki (base URL)")
    out.add_argument("--loki-tenant", help="X-Scope-OrgID for the push")
    out.add_argument("--pod", help="the pod label (default pytorch-classifier-<version>-local)")
    return parser


def function_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.model_dir is not None:  # what train wrote there wins over the environment
        from mlobs_function.train import read_model_dir

        env.update(read_model_dir(args.model_dir))
    for name, value in ((cfg.ENV_MODEL_PATH, args.model_path), (cfg.ENV_LABELS_PATH, args.labels_path),
                        (cfg.ENV_MODEL_ARCH, args.arch), (cfg.ENV_INPUT_SIZE, args.input_size),
                        (cfg.ENV_MODEL_VERSION, args.model_version),
                        (cfg.ENV_MAX_BODY_BYTES, args.max_body_bytes)):  # fmt: skip
        if value is not None:
            env[name] = str(value)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url and (args.log_file or args.loki_url or args.model_dir or args.model_path):
        parser.error("--url sends to a running function: its logs and model are not ours to set")
    if args.requests < 1 or args.concurrency < 1 or args.rate < 0:
        parser.error("--requests and --concurrency must be >= 1, --rate >= 0")
    if not (0 <= args.bad_fraction <= 1 and 0 <= args.jpeg_fraction <= 1):
        parser.error("--bad-fraction and --jpeg-fraction are shares between 0 and 1")
    mix = Mix(args.mix, args.bad_fraction, args.jpeg_fraction)
    specs = generate_requests(mix, args.requests, args.max_body_bytes, args.seed)

    if args.url:
        stats = send(args.url, specs, rate=args.rate, concurrency=args.concurrency)
        _report(stats, None)
        return 0 if stats.transport_errors == 0 else 1

    env = function_env(args)
    version = env.get(cfg.ENV_MODEL_VERSION) or cfg.UNKNOWN_VERSION
    labels = stream_labels(args.pod or f"pytorch-classifier-{version}-local")
    log_file: TextIO | None = None
    forwarder: LokiForwarder | None = None
    sinks = []
    if args.log_file:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file = args.log_file.open("a", encoding="utf-8")
        sinks.append(lambda line: log_file.write(line + "\n"))
    if args.loki_url:
        forwarder = LokiForwarder(LokiPush(args.loki_url, tenant=args.loki_tenant), labels)
        sinks.append(forwarder.add)

    function = FunctionProcess(env, args.threads, sinks)
    stats: SendStats | None = None
    try:
        if function.wait_ready(START_TIMEOUT_S):
            stats = send(function.url, specs, rate=args.rate, concurrency=args.concurrency)
    finally:
        code = function.stop()
        if log_file is not None:
            log_file.close()
        if forwarder is not None:
            forwarder.close()
    if stats is None:
        print(f"error: the function did not start (exit code {code}); its log says why",
              file=sys.stderr)  # fmt: skip
        return 1
    _report(stats, function.lines, args.log_file, forwarder, labels)
    failed = stats.transport_errors > 0 or function.lines != stats.answered
    if function.lines != stats.answered:
        print(f"error: {stats.answered} responses but {function.lines} log lines", file=sys.stderr)
    if forwarder is not None and forwarder.error is not None:
        print(f"error: pushing to Loki failed: {forwarder.error}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _report(stats: SendStats, lines: int | None, log_file: Path | None = None,
            forwarder: LokiForwarder | None = None, labels: dict[str, str] | None = None) -> None:  # fmt: skip
    codes = ", ".join(f"{code}×{n}" for code, n in sorted(stats.statuses.items()))
    rate = stats.answered / stats.seconds if stats.seconds else 0.0
    print(f"sent {stats.answered + stats.transport_errors} requests in {stats.seconds:.1f}s "
          f"({rate:.1f}/s): {codes or 'no answers'}"
          + (f", {stats.transport_errors} transport errors" if stats.transport_errors else ""))  # fmt: skip
    if lines is not None:
        print(f"function log: {lines} lines" + (f" appended to {log_file}" if log_file else ""))
    if forwarder is not None:
        print(f"loki: pushed {forwarder.pushed} lines under {labels}")


if __name__ == "__main__":
    sys.exit(main())
