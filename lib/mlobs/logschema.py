"""The structured log line of the inference function — one source of truth.

The OpenFaaS function writes exactly these fields (one JSON object per request); the SLO steps, the
embedded log-file source and the tests read them by these names.
"""

from __future__ import annotations

from dataclasses import dataclass

TIMESTAMP = "timestamp"  # RFC 3339, UTC
LEVEL = "level"
EVENT = "event"
REQUEST_ID = "request_id"
MODEL_VERSION = "model_version"
CONTENT_TYPE = "content_type"
STATUS_CODE = "status_code"
LATENCY_MS = "latency_ms"
TOP1_CLASS = "top1_class"
TOP1_PROB = "top1_prob"
ERROR_TYPE = "error_type"

# Only on the function's startup-failure line (not a request): what went wrong, in one line.
MESSAGE = "message"

FIELDS = (TIMESTAMP, LEVEL, EVENT, REQUEST_ID, MODEL_VERSION, CONTENT_TYPE, STATUS_CODE,
          LATENCY_MS, TOP1_CLASS, TOP1_PROB, ERROR_TYPE)

# The stream labels the function is deployed with (function/stack.yml) and the default selector.
DEFAULT_SELECTOR = '{namespace="openfaas-fn", function_name="pytorch-classifier"}'


@dataclass(frozen=True)
class LogFields:
    """Which log fields the SLO steps read; each can be renamed in a feature's Background."""

    latency: str = LATENCY_MS
    status: str = STATUS_CODE
    predicted_class: str = TOP1_CLASS
    model_version: str = MODEL_VERSION
    timestamp: str = TIMESTAMP
