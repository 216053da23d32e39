"""Send dataset batches to a Bento's batchable API and turn the answers into prediction rows.

Each client batch is one ``POST /<api>`` with ``{"<input column>": [values, …], …}`` — the shape
of a BentoML batchable API whose parameters are named like the input columns. At most
``concurrency`` requests are in flight, and only ``2 × concurrency`` batches are held in memory
(a window that slides as answers arrive), so a dataset of any size streams through.

Output is one RecordBatch per input batch, in input order (deterministic whatever the completion
order), conforming to :func:`mlobs.lake.schema.sample_arrow_schema`. Within a batch the answer
is positional: item *i* belongs to row *i*.

Failures: 429/502/503/504, connection errors and timeouts are retried with full-jitter
exponential backoff (``Retry-After`` honoured) until ``deadline_per_batch``; other answers
(a 500 is the model raising on that input, a 4xx a request the API rejects) are not retried.
A batch that still fails becomes error rows — prediction null, ``error`` the short reason — and
is never dropped. A server that cannot be reached at all before the first batch raises
SourceUnavailable instead of producing a run of nothing but errors. A batch that uses up its
deadline retrying (the server died, or stays overloaded) trips a breaker: later batches get one
attempt each until one succeeds, so a broken server fails the run's remaining batches quickly
instead of each waiting out its deadline.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from mlobs.errors import ConfigError, SourceUnavailable
from mlobs.evaluate.progress import Progress
from mlobs.lake.schema import sample_arrow_schema

__all__ = ["BentoUnreachable", "Prediction", "parse_item", "predict"]

log = logging.getLogger(__name__)

SAMPLE_ID = "sample_id"
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BACKOFF_BASE_S = 0.05  # BentoML sheds load with 503 for milliseconds, not seconds
_BACKOFF_CAP_S = 2.0
_REACH_GRACE_S = 10.0  # how long the first contact may keep failing to connect
_MAX_REASON = 200
_MAX_LOGGED_FAILURES = 10


class BentoUnreachable(SourceUnavailable):
    """Nothing answered at the Bento's URL before the first batch."""


class Prediction(NamedTuple):
    """One parsed response item (a NamedTuple: thousands are made per second)."""

    prediction: str | None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    error: str | None = None


def parse_item(item: Any) -> Prediction:
    """A response item → Prediction. Accepts a bare label (string or number) or an object with
    ``label``/``prediction`` and optional ``scores``/``probabilities`` and ``confidence``.
    Confidence is the given one, else the highest score, else null."""
    if type(item) is dict:  # fast path for the common shape: {"label": str, "scores": {str: float}}
        label, raw = item.get("label"), item.get("scores")
        if type(label) is str and type(raw) is dict and raw and "confidence" not in item:
            values = raw.values()  # JSON object keys are always strings
            if all(type(v) is float for v in values):
                return Prediction(label, max(values), raw)
    if isinstance(item, str | int) and not isinstance(item, bool):
        return Prediction(prediction=str(item))
    if not isinstance(item, dict):
        return Prediction(None, error=f"unreadable prediction item: {_short(json.dumps(item))}")
    label = item.get("label", item.get("prediction"))
    if label is None or isinstance(label, dict | list | bool):
        reason = item.get("error") or f"prediction item has no label: {_short(json.dumps(item))}"
        return Prediction(None, error=_short(str(reason)))
    raw_scores = item.get("scores", item.get("probabilities"))
    scores: dict[str, float] | None = None
    if isinstance(raw_scores, dict):
        try:
            scores = {str(k): float(v) for k, v in raw_scores.items()}
        except (TypeError, ValueError):
            return Prediction(str(label), error=f"non-numeric scores: {_short(json.dumps(raw_scores))}")
    confidence = item.get("confidence")
    if isinstance(confidence, int | float) and not isinstance(confidence, bool):
        confidence = float(confidence)
    elif scores:
        confidence = max(scores.values())
    else:
        confidence = None
    return Prediction(str(label), confidence=confidence, scores=scores)


