"""Warm per-request latency and throughput of the classifier function's handler on CPU.

Models: the tiny synthetic-shapes CNN at 64 px (the baseline every ratio is against, measured in
this same process) and resnet18 at 224 px, both with random weights built locally and loaded
through the function's own loading path (``handler_from_env``) — nothing is downloaded; latency
does not depend on what the weights learned. Requests go straight to ``handle(event, context)``
(no HTTP), so the numbers are the function's own ``latency_ms``.

Inputs: the traffic generator's valid images (PNG/JPEG, 96–224 px), and 640×480 JPEG "photos" to
show where decoding starts to matter. For each case: p50/p99 of sequential requests, sequential
throughput, throughput with 4 concurrent callers (waitress's default thread count), and the
split of the time between decode+preprocess and the model (the rest — validation, JSON, the log
line — is "other").

Usage: python bench/function_latency.py [--requests N] [--threads-sweep]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from mlobs_function import synthetic
from mlobs_function.handler import FunctionHandler, handler_from_env
from mlobs_function.imaging import decode_image, preprocess
from mlobs_function.model import build_architecture
from mlobs_function.traffic import Mix, generate_requests


@dataclass
class Event:
    body: bytes
    headers: dict[str, str]
    method: str = "POST"


@dataclass
class Case:
    name: str
    arch: str
    input_size: int
    inputs: str  # "traffic" or "photo"
    classes: int


CASES = [
    Case("tiny_cnn 64px, traffic images (baseline)", "tiny_cnn", 64, "traffic", 6),
    Case("resnet18 224px, traffic images", "resnet18", 224, "traffic", 1000),
    Case("resnet18 224px, 640×480 JPEG photos", "resnet18", 224, "photo", 1000),
]


def make_handler(case: Case, workdir: Path) -> FunctionHandler:
    """Random weights saved and loaded exactly as the function loads a real model."""
    torch.manual_seed(0)
    model_dir = workdir / f"{case.arch}-{case.classes}"
    if not model_dir.exists():
        model_dir.mkdir()
        torch.save(build_architecture(case.arch, case.classes).state_dict(), model_dir / "weights.pt")
        (model_dir / "labels.txt").write_text("".join(f"class {i}\n" for i in range(case.classes)))
    env = {"MODEL_PATH": str(model_dir / "weights.pt"), "LABELS_PATH": str(model_dir / "labels.txt"),
           "MODEL_ARCH": case.arch, "MODEL_INPUT_SIZE": str(case.input_size),
           "MODEL_VERSION": "bench", "MODEL_DEVICE": "cpu"}  # fmt: skip
    return handler_from_env(env, stdout=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run


def make_events(kind: str, count: int) -> list[Event]:
    if kind == "traffic":
        specs = generate_requests(Mix(bad_fraction=0.0), count, 8 << 20, seed=7)
        return [Event(s.body, {"Content-Type": s.content_type}) for s in specs]
    rng = random.Random(7)
    events = []
    for i in range(count):
        image = synthetic.render(synthetic.CLASSES[i % len(synthetic.CLASSES)], rng, 640)
        body = synthetic.encode(image.crop((0, 80, 640, 560)), "JPEG", quality=90)
        events.append(Event(body, {"Content-Type": "image/jpeg"}))
    return events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(handler: FunctionHandler, events: list[Event], requests: int) -> dict[str, float]:
    for event in events[:20]:  # warm: allocator, caches, lazy inits
        handler.handle(event)
    full, prep, model = [], [], []
    for i in range(requests):
        event = events[i % len(events)]
        # The whole request, then the same request stage by stage, back to back, so both see the
        # same machine (a busy neighbour shifts both, not one).
        start = time.perf_counter()
        handler.handle(event)
        full.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        batch = preprocess(decode_image(event.body, max_pixels=handler.max_pixels,
                                        size_hint=handler.input_size), handler.input_size)  # fmt: skip
        mid = time.perf_counter()
        handler.classifier.predict(batch)
        prep.append((mid - start) * 1000)
        model.append((time.perf_counter() - mid) * 1000)
    median = statistics.median(full)
    return {
        "p50": median, "p99": percentile(full, 0.99),
        "rps": 1000 / statistics.fmean(full),
        "rps4": throughput(handler, events, requests, callers=4),
        # Medians, so one preempted request does not move the split.
        "prep": statistics.median(prep) / median, "model": statistics.median(model) / median,
    }  # fmt: skip


def throughput(handler: FunctionHandler, events: list[Event], requests: int, callers: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(handler.handle, (events[i % len(events)] for i in range(requests))))
    return requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=150, help="measured requests per case")
    parser.add_argument("--threads-sweep", action="store_true",
                        help="also compare torch intra-op threads 1 vs default at 4 callers")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, CPU, {os.cpu_count()} cores, torch threads {threads}, "
          f"Python {sys.version.split()[0]}; {args.requests} warm requests per case; "
          f"load average before: {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            handler = make_handler(case, Path(tmp))
            results[case.name] = measure(handler, make_events(case.inputs, 64), args.requests)
        base = results[CASES[0].name]
        print("| case | p50 ms | p99 ms | req/s (1 caller) | req/s (4 callers) | decode+preprocess "
              "| model | other | p50 × base | req/s × base |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            other = max(0.0, 1 - r["prep"] - r["model"])
            print(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['rps4']:.0f} "
                  f"| {r['prep']:.0%} | {r['model']:.0%} | {other:.0%} "
                  f"| {r['p50'] / base['p50']:.1f}× | {r['rps'] / base['rps']:.2f}× |")  # fmt: skip
        if args.threads_sweep:
            case = CASES[1]
            handler = make_handler(case, Path(tmp))
            events = make_events(case.inputs, 64)
            print(f"\n{case.name}, 4 concurrent callers:")
            for n in sorted({1, threads}):
                torch.set_num_threads(n)
                throughput(handler, events, 10, callers=4)  # re-warm at this thread count
                rps = throughput(handler, events, args.requests, callers=4)
                print(f"- torch threads {n}: {rps:.1f} req/s")
            torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
