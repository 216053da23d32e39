"""The one retry policy: full-jitter exponential backoff within a deadline, on tenacity.

Every call that may fail for a moment and succeed when repeated goes through it: Loki queries
(429, 5xx, connection errors, timeouts), requests to a Bento, Iceberg commits that lost to another
writer, opening a catalog that other processes are creating, report publishing that lost a race
with another job. PyGithub keeps its own (it knows GitHub's rate-limit headers).

One meaning for each word:

- **backoff with full jitter**: the wait before retry *n* is drawn uniformly from
  ``[0, min(cap, base · 2^(n−1))]`` (AWS's "full jitter"), so callers that failed together spread
  out instead of colliding again;
- **a server's hint**: an exception carrying ``retry_after`` (seconds, from ``Retry-After``)
  replaces the drawn wait for that retry;
- **deadline**: a time budget for the whole call, attempts and waits together, counted from the
  first attempt. A retry that could only start after it is not attempted: the call gives up at once
  with the last error (an attempt already running when the deadline passes finishes, bounded by the
  caller's own per-attempt timeout);
- **attempts**: optionally, at most this many attempts as well (whichever limit comes first).

What is retried is the caller's decision (``retry_on``): an exception type, a tuple of types or a
predicate. Anything else propagates from the first attempt unchanged, and so does the last
retryable error when the policy gives up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tenacity is imported when a retry policy is first used (it pulls in tornado)
    from tenacity import RetryCallState, Retrying, retry_if_exception

__all__ = ["Backoff", "retry_after_seconds"]

log = logging.getLogger(__name__)

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class Backoff:
    """A retry policy: ``base``/``cap`` of the full-jitter backoff (seconds), a ``deadline`` for the
    whole call (seconds; None: no time limit) and/or at most ``attempts`` attempts (None: no count).
    At least one of ``deadline`` and ``attempts`` bounds it."""

    base: float
    cap: float
    deadline: float | None = None
    attempts: int | None = None

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Backoff.{name} must be a positive number of seconds, got {value!r}")
        if self.deadline is None and self.attempts is None:
            raise ValueError("a Backoff needs a deadline or a number of attempts")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"Backoff.deadline must be positive, got {self.deadline!r}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"Backoff.attempts must be at least 1, got {self.attempts!r}")

    def within(self, deadline: float | None = None, *, attempts: int | None = None) -> Backoff:
        """The same backoff with another deadline and/or number of attempts."""
        return replace(self, deadline=deadline if deadline is not None else self.deadline,
                       attempts=attempts if attempts is not None else self.attempts)

    def ceiling(self, retry: int) -> float:
        """The largest wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.cap, self.base * 2 ** (retry - 1))

    def retrying(
        self,
        retry_on: RetryOn,
        *,
        single: bool = False,
        stop_if: Callable[[], bool] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` for this policy: ``for attempt in policy.retrying(...): with
        attempt: ...`` (or call it with a function).

        ``single``: one attempt only (e.g. a circuit breaker is open). ``stop_if``: give up before
        the next retry when it returns true (e.g. the caller is shutting down). ``sleep``: how to
        wait (an Event's ``wait`` makes the wait interruptible). ``on_retry(error, retry, wait)``
        runs before each wait, e.g. to log it. The last error is re-raised when the policy gives up.
        """
        from tenacity import Retrying, stop_after_attempt, stop_before_delay, stop_never

        stop = stop_never
        if self.deadline is not None:
            stop = stop | stop_before_delay(self.deadline)
        if self.attempts is not None:
            stop = stop | stop_after_attempt(self.attempts)
        if single:
            stop = stop | stop_after_attempt(1)
        if stop_if is not None:
            stop = stop | (lambda state: stop_if())
        before_sleep = None
        if on_retry is not None:
            def before_sleep(state: RetryCallState) -> None:
                error = state.outcome.exception() if state.outcome is not None else None
                on_retry(error, state.attempt_number, state.upcoming_sleep)  # type: ignore[arg-type]
        return Retrying(stop=stop, wait=_Wait(self), retry=_predicate(retry_on), sleep=sleep,
                        before_sleep=before_sleep, reraise=True)


class _Wait:
    """Full jitter, or the server's own ``retry_after`` when the failed attempt carried one."""

    def __init__(self, policy: Backoff) -> None:
        from tenacity import wait_random_exponential

        self._jitter = wait_random_exponential(multiplier=policy.base, max=policy.cap)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, int | float) and not isinstance(hint, bool) and math.isfinite(hint) \
                and hint >= 0:
            return float(hint)
        return float(self._jitter(state))


def _predicate(retry_on: RetryOn) -> retry_if_exception:
    from tenacity import retry_if_exception

    if isinstance(retry_on, type | tuple):
        kinds = retry_on
        return retry_if_exception(lambda error: isinstance(error, kinds))
    return retry_if_exception(retry_on)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` header as seconds from now: delay-seconds or an HTTP-date (RFC 9110
    §10.2.3); None when absent or unreadable (the backoff applies then)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