def predict(
    url: str,
    batches: Iterable[pa.RecordBatch],
    *,
    api: str = "predict",
    input_columns: list[str],
    label_column: str,
    slice_columns: list[str],
    concurrency: int,
    timeout: float,
    deadline_per_batch: float,
    progress: Progress | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield one :func:`sample_arrow_schema` batch per input batch, in input order.

    ``batches`` carry ``sample_id`` (else the running row index is used), the input columns,
    the label column and the slice columns (see :mod:`mlobs.evaluate.dataset`). ``timeout``
    bounds one HTTP attempt, ``deadline_per_batch`` all attempts of one batch. Raises
    SourceUnavailable when the URL does not answer at all, ConfigError for bad arguments.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if not input_columns:
        raise ConfigError("no input columns to send to the Bento")
    if timeout <= 0 or deadline_per_batch <= 0:
        raise ConfigError("timeout and deadline_per_batch must be positive")
    transport = _Transport(url.rstrip("/"), api.strip("/"), timeout=timeout,
                           deadline=deadline_per_batch, pool_size=concurrency)
    transport.check_reachable()  # now, so attach mode fails before any batch is read
    return _stream(transport, batches, input_columns=input_columns, label_column=label_column,
                   slice_columns=slice_columns, concurrency=concurrency, progress=progress)


def _stream(transport: _Transport, batches: Iterable[pa.RecordBatch], *, input_columns: list[str],
            label_column: str, slice_columns: list[str], concurrency: int,
            progress: Progress | None) -> Iterator[pa.RecordBatch]:
    window: deque[tuple[pa.RecordBatch, int, Future[_Outcome]]] = deque()
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mlobs-bento")
    offset = failures = 0
    try:

        def finish(batch: pa.RecordBatch, start: int, future: Future[_Outcome]) -> pa.RecordBatch:
            nonlocal failures
            outcome = future.result()
            out = _to_rows(batch, start, outcome, label_column=label_column,
                           slice_columns=slice_columns)
            errors = out.num_rows - out.column("error").null_count
            if outcome.error is not None:
                failures += 1
                if failures <= _MAX_LOGGED_FAILURES:
                    log.warning("batch of %d samples from row %d failed: %s", batch.num_rows,
                                start, outcome.error)
                    if failures == _MAX_LOGGED_FAILURES:
                        log.warning("further failed batches are not logged one by one")
            if progress is not None:
                progress.update(out.num_rows, errors)
            return out

        for batch in batches:
            _check_columns(batch, [*input_columns, label_column, *slice_columns])
            if batch.num_rows == 0:
                continue
            window.append((batch, offset, executor.submit(transport.send, batch, input_columns)))
            offset += batch.num_rows
            # Submitted beyond `concurrency` only wait in the executor's queue: at most
            # `concurrency` requests are in flight, and a slow head batch does not idle the rest.
            if len(window) >= 2 * concurrency:
                yield finish(*window.popleft())
        while window:
            yield finish(*window.popleft())
    finally:
        transport.stopping.set()  # abandoned (error, interrupt, generator closed): stop retries
        for *_, future in window:
            future.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
        if progress is not None:
            progress.close()
        if failures:
            log.warning("%d batch(es) failed and were recorded as error rows", failures)


# --- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    items: list[Any] | None
    error: str | None = None


class _Retryable(Exception):
    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Transport:
    base_url: str
    api: str
    timeout: float
    deadline: float
    pool_size: int
    stopping: threading.Event = field(default_factory=threading.Event)
    down: bool = False  # set when a batch used up its deadline retrying; cleared by a 2xx
    _pool: urllib3.PoolManager = field(init=False, repr=False)
    _jitter: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(maxsize=self.pool_size, block=False, retries=False)
        self._jitter = wait_random_exponential(multiplier=_BACKOFF_BASE_S, max=_BACKOFF_CAP_S)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/{self.api}"

    def check_reachable(self) -> None:
        """Any HTTP answer (even 404) proves something listens; connection errors retry briefly."""
        grace = min(self.deadline, _REACH_GRACE_S)
        try:
            for attempt in self._retrying(grace, single=False):
                with attempt:
                    self._attempt("GET", f"{self.base_url}/readyz", None, min(self.timeout, grace),
                                  check_status=False)
        except _Retryable as exc:
            raise BentoUnreachable(f"could not reach the Bento at {self.base_url}: {exc.reason}") from None

    def send(self, batch: pa.RecordBatch, input_columns: list[str]) -> _Outcome:
        """POST one batch; runs on a worker thread. Never raises: failures become an error."""
        try:
            body = _encode(batch, input_columns)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            return _Outcome(None, f"could not encode the inputs as JSON: {_short(str(exc))}")
        start = time.monotonic()
        retrying = self._retrying(self.deadline, single=self.down)
        try:
            for attempt in retrying:
                with attempt:
                    remaining = self.deadline - (time.monotonic() - start)
                    data = self._attempt("POST", self.endpoint, body,
                                         max(0.001, min(self.timeout, remaining)))
                    return _parse_answer(data, batch.num_rows)
        except _Retryable as exc:
            self.down = True  # dead or persistently overloaded: later batches try once each
            tries = retrying.statistics.get("attempt_number", 1)
            suffix = f" (gave up after {tries} attempts)" if tries > 1 else ""
            return _Outcome(None, _short(exc.reason + suffix))
        except _Failed as exc:
            return _Outcome(None, exc.reason)
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def _retrying(self, deadline: float, *, single: bool) -> Retrying:
        stop = stop_before_delay(deadline) | (lambda rs: self.stopping.is_set())
        if single:  # the breaker is open: one attempt, so a dead server fails fast
            stop = stop | stop_after_attempt(1)
        return Retrying(stop=stop, wait=self._wait, retry=retry_if_exception_type(_Retryable),
                        sleep=self.stopping.wait, reraise=True)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.deadline)
        return float(self._jitter(state))

    def _attempt(self, method: str, url: str, body: bytes | None, timeout: float,
                 *, check_status: bool = True) -> bytes:
        try:
            response = self._pool.request(
                method, url, body=body, redirect=False,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _Retryable(_describe_error(exc, timeout)) from None
        if 200 <= response.status < 300:
            self.down = False  # only a real answer closes the breaker; a 503 does not
            return response.data
        if not check_status:
            return response.data
        reason = f"HTTP {response.status}: {_error_text(response.data)}"
        if response.status in _RETRY_STATUSES:
            raise _Retryable(reason, retry_after=_retry_after(response.headers.get("Retry-After")))
        raise _Failed(_short(reason))


def _encode(batch: pa.RecordBatch, input_columns: list[str]) -> bytes:
    payload = {name: batch.column(name).to_pylist() for name in input_columns}
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")


def _parse_answer(data: bytes, expected: int) -> _Outcome:
    try:
        items = json.loads(data)
    except ValueError:
        raise _Failed(f"the Bento answered something that is not JSON: {_short(data.decode(errors='replace'))}") from None
    if not isinstance(items, list):
        raise _Failed(f"the Bento answered a {type(items).__name__}, not a list of predictions")
    if len(items) != expected:
        raise _Failed(f"the Bento answered {len(items)} predictions for {expected} samples")
    return _Outcome(items)


def _describe_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {timeout:.3g} s"
    text = str(getattr(exc, "reason", None) or exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host"
    # After the checks above: urllib3's NewConnectionError subclasses ConnectTimeoutError.
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection lost"
    return _short(text)


def _error_text(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return _short(text)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message = parsed["error"]
        detail = parsed.get("detail")
        # BentoML's 400 says "1 validation error for Input"; its detail names the field, which
        # is what a wrong input-columns setting needs to show.
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = ".".join(str(p) for p in detail[0].get("loc", []))
            message += f" ({loc}: {detail[0].get('msg', '')})" if loc else ""
        return _short(message)
    return _short(text)


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to backoff
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 1] + "…"


# --- rows ------------------------------------------------------------------------------------


_SCORES = pa.map_(pa.string(), pa.float64())
_SLICES = pa.map_(pa.string(), pa.string())


def _check_columns(batch: pa.RecordBatch, needed: list[str]) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in batch.schema.names]
    if missing:
        raise ConfigError(f"batch lacks column(s) {', '.join(map(repr, missing))}; it has "
                          f"{', '.join(batch.schema.names)}")


def _to_rows(batch: pa.RecordBatch, start: int, outcome: _Outcome, *, label_column: str,
             slice_columns: list[str]) -> pa.RecordBatch:
    n = batch.num_rows
    if SAMPLE_ID in batch.schema.names:
        sample_id = _text(batch.column(SAMPLE_ID))
    else:
        sample_id = pa.array([str(i) for i in range(start, start + n)], pa.string())
    columns = None if outcome.items is None else _fast_columns(outcome.items)
    if columns is None:
        parsed = ([Prediction(None, error=outcome.error)] * n if outcome.items is None
                  else [parse_item(item) for item in outcome.items])
        predictions, confidences, scores, errors = zip(*parsed, strict=True)
        columns = (pa.array(predictions, pa.string()), pa.array(confidences, pa.float64()),
                   _scores(scores), pa.array(errors, pa.string()))
    prediction, confidence, score_map, error = columns
    arrays = [sample_id, _text(batch.column(label_column)), prediction, confidence, score_map,
              _slices(batch, slice_columns), error]
    return pa.RecordBatch.from_arrays(arrays, schema=sample_arrow_schema())


def _fast_columns(items: list[Any]) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array] | None:
    """Columns straight from items that all have the common shape ``{"label": str, "scores":
    {str: number}}`` (no explicit confidence); None sends the batch through :func:`parse_item`.
    The client's CPU is mostly spent here, so this skips the per-item objects."""
    labels: list[str] = []
    confidences: list[float] = []
    offsets, keys, values = [0], [], []
    try:
        for item in items:
            label, raw = item["label"], item["scores"]
            if type(label) is not str or type(raw) is not dict or not raw or "confidence" in item:
                return None
            labels.append(label)
            confidences.append(max(raw.values()))  # TypeError on mixed types → slow path
            keys.extend(raw)
            values.extend(raw.values())
            offsets.append(len(keys))
        score_values = pa.array(values, pa.float64())  # ArrowInvalid/TypeError on non-numbers
    except (KeyError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    score_map = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys, pa.string()),
                                        score_values, type=_SCORES)
    return (pa.array(labels, pa.string()), pa.array(confidences, pa.float64()), score_map,
            pa.nulls(len(labels), pa.string()))


