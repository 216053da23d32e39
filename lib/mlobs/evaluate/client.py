"""Send the dataset to a Bento's API and turn the answers into prediction rows.

How a batch of rows becomes a request is the input contract (:mod:`mlobs.evaluate.schema`);
how an answer becomes predictions is the output contract (:mod:`mlobs.evaluate.contract`). This
module moves the rows:

- **Probe first.** The first few rows go alone, before anything else: a 4xx/5xx answer, an
  answer that is not predictions, or predictions none of which is a label value of the dataset
  stop the run (:class:`ProbeFailed`, exit 2) quoting the API's own words — before the dataset
  is streamed.
- **Batches sized by measurement** (``batch_size=None``): from a start the probe's answer time
  suggests, the batch size doubles (quadruples while far from the optimum) as long as the
  server's throughput (rows per second of service, measured between completions) does not fall
  clearly below the best seen and answers stay within 2 s, up to a ceiling (65,536 rows or a
  16 MiB body); it settles on the best size, re-tries the next one up now and then, and halves on
  413, timeouts and shed requests. A fixed ``batch_size`` disables it.
- **Bounded concurrency, bounded memory.** ``concurrency`` worker threads each take the next rows
  when they are free (so the size is always the current one), and run at most
  ``2 × concurrency`` batches ahead of the consumer. Output is one RecordBatch per request, in
  input order, conforming to :func:`mlobs.lake.schema.sample_arrow_schema`.
- **Failures.** 429/502/503/504 and connection errors are retried with full-jitter backoff
  (``Retry-After`` honoured) for up to ``retry_window`` seconds; after that the Bento is
  considered down and the run stops (:class:`BentoStopped`); a batch of several samples that is
  shed three times in a row ("process is overloaded") is split in two instead. A request that gets
  no answer within ``timeout`` is split in two; a second timeout in a row stops the run. A 413
  splits the batch. Each split also lowers the batch size for what follows.
  Other 4xx/5xx answers (the model failing on some input) are split to isolate the failing
  samples (within a budget of extra requests), which become error rows — prediction null,
  ``error`` the reason — and are never dropped.
- **Bounded time.** ``deadline`` (a ``time.monotonic()`` value) stops the run with
  :class:`DeadlineExceeded`; while no answer arrives a heartbeat line is logged every
  ``heartbeat_s`` seconds, naming the requests in flight and how long the oldest has waited.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import urllib3

from mlobs.errors import ConfigError, MlobsError, SourceUnavailable, clip
from mlobs.evaluate.contract import Columns, OutputReader, Unreadable
from mlobs.evaluate.progress import Progress
from mlobs.evaluate.schema import Packing
from mlobs.lake.schema import sample_arrow_schema
from mlobs.retry import Backoff, retry_after_seconds

__all__ = ["BatchSizer", "BentoStopped", "BentoUnreachable", "DeadlineExceeded", "ProbeFailed",
           "fetch_openapi", "predict"]

log = logging.getLogger(__name__)

SAMPLE_ID = "sample_id"
PROBE_ROWS = 8
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REACH_GRACE_S = 10.0  # how long the first contact may keep failing to connect
# The package's one retry policy (mlobs.retry); BentoML sheds load with 503 for milliseconds, not
# seconds, hence the small base. Each use sets its own deadline.
_BACKOFF = Backoff(base=0.05, cap=2.0, deadline=_REACH_GRACE_S)
_MAX_REASON = 200
_MAX_LOGGED_FAILURES = 10
_SPLIT_BUDGET = 256  # extra requests spent isolating samples the model fails on
_SHED_SPLIT = 3  # "overloaded" answers in a row before a batch is split in halves


class BentoUnreachable(SourceUnavailable):
    """Nothing answered at the Bento's URL before the first batch."""


class BentoStopped(SourceUnavailable):
    """The Bento stopped answering (down, hung or overloaded) during the run."""


class DeadlineExceeded(MlobsError):
    """The run's overall deadline passed."""


class ProbeFailed(ConfigError):
    """The probe batch showed that the dataset and the API do not fit; nothing was streamed."""


# --- batch sizing ------------------------------------------------------------------------------


