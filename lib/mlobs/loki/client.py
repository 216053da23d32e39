"""A small Loki HTTP client: instant and range metric queries, push, retries within a deadline.

Retries follow the package's one policy (:mod:`mlobs.retry`: full jitter, ``Retry-After``, a total
deadline): 429, 5xx and connection errors and timeouts are retried; a 4xx is Loki refusing the
request and is not. Credentials live only in request headers: no message, log line or repr ever
contains them.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from mlobs import __version__
from mlobs.errors import ConfigError, MlobsError, SourceUnavailable, first_line
from mlobs.retry import Backoff, retry_after_seconds

__all__ = [
    "LokiClient",
    "LokiQueryError",
    "LokiResponseError",
    "LokiTimeout",
    "LokiUnavailable",
    "Sample",
    "Series",
]

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_POOL_SIZE = 16
_MAX_QUOTED = 500


class LokiQueryError(MlobsError):
    """Loki refused the request (HTTP 4xx other than 429): a bad query, credentials or tenant."""

    def __init__(
        self, message: str, *, status: int, loki_message: str, query: str | None = None,
        hint: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message, hint=hint)
        self.status = status
        self.loki_message = loki_message
        self.query = query


class LokiResponseError(MlobsError):
    """Loki answered, but not with what its HTTP API documents for the request."""


class LokiUnavailable(SourceUnavailable):
    """Loki could not be reached, or kept failing (429/5xx, timeouts) until the deadline."""


class LokiTimeout(LokiUnavailable):
    """A query ran out of time — the client's read timeout, or Loki's own (HTTP 504) — and the
    caller asked to hear about it at once rather than retry (it can split the query instead)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and its value (NaN and ±Inf included)."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query; ``points`` are ``(unix seconds, value)``, empty steps absent."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


