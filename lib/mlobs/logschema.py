"""The structured log line of the inference function: the contract between the function that
writes it and the SLO contracts that read it.

This file exists twice, byte for byte: in the function's package (``function/mlobs_function/``,
which writes the lines) and in the action's (``lib/mlobs/``, whose steps, embedded log-file source
and tests read them). The two ship apart — the function in its OpenFaaS image, the action in its
own — so neither imports the other; ``tests/test_function.py`` fails when the copies differ.
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

# The stream labels the function is deployed with (function/stack.yml), and the default selector.
STREAM_LABELS = {"namespace": "openfaas-fn", "function_name": "pytorch-classifier"}
DEFAULT_SELECTOR = "{" + ", ".join(f'{k}="{v}"' for k, v in STREAM_LABELS.items()) + "}"


@dataclass(frozen=True)
class LogFields:
    """Which log fields the SLO steps read; each can be renamed in a feature's Background."""

    latency: str = LATENCY_MS
    status: str = STATUS_CODE
    predicted_class: str = TOP1_CLASS
    model_version: str = MODEL_VERSION
    timestamp: str = TIMESTAMP
