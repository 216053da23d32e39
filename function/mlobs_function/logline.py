"""The function's log: one JSON object per line on stdout, one line per request.

Field names come from :mod:`mlobs_function.logschema` only. Every request line carries every field — absent
values are ``null``, which Loki's ``| json`` and the embedded log-file source both drop — so a
line can be checked against :data:`REQUEST_FIELD_TYPES` without knowing how the request ended.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from mlobs_function import logschema as f

EVENT_INFERENCE = "inference"
EVENT_STARTUP_FAILED = "startup_failed"

LEVEL_INFO = "info"
LEVEL_WARNING = "warning"  # client errors: worth seeing, not the service's fault
LEVEL_ERROR = "error"

# The startup failure line is not a request; its one extra field comes from the schema too.
MESSAGE = f.MESSAGE

_NUMBER = (int, float)
REQUEST_FIELD_TYPES: Mapping[str, tuple[type, ...]] = {
    f.TIMESTAMP: (str,),
    f.LEVEL: (str,),
    f.EVENT: (str,),
    f.REQUEST_ID: (str,),
    f.MODEL_VERSION: (str,),
    f.CONTENT_TYPE: (str, type(None)),  # null when the request had no Content-Type
    f.STATUS_CODE: (int,),
    f.LATENCY_MS: _NUMBER,
    f.TOP1_CLASS: (str, type(None)),  # null unless status 200
    f.TOP1_PROB: (*_NUMBER, type(None)),
    f.ERROR_TYPE: (str, type(None)),  # null on status 200
}
if set(REQUEST_FIELD_TYPES) != set(f.FIELDS):  # a field added to logschema must be typed here
    raise RuntimeError("mlobs_function.logschema.FIELDS and REQUEST_FIELD_TYPES disagree")


def rfc3339(moment: datetime | None = None) -> str:
    """UTC with milliseconds and ``Z``, as Loki, Grafana and the log-file source all read it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def level_for(status_code: int) -> str:
    if status_code >= 500:
        return LEVEL_ERROR
    return LEVEL_WARNING if status_code >= 400 else LEVEL_INFO


def request_line(
    *,
    request_id: str,
    model_version: str,
    content_type: str | None,
    status_code: int,
    latency_ms: float,
    top1_class: str | None = None,
    top1_prob: float | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    return {
        f.TIMESTAMP: rfc3339(),
        f.LEVEL: level_for(status_code),
        f.EVENT: EVENT_INFERENCE,
        f.REQUEST_ID: request_id,
        f.MODEL_VERSION: model_version,
        f.CONTENT_TYPE: content_type,
        f.STATUS_CODE: status_code,
        f.LATENCY_MS: round(latency_ms, 3),
        f.TOP1_CLASS: top1_class,
        f.TOP1_PROB: None if top1_prob is None else round(top1_prob, 6),
        f.ERROR_TYPE: error_type,
    }


def startup_error_line(*, model_version: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        f.TIMESTAMP: rfc3339(),
        f.LEVEL: LEVEL_ERROR,
        f.EVENT: EVENT_STARTUP_FAILED,
        f.MODEL_VERSION: model_version,
        f.ERROR_TYPE: error_type,
        MESSAGE: " ".join(message.split()),  # one line, whatever the exception said
    }


def request_line_problems(line: Mapping[str, Any]) -> list[str]:
    """What is wrong with a request line (empty when it matches the schema)."""
    problems = []
    for name, types in REQUEST_FIELD_TYPES.items():
        if name not in line:
            problems.append(f"{name} is missing")
            continue
        value = line[name]
        # bool is an int subclass; a status code or latency of True is still wrong.
        if isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{name} has type {type(value).__name__}")
    extra = set(line) - set(REQUEST_FIELD_TYPES)
    if extra:
        problems.append(f"unexpected fields {sorted(extra)}")
    if not problems:
        try:
            datetime.fromisoformat(line[f.TIMESTAMP].replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{f.TIMESTAMP} is not RFC 3339")
        if not line[f.TIMESTAMP].endswith("Z"):
            problems.append(f"{f.TIMESTAMP} is not UTC")
    return problems


class JsonLineWriter:
    """Writes one JSON object per line; a lock keeps concurrent requests' lines whole."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def write(self, line: Mapping[str, Any]) -> None:
        text = json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            self.stream.write(text)
            # Flushed per line: the traffic generator and the container runtime read a pipe, and
            # a request's line must be there by the time its response is.
            self.stream.flush()