@dataclass
class BatchSizer:
    """Grow the batch while throughput holds up; shrink on 413 and timeouts. Thread-safe.

    Throughput is measured as rows per second of *service*: each completion counts the time
    since the previous completion (or since it was sent, if later), which is what the server
    spent on it when requests queue there, whatever the concurrency. Each size is measured over
    ``samples_per_level`` requests. Growth doubles the size while a level is not clearly worse
    than the best so far (one figure on a shared machine is noisy; past the optimum a bigger
    batch costs latency, not throughput) and its requests answer within ``latency_cap`` seconds;
    then the size settles on the best level. A settled size re-tries the next one up every
    ``reprobe_every`` requests and moves there when it is at least 10 % faster.
    """

    fixed: int | None = None
    start: int = 256
    overhead_s: float = 0.1
    ceiling: int = 1 << 16
    max_body_bytes: int = 16 << 20
    latency_cap: float = 2.0
    samples_per_level: int = 4  # a multiple of the concurrency: merged batches answer together
    tolerance: float = 0.75  # a level this far below the best so far ends the growth
    leap_gain: float = 1.5  # a level this much faster than the best so far: grow ×4
    reprobe_every: int = 24
    size: int = field(init=False)
    phase: str = field(init=False)  # growing | settled | probing | fixed
    _best_rate: float = field(default=0.0, init=False)
    _best_size: int = field(init=False)
    _rows: int = field(default=0, init=False)
    _busy: float = field(default=0.0, init=False)
    _count: int = field(default=0, init=False)
    _slowest: float = field(default=0.0, init=False)
    _last_done: float = field(default=0.0, init=False)
    _bytes_per_row: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.size = self.fixed or self.start
        self._best_size = self.size
        self.phase = "fixed" if self.fixed else "growing"

    def completed(self, rows: int, sent_at: float, done_at: float, body_bytes: int) -> None:
        with self._lock:
            busy = done_at - max(sent_at, self._last_done)
            self._last_done = max(self._last_done, done_at)
            if rows:
                self._bytes_per_row = max(self._bytes_per_row, body_bytes / rows)
            if self.phase == "fixed" or rows != self.size or busy <= 0:
                return
            self._rows += rows
            self._busy += busy
            self._count += 1
            self._slowest = max(self._slowest, done_at - sent_at)
            needed = self.reprobe_every if self.phase == "settled" else self.samples_per_level
            if self._count < needed:
                return
            rate, slowest = self._rows / self._busy, self._slowest
            self._rows, self._busy, self._count, self._slowest = 0, 0.0, 0, 0.0
            log.debug("batch size %d: %.0f rows/s, slowest answer %.2f s", self.size, rate, slowest)
            if self.phase == "settled":
                self._best_rate = rate  # the settled size's current figure
                if slowest <= self.latency_cap / 2 and self._can_double():
                    self.phase, self.size = "probing", self.size * 2
                return
            if self.phase == "probing":
                if rate >= self._best_rate * 1.10:
                    self._best_rate, self._best_size = rate, self.size
                    self.phase = "growing"
                    self._grow(slowest)
                else:
                    self.phase, self.size = "settled", self._best_size
                return
            leap = self._best_rate > 0 and rate >= self._best_rate * self.leap_gain
            if rate >= self._best_rate:
                self._best_rate, self._best_size = rate, self.size
            if rate >= self._best_rate * self.tolerance:
                self._grow(slowest, times=4 if leap else 2)
            else:
                self._settle()

    def start_from(self, rows: int, seconds: float) -> None:
        """Pick the first measured size from the probe. A probe answered within ``overhead_s``
        measured the server's per-request overhead, not the model: start at ``start``. A slower
        one sets the power of two whose answer should take a quarter of ``latency_cap`` at the
        probe's time per sample (a CNN on a CPU starts at 8)."""
        with self._lock:
            if self.phase != "growing" or rows <= 0 or seconds <= self.overhead_s:
                return
            fit = self.latency_cap / 4 / (seconds / rows)
            size = 8
            while size * 2 <= min(fit, self.start):
                size *= 2
            self.size = self._best_size = size

    def _grow(self, slowest: float, times: int = 2) -> None:
        if slowest <= self.latency_cap and self._can_double():
            self.size *= 2
            if times == 4 and slowest * 2 <= self.latency_cap and self._can_double():
                self.size *= 2  # still far from the optimum: skip a level
        else:
            self._settle()

    def _settle(self) -> None:
        self.size, self.phase = self._best_size, "settled"
        log.info("batch size settled at %d (%.0f rows/s measured)", self.size, self._best_rate)

    def _can_double(self) -> bool:
        limit = self.ceiling
        if self._bytes_per_row:
            limit = min(limit, max(1, int(self.max_body_bytes / self._bytes_per_row)))
        return self.size * 2 <= limit

    def too_big(self, rows: int) -> None:
        """A 413 or a timeout at ``rows``: halve below it, and stop growing."""
        with self._lock:
            new = max(1, min(self.size, rows) // 2)
            if new < self.size:
                log.info("batch size %d → %d after a timeout or 413", self.size, new)
            self.size = new
            self._best_size = min(self._best_size, new)
            self.ceiling = min(self.ceiling, max(1, rows - 1))
            if self.phase != "fixed":
                self.phase = "settled"
            self._rows, self._busy, self._count, self._slowest = 0, 0.0, 0, 0.0


# --- public entry points -----------------------------------------------------------------------


def fetch_openapi(url: str, *, timeout: float = 30.0) -> dict[str, Any] | None:
    """The Bento's OpenAPI document (``/docs.json``); None when the server has none (404)."""
    http = urllib3.PoolManager(retries=False)
    # The first contact: a server that is still binding its port refuses connections for a moment,
    # so connection errors (never read timeouts) are retried for a short grace period.
    retrying = _BACKOFF.retrying(urllib3.exceptions.NewConnectionError)
    try:
        for attempt in retrying:
            with attempt:
                response = http.request(
                    "GET", f"{url.rstrip('/')}/docs.json",
                    timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout))
    except urllib3.exceptions.NewConnectionError as exc:
        raise BentoUnreachable(f"could not reach the Bento at {url.rstrip('/')}: "
                               f"{_describe_error(exc, timeout)}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise BentoUnreachable(f"could not read the Bento's OpenAPI document at {url}/docs.json: "
                               f"{_describe_error(exc, timeout)}") from None
    if response.status == 404:
        return None
    if response.status != 200:
        raise BentoUnreachable(f"the Bento's OpenAPI document ({url}/docs.json) answered HTTP "
                               f"{response.status}: {_error_text(response.data)}")
    try:
        doc = json.loads(response.data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


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
    packing: Packing | None = None,
    reader: OutputReader | None = None,
    labels: frozenset[str] | None = None,
    batch_size: int | None = None,
    deadline: float | None = None,
    retry_window: float = 30.0,
    heartbeat_s: float = 10.0,
    alive: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    on_shape: Callable[[str], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Probe the API, then yield one :func:`sample_arrow_schema` batch per request, in order.

    ``batches`` carry ``sample_id`` (else the running row index is used), the input columns,
    the label column and the slice columns (see :mod:`mlobs.evaluate.dataset`). ``labels``: the
    dataset's label values, for the checks that a prediction can ever be right. ``alive``: False
    once a served Bento's process has exited. Raises (eagerly) BentoUnreachable, ProbeFailed,
    ConfigError; while streaming BentoStopped, DeadlineExceeded.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if not input_columns:
        raise ConfigError("no input columns to send to the Bento")
    if timeout <= 0:
        raise ConfigError("timeout must be positive")
    packing = packing or Packing("columns", source="default")
    reader = reader or OutputReader()
    transport = _Transport(url.rstrip("/"), api.strip("/"), packing=packing, reader=reader,
                           input_columns=input_columns, timeout=timeout, retry_window=retry_window,
                           deadline=deadline, alive=alive, pool_size=concurrency + 1)
    transport.check_reachable()  # now, so attach mode fails before any batch is read
    needed = list(dict.fromkeys([*input_columns, label_column, *slice_columns]))
    source = _Source(iter(batches), needed)
    sizer = BatchSizer(fixed=1 if packing.single else batch_size)
    taken = source.take(PROBE_ROWS)
    if taken is None:
        return iter(())
    probe, start = taken
    began = time.monotonic()
    columns = _probe(transport, probe, labels, label_column)
    sizer.start_from(probe.num_rows, time.monotonic() - began)
    if on_shape is not None:
        on_shape(columns.shape)
    first = _to_rows(probe, start, columns, label_column=label_column, slice_columns=slice_columns)
    pipeline = _Pipeline(transport, source, sizer, concurrency=concurrency, label_column=label_column,
                         slice_columns=slice_columns, labels=labels, heartbeat_s=heartbeat_s,
                         progress=progress)
    return pipeline.run(first)


# --- the probe ---------------------------------------------------------------------------------


def _probe(transport: _Transport, probe: pa.RecordBatch, labels: frozenset[str] | None,
           label_column: str) -> Columns:
    rows = probe.num_rows
    what = f"the probe ({rows} sample{'s' if rows != 1 else ''} sent before the dataset)"
    try:
        try:
            columns = transport.send_whole(probe)
        except _Failed as exc:
            if isinstance(exc, _TooBig) or rows == 1:
                raise
            # One bad sample (a NaN the model refuses) is not a mismatch: ask row by row, and
            # stop only when every row fails the same way.
            parts, reasons = [], []
            for i in range(rows):
                try:
                    parts.append(transport.send_whole(probe.slice(i, 1)))
                except _Failed as one:
                    parts.append(_error_columns(1, one.reason))
                    reasons.append(one.reason)
            if len(reasons) == rows:
                raise _Failed(reasons[0]) from None
            columns = _concat(parts)
    except _Deadline:
        raise transport.deadline_error(0) from None
    except _TimedOut as exc:
        raise BentoStopped(f"{what} got {exc.reason}: the Bento seems hung") from None
    except _TooBig as exc:
        raise ProbeFailed(f"the Bento refused {what}: {exc.reason}") from None
    except _Failed as exc:
        raise ProbeFailed(f"the Bento refused {what}: {exc.reason}",
                          hint=transport.packing_hint()) from None
    except _Fatal as exc:
        raise BentoStopped(f"{what} failed: {exc.reason}") from None
    except Unreadable as exc:
        raise ProbeFailed(f"could not read the answer to {what}: {exc}") from None
    errors = [e for e in columns.error.to_pylist() if e is not None]
    if len(errors) == rows:
        raise ProbeFailed(f"{what} got no prediction: {errors[0]}")
    if labels:
        predicted = [p for p in columns.prediction.to_pylist() if p is not None]
        if not any(p in labels for p in predicted):
            raise ProbeFailed(no_match_message(predicted, labels, label_column, what))
    return columns


def no_match_message(predicted: list[str], labels: frozenset[str], label_column: str,
                     where: str) -> str:
    """Why no prediction can be right, with the likely cause (indices vs names)."""
    shown_p = ", ".join(sorted(set(predicted), key=_natural)[:5])
    shown_l = ", ".join(sorted(labels, key=_natural)[:5]) + (", …" if len(labels) > 5 else "")
    head = (f"no prediction of {where} ({shown_p}) equals a value of label column "
            f"{label_column!r} ({shown_l})")
    p_index = all(_is_int(p) for p in predicted)
    l_index = all(_is_int(v) for v in labels)
    if p_index and not l_index:
        return (head + ": the Bento answers class indices and the labels are names — set "
                "class-names (comma-separated in index order, or a file with one per line)")
    if l_index and not p_index:
        return (head + ": the labels are class indices and the Bento answers names — set "
                "class-names (in index order) so the labels map to names")
    return head + ": check label-column, or map the Bento's classes with class-names"


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _natural(text: str) -> tuple[int, float, str]:
    return (0, float(text), "") if _is_int(text) else (1, 0.0, text)


# --- the pipeline ------------------------------------------------------------------------------


class _Source:
    """The dataset's batches as a stream of rows to take in any size (thread-safe via the
    pipeline's lock). Remembers each taken batch's first row index (for default sample ids)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], needed: list[str]) -> None:
        self._batches = batches
        self._needed = needed
        self._pending: pa.RecordBatch | None = None
        self._offset = 0

    def take(self, rows: int) -> tuple[pa.RecordBatch, int] | None:
        """The next ``rows`` rows (fewer at the end) and the index of the first; None at the end."""
        parts: list[pa.RecordBatch] = []
        count = 0
        while count < rows:
            if self._pending is None or self._pending.num_rows == 0:
                batch = next(self._batches, None)
                if batch is None:
                    break
                _check_columns(batch, self._needed)
                self._pending = batch
                continue
            take = min(rows - count, self._pending.num_rows)
            parts.append(self._pending.slice(0, take))
            self._pending = self._pending.slice(take)
            count += take
        if not parts:
            return None
        out = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
        start, self._offset = self._offset, self._offset + count
        return out, start


@dataclass
class _Done:
    batch: pa.RecordBatch
    offset: int
    columns: Columns | None = None
    failure: BaseException | None = None


class _Pipeline:
    def __init__(self, transport: _Transport, source: _Source, sizer: BatchSizer, *,
                 concurrency: int, label_column: str, slice_columns: list[str],
                 labels: frozenset[str] | None, heartbeat_s: float,
                 progress: Progress | None) -> None:
        self.transport = transport
        self.source = source
        self.sizer = sizer
        self.concurrency = concurrency
        self.label_column = label_column
        self.slice_columns = slice_columns
        self.labels = labels
        self.heartbeat_s = heartbeat_s
        self.progress = progress
        self.cond = threading.Condition()
        self.source_lock = threading.Lock()
        self.results: dict[int, _Done] = {}
        self.in_flight: dict[int, float] = {}
        self.next_seq = 0
        self.consumed = 0
        self.exhausted = False
        self.stop = threading.Event()
        self.failed_batches = 0
        self.matched = False
        self.predicted: set[str] = set()
        self._label_set = pa.array(sorted(labels), pa.string()) if labels else None

    def run(self, first: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        threads = [threading.Thread(target=self._work, name=f"mlobs-bento-{i}", daemon=True)
                   for i in range(self.concurrency)]
        try:
            self._account(first)
            yield first
            for thread in threads:
                thread.start()
            while (done := self._next()) is not None:
                if done.failure is not None:
                    raise done.failure
                assert done.columns is not None
                out = _to_rows(done.batch, done.offset, done.columns,
                               label_column=self.label_column, slice_columns=self.slice_columns)
                self._account(out)
                yield out
            if self.labels and not self.matched:
                raise ConfigError(no_match_message(sorted(self.predicted)[:50], self.labels,
                                                   self.label_column, "the whole run"))
        finally:
            self.stop.set()  # abandoned (error, interrupt, generator closed): workers stop
            self.transport.stopping.set()
            with self.cond:
                self.cond.notify_all()
            if self.progress is not None:
                self.progress.close()
            if self.failed_batches:
                log.warning("%d request(s) failed and their samples were recorded as error rows",
                            self.failed_batches)

    def _account(self, out: pa.RecordBatch) -> None:
        errors = out.num_rows - out.column("error").null_count
        if errors:
            self.failed_batches += 1
            if self.failed_batches <= _MAX_LOGGED_FAILURES:
                first = next(e for e in out.column("error").to_pylist() if e is not None)
                log.warning("%d of %d samples from id %s failed: %s", errors, out.num_rows,
                            out.column(SAMPLE_ID)[0].as_py(), first)
        if self._label_set is not None and not self.matched:
            prediction = out.column("prediction")
            if pc.any(pc.is_in(prediction, value_set=self._label_set)).as_py():
                self.matched = True
            elif len(self.predicted) < 50:
                self.predicted.update(p for p in pc.unique(prediction).to_pylist() if p is not None)
        if self.progress is not None:
            self.progress.update(out.num_rows, errors)

    def _next(self) -> _Done | None:
        last = time.monotonic()
        with self.cond:
            while self.consumed not in self.results:
                if self.exhausted and self.consumed == self.next_seq:
                    return None
                now = time.monotonic()
                self.transport.check_deadline(self._done_rows())
                wait = self.heartbeat_s - (now - last)
                if wait <= 0:
                    self._heartbeat(now)
                    last, wait = now, self.heartbeat_s
                if self.transport.deadline is not None:
                    wait = min(wait, max(0.01, self.transport.deadline - now))
                self.cond.wait(timeout=wait)
            done = self.results.pop(self.consumed)
            self.consumed += 1
            self.cond.notify_all()
            return done

    def _done_rows(self) -> int:
        return self.progress.done if self.progress is not None else 0

    def _heartbeat(self, now: float) -> None:
        if self.in_flight:
            oldest = now - min(self.in_flight.values())
            log.info("waiting for the Bento: %d request(s) in flight, the oldest for %.0f s "
                     "(bento-timeout %g s)", len(self.in_flight), oldest, self.transport.timeout)
        else:
            log.info("waiting for the next rows of the dataset")

    def _work(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                while (self.next_seq - self.consumed >= 2 * self.concurrency
                       and not self.stop.is_set()):
                    self.cond.wait()
            if self.stop.is_set():
                return
            with self.source_lock:
                if self.exhausted:
                    return
                try:
                    taken = self.source.take(self.sizer.size)
                except BaseException as exc:  # a dataset that turns unreadable mid-file
                    taken, failure = None, exc
                else:
                    failure = None
                with self.cond:
                    if taken is None:
                        if failure is not None:
                            self.results[self.next_seq] = _Done(pa.record_batch([]), 0, failure=failure)
                            self.next_seq += 1
                        self.exhausted = True
                        self.cond.notify_all()
                        return
                    batch, offset = taken
                    seq = self.next_seq
                    self.next_seq += 1
                    self.in_flight[seq] = time.monotonic()
            try:
                columns = self.transport.send(batch, self.sizer)
                done = _Done(batch, offset, columns=columns)
            except _Deadline:
                done = _Done(batch, offset, failure=self.transport.deadline_error(self._done_rows()))
            except _Fatal as exc:
                done = _Done(batch, offset, failure=BentoStopped(
                    f"the Bento stopped answering after about {self.consumed_rows():,} samples: "
                    f"{exc.reason}"))
            except BaseException as exc:  # never leave the consumer waiting
                done = _Done(batch, offset, failure=exc)
            self._store(seq, done)
            if done.failure is not None:
                self.stop.set()
                return

    def consumed_rows(self) -> int:
        return self._done_rows()

    def _store(self, seq: int, done: _Done) -> None:
        with self.cond:
            self.in_flight.pop(seq, None)
            self.results[seq] = done
            self.cond.notify_all()


# --- HTTP ------------------------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Failed(Exception):
    """An answer that says this input failed (4xx, 500): not retried as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TooBig(_Failed):
    """413, or no answer within the timeout: smaller batches may pass."""


class _TimedOut(_TooBig):
    """No answer within ``timeout``."""


class _Fatal(Exception):
    """The Bento is down, hung or stays overloaded: the run cannot go on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Deadline(_Fatal):
    """The overall deadline passed while a request was waiting."""


@dataclass
class _Transport:
    base_url: str
    api: str
    packing: Packing
    reader: OutputReader
    input_columns: list[str]
    timeout: float
    retry_window: float
    deadline: float | None
    alive: Callable[[], bool] | None
    pool_size: int
    stopping: threading.Event = field(default_factory=threading.Event)
    _pool: urllib3.PoolManager = field(init=False, repr=False)
    _splits: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(maxsize=self.pool_size, block=False, retries=False)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/{self.api}"

    def packing_hint(self) -> str:
        return f"sent as {self.packing.describe()}; set input-format to send it another way"

    def check_reachable(self) -> None:
        """Any HTTP answer (even 404) proves something listens; connection errors retry briefly."""
        grace = min(self.retry_window, _REACH_GRACE_S)
        try:
            for attempt in self._retrying(grace):
                with attempt:
                    self._attempt("GET", f"{self.base_url}/readyz", None, min(self.timeout, grace),
                                  check_status=False)
        except _Retryable as exc:
            raise BentoUnreachable(f"could not reach the Bento at {self.base_url}: {exc.reason}") from None

    def check_deadline(self, done_rows: int) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.deadline_error(done_rows)

    def deadline_error(self, done_rows: int) -> DeadlineExceeded:
        self.stopping.set()
        return DeadlineExceeded(f"the evaluation passed its deadline after {done_rows:,} samples; "
                                "nothing was committed",
                                hint="raise the deadline input, or make the Bento faster "
                                     "(more workers, a smaller dataset)")

    def send(self, batch: pa.RecordBatch, sizer: BatchSizer, *, timed_out: bool = False) -> Columns:
        """One batch → its columns; splits on 413/timeouts and to isolate failing samples.
        Raises _Fatal when the Bento is down or hung."""
        n = batch.num_rows
        try:
            started = time.monotonic()
            body = self._encode(batch)
            data = self._post(body, splittable=n > 1)
            columns = self._read(data, n)
            sizer.completed(n, started, time.monotonic(), len(body))
            return columns
        except _EncodeError as exc:
            return _error_columns(n, exc.reason)
        except _TimedOut as exc:
            sizer.too_big(n)
            if timed_out or n == 1:
                again = ", again for a smaller batch" if timed_out else ""
                raise _Fatal(f"{exc.reason}{again}: the Bento seems hung") from None
            return self._halves(batch, sizer, timed_out=True)
        except _TooBig as exc:
            sizer.too_big(n)
            if n == 1:
                return _error_columns(1, exc.reason)
            return self._halves(batch, sizer, timed_out=False)
        except _Failed as exc:
            if n > 1 and self._may_split():
                return self._halves(batch, sizer, timed_out=False)
            return _error_columns(n, exc.reason)
        except Unreadable as exc:
            return _error_columns(n, _short(str(exc)))

    def send_whole(self, batch: pa.RecordBatch) -> Columns:
        """The probe: the batch as one request (one per row for one-sample APIs), no splitting.
        Raises _Failed/_TooBig/_Fatal/Unreadable."""
        if self.packing.single and batch.num_rows > 1:
            parts = [self.send_whole(batch.slice(i, 1)) for i in range(batch.num_rows)]
            return _concat(parts)
        try:
            body = self._encode(batch)
        except _EncodeError as exc:
            raise _Failed(exc.reason) from None
        return self._read(self._post(body), batch.num_rows)

    def _halves(self, batch: pa.RecordBatch, sizer: BatchSizer, *, timed_out: bool) -> Columns:
        half = batch.num_rows // 2
        return _concat([self.send(batch.slice(0, half), sizer, timed_out=timed_out),
                        self.send(batch.slice(half), sizer, timed_out=timed_out)])

    def _may_split(self) -> bool:
        with self._lock:
            if self._splits >= _SPLIT_BUDGET:
                if self._splits == _SPLIT_BUDGET:
                    log.warning("stopped isolating failing samples after %d extra requests: "
                                "whole failing batches are now error rows", _SPLIT_BUDGET)
                    self._splits += 1
                return False
            self._splits += 1
            return True

    def _encode(self, batch: pa.RecordBatch) -> bytes:
        try:
            return self.packing.encode(batch, self.input_columns)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise _EncodeError(f"could not encode the inputs as JSON: {_short(str(exc))}") from None

    def _read(self, data: bytes, n: int) -> Columns:
        try:
            answer = orjson.loads(data)
        except ValueError:
            try:  # Python's json writes NaN and Infinity, which orjson refuses
                answer = json.loads(data)
            except ValueError:
                raise Unreadable("the Bento answered something that is not JSON: "
                                 f"{_short(data.decode(errors='replace'))}") from None
        return self.reader.read(answer, n, single=self.packing.single)

    def _post(self, body: bytes, *, splittable: bool = False) -> bytes:
        """POST with retries. ``splittable``: a batch of several samples that keeps getting
        "overloaded" answers raises _TooBig after a few, so that halves are tried instead
        (BentoML sheds requests it expects to miss their max latency)."""
        start = time.monotonic()
        retrying = self._retrying(self.retry_window)
        shed = 0
        try:
            for attempt in retrying:
                with attempt:
                    self._check_alive()
                    per_try, cut = self.timeout, False
                    if self.deadline is not None:
                        left = self.deadline - time.monotonic()
                        if left <= 0:
                            raise _Deadline("the deadline passed")
                        per_try, cut = min(per_try, left), left < per_try
                    try:
                        return self._attempt("POST", self.endpoint, body, per_try)
                    except _TimedOut:
                        if cut:  # the deadline, not bento-timeout, ran out
                            raise _Deadline("the deadline passed") from None
                        raise
                    except _Retryable as exc:
                        shed += exc.reason.startswith(("HTTP 503", "HTTP 429"))
                        if splittable and shed >= _SHED_SPLIT:
                            raise _TooBig(f"{exc.reason} ({shed} times)") from None
                        raise
        except _Retryable as exc:
            if self.stopping.is_set():
                raise _Fatal("stopped") from None
            tries = retrying.statistics.get("attempt_number", 1)
            waited = time.monotonic() - start
            raise _Fatal(f"{exc.reason} ({tries} attempts over {waited:.0f} s)") from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def _check_alive(self) -> None:
        if self.alive is not None and not self.alive():
            raise _Fatal("the Bento's server process has exited")

    def _retrying(self, window: float):
        """The shared policy within ``window``; a stopping run gives up, and its waits end at once."""
        return _BACKOFF.within(window).retrying(_Retryable, stop_if=self.stopping.is_set,
                                                sleep=self.stopping.wait)

    def _attempt(self, method: str, url: str, body: bytes | None, timeout: float,
                 *, check_status: bool = True) -> bytes:
        try:
            response = self._pool.request(
                method, url, body=body, redirect=False,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            )
        except urllib3.exceptions.ReadTimeoutError:
            if not check_status:
                raise _Retryable(f"no answer within {timeout:.3g} s") from None
            raise _TimedOut(f"no answer within {timeout:.3g} s (bento-timeout)") from None
        except urllib3.exceptions.HTTPError as exc:
            raise _Retryable(_describe_error(exc, timeout)) from None
        if 200 <= response.status < 300 or not check_status:
            return response.data
        reason = f"HTTP {response.status}: {_error_text(response.data)}"
        if response.status == 413:
            raise _TooBig(_short(reason))
        if response.status in _RETRY_STATUSES:
            raise _Retryable(reason,
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        raise _Failed(_short(reason))


class _EncodeError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        # BentoML's 400 says "1 validation error for Input"; its detail names the field and
        # what was wrong with it, which is what a wrong input mapping needs to show.
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = ".".join(str(p) for p in detail[0].get("loc", []))
            message += f" ({loc}: {detail[0].get('msg', '')})" if loc else ""
        elif isinstance(detail, str) and detail:
            message += f" ({detail})"
        return _short(message)
    return _short(text)


def _short(text: str) -> str:
    return clip(text, _MAX_REASON)


# --- rows ------------------------------------------------------------------------------------


_SCORES = pa.map_(pa.string(), pa.float64())
_SLICES = pa.map_(pa.string(), pa.string())


def _error_columns(n: int, reason: str) -> Columns:
    return Columns(pa.nulls(n, pa.string()), pa.nulls(n, pa.float64()), pa.nulls(n, _SCORES),
                   pa.array([reason] * n, pa.string()), "error")


def _concat(parts: list[Columns]) -> Columns:
    return Columns(*(pa.concat_arrays([getattr(p, f) for p in parts])
                     for f in ("prediction", "confidence", "scores", "error")),
                   shape=next((p.shape for p in parts if p.shape != "error"), "error"))


def _check_columns(batch: pa.RecordBatch, needed: list[str]) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in batch.schema.names]
    if missing:
        raise ConfigError(f"batch lacks column(s) {', '.join(map(repr, missing))}; it has "
                          f"{', '.join(batch.schema.names)}")


def _to_rows(batch: pa.RecordBatch, start: int, columns: Columns, *, label_column: str,
             slice_columns: list[str]) -> pa.RecordBatch:
    n = batch.num_rows
    if SAMPLE_ID in batch.schema.names:
        sample_id = _text(batch.column(SAMPLE_ID))
    else:
        sample_id = pa.array([str(i) for i in range(start, start + n)], pa.string())
    arrays = [sample_id, _text(batch.column(label_column)), columns.prediction, columns.confidence,
              columns.scores, _slices(batch, slice_columns), columns.error]
    return pa.RecordBatch.from_arrays(arrays, schema=sample_arrow_schema())


def _slices(batch: pa.RecordBatch, columns: list[str]) -> pa.Array:
    """Row i → {column: value} for the slice columns, built column-wise (no per-row dicts)."""
    import numpy as np

    n, k = batch.num_rows, len(columns)
    if not k:
        empty = pa.array([], pa.string())
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), empty, empty,
                                       type=_SLICES)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    keys = pa.array(columns * n, pa.string())
    if k == 1:
        return pa.MapArray.from_arrays(offsets, keys, _text(batch.column(columns[0])), type=_SLICES)
    stacked = pa.concat_arrays([_text(batch.column(c)) for c in columns])
    order = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major interleave
    return pa.MapArray.from_arrays(offsets, keys, stacked.take(pa.array(order)), type=_SLICES)


def _text(array: pa.Array) -> pa.Array:
    return array if pa.types.is_string(array.type) else array.cast(pa.string())