def _scores(rows: tuple[dict[str, float] | None, ...]) -> pa.Array:
    """Per-row score dicts → a map array, built from flat keys/values (much faster than dicts)."""
    offsets, keys, values, valid = [0], [], [], []
    for row in rows:
        if row is not None:
            keys.extend(row)
            values.extend(row.values())
        offsets.append(len(keys))
        valid.append(row is not None)
    mask = None if all(valid) else pa.array([not v for v in valid])
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys, pa.string()),
                                   pa.array(values, pa.float64()), type=_SCORES, mask=mask)


def _slices(batch: pa.RecordBatch, columns: list[str]) -> pa.Array:
    """Row i → {column: value} for the slice columns, built column-wise (no per-row dicts)."""
    n, k = batch.num_rows, len(columns)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    if not k:
        empty = pa.array([], pa.string())
        return pa.MapArray.from_arrays(offsets, empty, empty, type=_SLICES)
    keys = pa.array(columns * n, pa.string())
    if k == 1:
        return pa.MapArray.from_arrays(offsets, keys, _text(batch.column(columns[0])), type=_SLICES)
    stacked = pa.concat_arrays([_text(batch.column(c)) for c in columns])
    order = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major interleave
    return pa.MapArray.from_arrays(offsets, keys, stacked.take(pa.array(order)), type=_SLICES)


def _text(array: pa.Array) -> pa.Array:
    return array if pa.types.is_string(array.type) else array.cast(pa.string())