class _Retry(Exception):
    """An attempt that may succeed when repeated (429, 5xx, a connection error, a timeout)."""

    def __init__(self, reason: str, *, retry_after: float | None = None,
                 timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after  # seconds Loki asked us to wait (Retry-After)
        self.timed_out = timed_out  # the read timeout, or Loki's own (HTTP 504)


class LokiClient:
    """Query Grafana Loki's HTTP API.

    ``timeout`` bounds each HTTP attempt (connect and read); ``deadline`` bounds a whole logical
    request including retries and the waits between them (an attempt already in flight when the
    deadline passes may still take up to ``timeout``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tenant: str | None = None,
        ca_bundle: str | Path | None = None,
        timeout: float = 10.0,
        deadline: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        try:
            parts = urlsplit(base_url.strip())
            port = parts.port
        except (AttributeError, ValueError):
            parts, port = None, None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"invalid Loki URL {_redact_url(str(base_url))!r}",
                hint="use the base URL, e.g. https://loki.example.com",
            )
        if parts.username is not None:
            # Credentials in the URL become basic auth and leave the URL, so they can never be
            # echoed in an error message.
            if token is not None or username is not None:
                raise ConfigError("give Loki credentials either in the URL or as options, not both")
            username, password = parts.username, parts.password or ""
        if token is not None and (username is not None or password is not None):
            raise ConfigError("give either a Loki token or a username and password, not both")
        if (username is None) != (password is None):
            raise ConfigError("basic auth for Loki needs both a username and a password")
        for name, value in (("timeout", timeout), ("deadline", deadline),
                            ("backoff_base", backoff_base), ("backoff_max", backoff_max)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"Loki client {name} must be a positive number of seconds")
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise ConfigError(f"the CA bundle {str(ca_bundle)!r} is not a readable file")

        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
        netloc = host if port is None else f"{host}:{port}"
        self.base_url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.tenant = tenant
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._backoff = Backoff(base=self.backoff_base, cap=self.backoff_max, deadline=self.deadline)
        self.queries_issued = 0
        self.requests_sent = 0
        self._counter_lock = threading.Lock()  # queries may be sent from several threads

        self._headers = {"User-Agent": f"mlobs/{__version__}", "Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        elif username is not None:
            pair = f"{username}:{password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        if tenant:
            self._headers["X-Scope-OrgID"] = tenant
        # One connection per concurrent query is kept for reuse (the default keeps one in total).
        if ca_bundle is not None:
            self._pool = urllib3.PoolManager(maxsize=_POOL_SIZE, cert_reqs="CERT_REQUIRED",
                                             ca_certs=str(ca_bundle))
        else:
            self._pool = urllib3.PoolManager(maxsize=_POOL_SIZE)

    def __repr__(self) -> str:
        return f"LokiClient({self.base_url!r}, tenant={self.tenant!r})"

    # --- public API -----------------------------------------------------------------------------

    def instant(self, query: str, at: float, *, fail_fast_timeouts: bool = False) -> list[Sample]:
        """Evaluate a metric query at ``at`` (unix seconds); an empty list means no data.

        ``fail_fast_timeouts``: raise :class:`LokiTimeout` on the first timed-out attempt (the
        read timeout, or HTTP 504) instead of retrying it until the deadline.
        """
        query = _check_query(query)
        with self._counter_lock:
            self.queries_issued += 1
        payload = self._get_json(
            "/loki/api/v1/query", {"query": query, "time": _nanoseconds(at, "at")}, query,
            fail_fast_timeouts=fail_fast_timeouts,
        )
        data = _data(payload, query)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "streams":
            raise _not_metric(query)
        try:
            if kind == "vector":
                return [
                    Sample(dict(item.get("metric") or {}), _value(item["value"][1]))
                    for item in result
                ]
            if kind == "scalar":
                return [Sample({}, _value(result[1]))]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _malformed(query, f"a malformed {kind} ({exc})") from None
        raise _malformed(query, f"resultType {kind!r} for an instant query")

    def range(self, query: str, start: float, end: float, step_s: int) -> list[Series]:
        """Evaluate a metric query every ``step_s`` seconds from ``start`` to ``end``."""
        query = _check_query(query)
        if isinstance(step_s, bool) or not isinstance(step_s, int) or step_s < 1:
            raise ConfigError(
                f"the range query step must be a whole number of seconds ≥ 1, got {step_s!r}"
            )
        params = {
            "query": query,
            "start": _nanoseconds(start, "start"),
            "end": _nanoseconds(end, "end"),
            "step": f"{step_s}s",
        }
        if int(params["end"]) < int(params["start"]):
            raise ConfigError("the range query ends before it starts")
        with self._counter_lock:
            self.queries_issued += 1
        data = _data(self._get_json("/loki/api/v1/query_range", params, query), query)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "streams":
            raise _not_metric(query)
        if kind != "matrix":
            raise _malformed(query, f"resultType {kind!r} for a range query")
        try:
            return [
                Series(
                    dict(item.get("metric") or {}),
                    [(float(ts), _value(v)) for ts, v in item["values"]],
                )
                for item in result
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(query, f"a malformed matrix ({exc})") from None

    def push(self, streams: list[dict[str, Any]]) -> None:
        """Push ``{"stream": {labels}, "values": [[ns, line], ...]}`` entries (tests, traffic)."""
        body = json.dumps({"streams": [_push_stream(s) for s in streams]}).encode()
        self._send("POST", "/loki/api/v1/push", None, body=body, what="push")

    # --- HTTP -----------------------------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, str], query: str, *,
                  fail_fast_timeouts: bool = False) -> dict[str, Any]:
        response = self._send("GET", path, params, query=query, what="query",
                              fail_fast_timeouts=fail_fast_timeouts)
        try:
            payload = json.loads(response.data)
        except ValueError:
            raise _malformed(
                query, f"a body that is not JSON: {_first_line(response.data)!r}"
            ) from None
        if not isinstance(payload, dict):
            raise _malformed(query, "a JSON body that is not an object")
        return payload

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        *,
        body: bytes | None = None,
        query: str | None = None,
        what: str,
        fail_fast_timeouts: bool = False,
    ) -> Any:
        started = time.monotonic()
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(connect=min(self.timeout, self.deadline), read=self.timeout)
        url = self.base_url + path

        def attempt() -> Any:
            try:
                if method == "GET":
                    response = self._pool.request("GET", url, fields=params, headers=headers,
                                                  retries=False, timeout=timeout, redirect=False)
                else:
                    response = self._pool.request(method, url, body=body, headers=headers,
                                                  retries=False, timeout=timeout, redirect=False)
            except HTTPError as exc:
                timed_out = isinstance(exc, ReadTimeoutError)
                raise _Retry(_describe_failure(None, exc), timed_out=timed_out) from None
            finally:
                with self._counter_lock:
                    self.requests_sent += 1
            if response.status in _RETRY_STATUSES:
                raise _Retry(_describe_failure(response, None), timed_out=response.status == 504,
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
            return response

        def retryable(error: BaseException) -> bool:
            # A timed-out query would time out again: a caller that can split it hears at once.
            return isinstance(error, _Retry) and not (fail_fast_timeouts and error.timed_out)

        def on_retry(error: BaseException, retry: int, wait: float) -> None:
            log.debug("Loki request failed (%s); retry %d in %.2fs", error, retry, wait)

        retrying = self._backoff.retrying(retryable, on_retry=on_retry)
        try:
            response = retrying(attempt)
        except _Retry as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            reason, timed_out = exc.reason, fail_fast_timeouts and exc.timed_out
            if timed_out and reason == "HTTP 504":
                reason += ": gateway timeout"
            elif exc.retry_after is not None and not timed_out:
                reason += f" (Loki asked to retry after {exc.retry_after:g}s)"
            raise self._unavailable(reason, tries, started, timed_out=timed_out) from None

        status = response.status
        if 200 <= status < 300:
            return response
        message = _first_line(response.data) or f"HTTP {status} with an empty body"
        if status >= 500:  # not one of the retried statuses (e.g. 501): unavailable at once
            raise self._unavailable(f"HTTP {status}: {message}", 1, started)
        if 400 <= status < 500:
            subject = "the query" if query is not None else f"the {what}"
            text = f"Loki rejected {subject} (HTTP {status}): {message}"
            if query is not None:
                text += f" — query: {query}"
            raise LokiQueryError(
                text, status=status, loki_message=message, query=query, hint=_hint_for(status)
            )
        raise LokiResponseError(
            f"Loki at {self.base_url} answered the {what} with HTTP {status}: {message}",
            hint="check that loki-url points at Loki itself, not a proxy or login page",
        )

    def _unavailable(self, reason: str, attempts: int, started: float, *,
                     timed_out: bool = False) -> LokiUnavailable:
        elapsed = time.monotonic() - started
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return (LokiTimeout if timed_out else LokiUnavailable)(
            f"Loki at {self.base_url} is unavailable: {reason} "
            f"(gave up after {tries} in {elapsed:.1f}s)",
            hint="check the Loki URL and that Loki is reachable from the runner",
        )


# --- helpers ----------------------------------------------------------------------------------------


def _check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ConfigError("the LogQL query is empty")
    return query


def _nanoseconds(seconds: float, name: str) -> str:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise ConfigError(f"{name} must be a finite unix time in seconds, got {seconds!r}")
    # Through the decimal repr, so 1795557698.077 becomes ...077000000, not ...076999936.
    return str(int(Decimal(repr(seconds)) * 1_000_000_000))


def _value(text: Any) -> float:
    # Loki sends values as strings, including "NaN", "+Inf" and "-Inf", which float() reads.
    if not isinstance(text, str):
        raise ValueError(f"value {text!r} is not a string")
    return float(text)


def _data(payload: dict[str, Any], query: str) -> dict[str, Any]:
    if payload.get("status") != "success" or not isinstance(payload.get("data"), dict):
        raise _malformed(query, f"status {payload.get('status')!r} without data")
    return payload["data"]


def _push_stream(stream: dict[str, Any]) -> dict[str, Any]:
    try:
        labels = {str(k): str(v) for k, v in stream["stream"].items()}
        values = [[str(int(entry[0])), str(entry[1]), *entry[2:]] for entry in stream["values"]]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ConfigError(f"a stream to push is malformed ({exc})") from None
    return {"stream": labels, "values": values}


def _first_line(data: bytes | None) -> str:
    return first_line(data, _MAX_QUOTED)


def _describe_failure(response: Any, error: BaseException | None) -> str:
    if response is not None:
        try:
            message = _first_line(response.data)
        except Exception:
            message = ""
        return f"HTTP {response.status}" + (f": {message}" if message else "")
    if error is None:
        return "unknown error"
    # urllib3 prefixes its messages with the connection object's repr; keep the useful part.
    last = error.args[-1] if error.args else None
    text = last if isinstance(last, str) else str(error)
    text = re.sub(r"^\w*HTTPS?Connection(?:Pool)?\([^)]*\): ", "", text)
    return text or type(error).__name__


def _hint_for(status: int) -> str | None:
    if status in (401, 403):
        return "check the Loki token or username/password, and the tenant (X-Scope-OrgID)"
    if status == 404:
        return "check that loki-url is Loki's base URL (without /loki/api/v1)"
    return None


def _not_metric(query: str) -> LokiQueryError:
    return LokiQueryError(
        f"the query returns log lines, not numbers — query: {query}",
        status=200,
        loki_message="resultType streams",
        query=query,
        hint="wrap it in a metric aggregation such as count_over_time(...)",
    )


def _malformed(query: str, what: str) -> LokiResponseError:
    return LokiResponseError(f"Loki answered with {what} — query: {query}")


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))
