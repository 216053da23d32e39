"""Deterministic request logs in the function's schema, for the SLO tests."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from mlobs import logschema as f

END = 1_795_557_600.0  # a fixed window end (2026-11-24T…Z) so tests never depend on the clock


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def requests(n: int, *, version: str = "v1", latency_ms=(60.0, 15.0), server_errors: float = 0.0,
             client_errors: float = 0.0, classes: dict[str, float] | None = None,
             start: float = END - 3000, end: float = END - 60, seed: int = 1, pod: str = "a") -> list[dict]:
    rng = random.Random(seed)
    classes = classes or {"golden retriever": 0.1, "labrador retriever": 0.3, "tabby cat": 0.6}
    names, weights = list(classes), list(classes.values())
    lines = []
    for i in range(n):
        ts = start + (end - start) * i / max(1, n - 1)
        roll = rng.random()
        latency = latency_ms(rng) if callable(latency_ms) else max(1.0, rng.gauss(*latency_ms))
        line = {f.TIMESTAMP: rfc3339(ts), f.LEVEL: "info", f.EVENT: "request",
                f.REQUEST_ID: f"{pod}-{seed}-{i}", f.MODEL_VERSION: version,
                f.CONTENT_TYPE: "image/png", f.LATENCY_MS: round(latency, 3)}
        if roll < server_errors:
            line.update({f.STATUS_CODE: 500, f.LEVEL: "error", f.ERROR_TYPE: "ModelError"})
        elif roll < server_errors + client_errors:
            line.update({f.STATUS_CODE: 400, f.LEVEL: "warning", f.ERROR_TYPE: "BadImage"})
        else:
            cls = rng.choices(names, weights)[0]
            line.update({f.STATUS_CODE: 200, f.TOP1_CLASS: cls, f.TOP1_PROB: round(rng.uniform(0.4, 1), 3)})
        lines.append(line)
    return lines


def write(path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def push(client, lines: list[dict], *, pod: str = "a", function: str = "pytorch-classifier") -> None:
    """Push lines as one Loki stream per pod, labelled like the OpenFaaS deployment."""
    values = [[str(int(datetime.fromisoformat(line[f.TIMESTAMP].replace("Z", "+00:00")).timestamp() * 1e9)),
               json.dumps(line)] for line in lines]
    client.push([{"stream": {"namespace": "openfaas-fn", "function_name": function, "pod": pod},
                  "values": values}])
