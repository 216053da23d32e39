"""One request in, one response and one log line out: the function's request handling.

Status codes keep the SLOs honest: anything the client got wrong (empty body, wrong content type,
a body over the limit, bytes that are not an image, a method other than POST) is a 4xx with a
JSON error naming it; only failures inside the service are 5xx. Client-facing messages are fixed
strings — exception text, paths and stack traces go to the operator's stderr, never the client.
Latency is measured for every request, whatever its outcome.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TextIO

from mlobs_function.config import ENV_MODEL_VERSION, UNKNOWN_VERSION, FunctionConfig, StartupError
from mlobs_function.imaging import UndecodableImage, decode_image, preprocess
from mlobs_function.logline import JsonLineWriter, request_line, startup_error_line

log = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "image/webp", "application/octet-stream"}
)
REQUEST_ID_HEADERS = ("X-Request-Id", "X-Call-Id")  # the client's id, else the OpenFaaS gateway's
EXIT_STARTUP_FAILED = 1

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,63}/[a-z0-9!#$&^_.+-]{1,63}")


class Predictor(Protocol):
    def predict(self, batch: Any) -> list[tuple[str, float]]: ...


class ClientError(Exception):
    """A request the function will not process; ``message`` is shown to the client as is."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    error_type: str | None = None
    top1: tuple[str, float] | None = None


class FunctionHandler:
    """``handle(event, context)`` for the python3-http template, around a loaded classifier."""

    def __init__(
        self,
        classifier: Predictor,
        *,
        model_version: str,
        input_size: int,
        max_body_bytes: int,
        max_pixels: int,
        log_writer: JsonLineWriter,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.classifier = classifier
        self.model_version = model_version
        self.input_size = input_size
        self.max_body_bytes = max_body_bytes
        self.max_pixels = max_pixels
        self.log_writer = log_writer
        self.clock = clock

    @classmethod
    def from_config(
        cls, config: FunctionConfig, classifier: Predictor, log_writer: JsonLineWriter
    ) -> FunctionHandler:
        return cls(
            classifier,
            model_version=config.model_version,
            input_size=config.input_size,
            max_body_bytes=config.max_body_bytes,
            max_pixels=config.max_pixels,
            log_writer=log_writer,
        )

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        started = self.clock()
        headers = getattr(event, "headers", None) or {}
        request_id = _request_id(headers)
        content_type = _media_type(_header(headers, "Content-Type"))
        try:
            outcome = self._classify(event, content_type, request_id)
        except ClientError as exc:
            outcome = Outcome(exc.status, _error_body(exc.error_type, exc.message), exc.error_type)
        except Exception as exc:  # a bug outside the model; still one line and a clean 500
            log.error("request %s: internal error: %s: %s", request_id, type(exc).__name__,
                      _one_line(str(exc)))  # fmt: skip
            outcome = Outcome(500, _error_body("InternalError", "the request could not be "
                                               "processed"), "InternalError")  # fmt: skip
        latency_ms = (self.clock() - started) * 1000.0
        self.log_writer.write(request_line(
            request_id=request_id, model_version=self.model_version, content_type=content_type,
            status_code=outcome.status, latency_ms=latency_ms,
            top1_class=outcome.top1[0] if outcome.top1 else None,
            top1_prob=outcome.top1[1] if outcome.top1 else None,
            error_type=outcome.error_type,
        ))  # fmt: skip
        response_headers = {"Content-Type": "application/json", "X-Request-Id": request_id,
                            "X-Model-Version": self.model_version}  # fmt: skip
        if outcome.status == 405:
            response_headers["Allow"] = "POST"
        body = {"request_id": request_id, "model_version": self.model_version, **outcome.body}
        return {"statusCode": outcome.status, "body": json.dumps(body), "headers": response_headers}

    def _classify(self, event: Any, content_type: str | None, request_id: str) -> Outcome:
        method = str(getattr(event, "method", "POST") or "POST").upper()
        if method != "POST":
            raise ClientError("MethodNotAllowed", "send the image with POST", status=405)
        body = _body_bytes(getattr(event, "body", b""))
        if not body:
            raise ClientError("EmptyBody", "the request body is empty: send an image")
        if len(body) > self.max_body_bytes:
            raise ClientError("PayloadTooLarge",
                              f"the body is larger than {self.max_body_bytes} bytes")  # fmt: skip
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise ClientError("UnsupportedContentType",
                              "Content-Type must be image/png, image/jpeg or image/webp")  # fmt: skip
        try:
            image = decode_image(body, max_pixels=self.max_pixels, size_hint=self.input_size)
        except UndecodableImage as exc:
            raise ClientError("UndecodableImage", str(exc)) from None
        batch = preprocess(image, self.input_size)
        try:
            predictions = self.classifier.predict(batch)
        except Exception as exc:
            # The operator sees what failed; the client sees only that the model did.
            log.error("request %s: model failed: %s: %s", request_id, type(exc).__name__,
                      _one_line(str(exc)))  # fmt: skip
            return Outcome(500, _error_body("ModelError", "the model failed on this request"),
                           "ModelError")  # fmt: skip
        return Outcome(
            200,
            {"predictions": [{"label": label, "probability": round(p, 6)}
                             for label, p in predictions]},  # fmt: skip
            top1=predictions[0],
        )


def handler_from_env(
    env: Mapping[str, str] | None = None, stdout: TextIO | None = None
) -> FunctionHandler:
    """Load the model once from the environment; on failure, one JSON line and exit non-zero.

    A traceback per restart would bury the cause in a crash loop; one structured line (with the
    setting or file at fault) is what an operator needs, and Loki can alert on it.
    """
    env = os.environ if env is None else env
    writer = JsonLineWriter(stdout or sys.stdout)
    try:
        config = FunctionConfig.from_env(env)
        config.check_files()
        from mlobs_function.model import load_classifier  # torch: only once the files exist

        classifier = load_classifier(config)
    except StartupError as exc:
        _fail(writer, env, exc.error_type, str(exc))
    except Exception as exc:  # anything unforeseen still ends as one line, not a traceback
        _fail(writer, env, "StartupError", f"{type(exc).__name__}: {exc}")
    return FunctionHandler.from_config(config, classifier, writer)


def _fail(writer: JsonLineWriter, env: Mapping[str, str], error_type: str, message: str) -> NoReturn:
    version = (env.get(ENV_MODEL_VERSION) or "").strip() or UNKNOWN_VERSION
    writer.write(startup_error_line(model_version=version, error_type=error_type, message=message))
    raise SystemExit(EXIT_STARTUP_FAILED)


# --- request helpers -----------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    """A header from werkzeug's Headers (case-insensitive) or a plain dict (any case)."""
    value = headers.get(name) if hasattr(headers, "get") else None
    if value is None and isinstance(headers, Mapping):
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return None if value is None else str(value)


def _request_id(headers: Any) -> str:
    for name in REQUEST_ID_HEADERS:
        value = (_header(headers, name) or "").strip()
        if _SAFE_ID.fullmatch(value):
            return value
    # Absent or unsafe (too long, odd characters): a fresh id rather than echoing it into logs.
    return uuid.uuid4().hex


def _media_type(value: str | None) -> str | None:
    """The media type without parameters, lower-cased; ``invalid`` for anything unparseable.

    It is logged, so its length and alphabet are bounded whatever the client sent.
    """
    if value is None or not value.strip():
        return None
    media = value.split(";", 1)[0].strip().lower()
    return media if _MEDIA_TYPE.fullmatch(media) else "invalid"


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
