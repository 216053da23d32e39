"""Plan before querying: everything a run needs from Loki, in the fewest queries, concurrently.

The checks ask for three kinds of measurement (:mod:`mlobs.slo.model`). Per stream selector and
window, the plan answers

- every count — and every count of lines a quantile leaves out — with ONE count query, grouped by
  each label the requests filter or group on (status, class, and the model version when two
  versions are compared) and, when a request needs to know whether a line's latency is usable,
  by a ``mlobs_error`` label that says so (:class:`mlobs.loki.logql.UsableNumber` marks the line,
  :class:`mlobs.loki.logql.ErrorMark` turns the mark into that label). Each request is then
  summed from the groups it covers, with the filter semantics Loki applies
  (:func:`mlobs.slo.source.passes`);
- every quantile with one query per quantile, ``by (model_version)`` when two versions are
  compared, over the same usable values — so its population is exactly the counted n.

For the bundled contract that is two queries, the same two a hand-written minimal plan needs.
The mark costs one ``label_format`` template per line (about a third of a count's time against
Loki 3.7; a template that decides anything itself costs more than the JSON parsing — see
bench/RESULTS.md). A request alone in its group keeps its filters in the query (the smallest
query for it). Each answer carries the exact query it came from. Queries run concurrently
(bounded), each with the client's retries, Retry-After handling and deadline.

Long windows: a count query that Loki refuses as longer than its ``max_query_length`` (721 h by
default; the limit is read from the refusal — Loki 3.7's frontend splits ``sum`` of counts itself
and answers them whole) or that times out is split into sub-windows (``offset``), and the counts
are summed — exactly, since the sub-windows partition the window. A quantile cannot be combined
from sub-window quantiles: such a quantile comes back empty with a note saying why, and its check
is inconclusive. If a merged count query has more series than Loki allows (``max_query_series``),
the plan falls back to one query per request.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from mlobs.errors import MlobsError, SourceUnavailable
from mlobs.logschema import LogFields
from mlobs.slo.model import (
    VALID,
    Counted,
    CountRequest,
    DroppedRequest,
    Measured,
    QuantileRequest,
    Request,
)
from mlobs.slo.source import Answer, passes

MIN_SPLIT_S = 60  # a count that times out on a minute of logs is not split further
MARK = "mlobs_error"  # the label a count groups by to tell usable latencies from the rest

_TOO_LONG = re.compile(r"the query time range exceeds the limit \(query length: [^,]+, limit: ([^)]+)\)")
_TOO_MANY_SERIES = "maximum number of series"


@dataclass(frozen=True)
class _Base:
    """What requests must share to be answered by one query."""

    selector: str
    window: str
    window_s: float
    end: float
    fields: LogFields


@dataclass
class _Job:
    """One logical query: text per (window, offset), its requests, and what came back."""

    kind: str  # "count" | "quantile"
    base: _Base
    requests: list[Request]
    build: Callable[[str, str | None], str]  # (window, offset) -> LogQL
    client_filters: bool = False  # filters evaluated on the returned groups (merged counts)
    version_label: str | None = None  # grouped by model version (two versions compared)
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=lambda: defaultdict(float))
    queries: list[str] = field(default_factory=list)
    error: MlobsError | None = None
    note: str = ""
    fallback: list[_Job] | None = None  # one job per request, after too many series

    @property
    def query_text(self) -> str:
        return "\n".join(self.queries)


@dataclass(frozen=True)
class _Piece:
    """One query of a job: the whole window as written (``window_s`` None), or a sub-window of
    ``window_s`` seconds ending ``offset_s`` seconds before the window's end."""

    job: _Job
    window_s: int | None = None
    offset_s: int = 0


class LokiPlan:
    def __init__(self, client, *, concurrency: int = 4, min_split_s: int = MIN_SPLIT_S) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.concurrency = concurrency
        self.min_split_s = min_split_s
        self.queries_sent = 0
        self._lock = threading.Lock()

    # --- planning ---------------------------------------------------------------------------

    def jobs(self, requests: list[Request]) -> list[_Job]:
        by_base: dict[_Base, list[Request]] = defaultdict(list)
        for request in dict.fromkeys(requests):
            s = request.scope
            by_base[_Base(s.selector, s.window, s.window_s, s.end, s.fields)].append(request)
        jobs: list[_Job] = []
        for base, group in by_base.items():
            counts: dict[str | None, list[Request]] = defaultdict(list)
            quantiles: dict[tuple, list[QuantileRequest]] = defaultdict(list)
            for r in group:
                if isinstance(r, QuantileRequest):
                    quantiles[(r.q, r.field, r.filters, r.scope.model_version is None)].append(r)
                else:
                    counts[_usable_field(r)].append(r)
            # One mark per query (a line has one error): one count query per field whose
            # usability matters — normally just the latency — the plain counts riding along.
            plain = counts.pop(None, [])
            if counts:
                first = next(iter(counts))
                counts[first] = plain + counts[first]
            elif plain:
                counts[None] = plain
            jobs += [self._count_job(base, rs, usable) for usable, rs in counts.items()]
            jobs += [self._quantile_job(base, rs) for rs in quantiles.values()]
        return jobs

    def _count_job(self, base: _Base, requests: list[Request], usable: str | None) -> _Job:
        from mlobs.loki import logql

        version_field = base.fields.model_version
        server: list = _version_filters(version_field, [r.scope.model_version for r in requests])
        mark = None
        if len(requests) == 1 and isinstance(requests[0], CountRequest):
            # Alone: its filters go into the query, grouped by its own labels.
            (request,) = requests
            server += [logql.LabelFilter(f.field, f.op, f.value) for f in request.filters if f.op != VALID]
            if usable is not None:
                server.append(logql.UsableNumber(usable))
            by = list(request.by)
            client_filters = False
        else:
            names: list[str] = []
            for r in requests:
                names += [*(r.by if isinstance(r, CountRequest) else ()),
                          *(f.field for f in r.filters if f.op != VALID)]
            by = list(dict.fromkeys(names))
            if usable is not None:
                server.append(logql.UsableNumber(usable))
                mark = logql.ErrorMark(MARK)
                by.append(MARK)
            client_filters = True
        by_version = len({r.scope.model_version for r in requests}) > 1
        if by_version:
            by.append(version_field)

        def build(window: str, offset: str | None) -> str:
            return logql.count_query(base.selector, window, filters=server, by=by, offset=offset,
                                     mark=mark)

        return _Job("count", base, list(requests), build, client_filters=client_filters,
                    version_label=version_field if by_version else None)

    def _quantile_job(self, base: _Base, requests: list[QuantileRequest]) -> _Job:
        from mlobs.loki import logql

        first = requests[0]
        version_field = base.fields.model_version
        versions = [r.scope.model_version for r in requests]
        filters: list = _version_filters(version_field, versions)
        filters += [logql.LabelFilter(f.field, f.op, f.value) for f in first.filters if f.op != VALID]
        filters.append(logql.UsableNumber(first.field))
        by_version = len(set(versions)) > 1
        by = [version_field] if by_version else []

        def build(window: str, offset: str | None) -> str:
            return logql.quantile_query(base.selector, first.q, first.field, window,
                                        filters=filters, by=by)

        return _Job("quantile", base, list(requests), build,
                    version_label=version_field if by_version else None)

    # --- running ----------------------------------------------------------------------------

    def answer(self, requests: list[Request]) -> dict[Request, Answer]:
        jobs = self.jobs(requests)
        self.run(jobs)
        answers: dict[Request, Answer] = {}
        for job in jobs:
            for request in job.requests:
                answers[request] = self._answer(job, request)
        return answers

    def run(self, jobs: list[_Job]) -> None:
        """Send every job's queries, at most ``concurrency`` at a time; split where needed."""
        from mlobs.loki import logql

        first = [piece for job in jobs for piece in self._pieces(job)]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="loki") as pool:
            running: dict[Future, _Piece] = {}

            def submit(piece: _Piece) -> None:
                running[pool.submit(self._send, piece)] = piece

            for piece in first:
                submit(piece)
            try:
                while running:
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        piece = running.pop(future)
                        for follow_up in self._settle(piece, future, logql):
                            submit(follow_up)
            except SourceUnavailable:
                for future in running:
                    future.cancel()
                raise

    def _pieces(self, job: _Job) -> list[_Piece]:
        return [_Piece(job)]

    def _send(self, piece: _Piece) -> tuple[str, list]:
        from mlobs.loki import logql

        job = piece.job
        if piece.window_s is None:
            window, offset = job.base.window, None
        else:
            window = logql.format_duration(piece.window_s)
            offset = logql.format_duration(piece.offset_s) if piece.offset_s else None
        query = job.build(window, offset)
        with self._lock:
            self.queries_sent += 1
        return query, self.client.instant(query, at=job.base.end, fail_fast_timeouts=True)

    def _settle(self, piece: _Piece, future: Future, logql) -> list[_Piece]:
        """Record a finished query; return the sub-window queries to send instead, if any."""
        from mlobs.loki.client import LokiQueryError, LokiTimeout

        job = piece.job
        try:
            query, samples = future.result()
        except LokiTimeout as exc:
            span = piece.window_s if piece.window_s is not None else _whole_seconds(job.base.window_s)
            if job.kind == "count" and span is not None and span >= 2 * self.min_split_s:
                return self._split(job, span, piece.offset_s, span // 2 + span % 2)
            if job.kind == "quantile":
                job.note = (f"The quantile query timed out ({exc.one_line()}); a quantile cannot "
                            "be combined from sub-window quantiles, so it was not split — use a "
                            "shorter window or a narrower selector.")
                return []
            raise
        except LokiQueryError as exc:
            limit = _TOO_LONG.search(exc.loki_message or "")
            if limit is not None:
                limit_s = int(logql.parse_duration(limit.group(1).strip()))
                span = piece.window_s if piece.window_s is not None else _whole_seconds(job.base.window_s)
                if job.kind == "count" and limit_s >= 1 and span is not None and span > limit_s:
                    return self._split(job, span, piece.offset_s, limit_s)
                if job.kind == "quantile":
                    limit_text = logql.format_duration(limit_s)
                    job.note = (f"Loki refuses a quantile over more than its max_query_length "
                                f"({limit_text}), and a quantile cannot be combined from "
                                f"sub-window quantiles (counts can) — use a window of at most "
                                f"{limit_text}.")
                    return []
            if (_TOO_MANY_SERIES in (exc.loki_message or "") and job.kind == "count"
                    and len(job.requests) > 1):
                return self._fall_back(job)
            job.error = exc
            return []
        except SourceUnavailable:
            raise
        except MlobsError as exc:
            job.error = exc
            return []
        job.queries.append(query)
        for sample in samples:
            job.samples[tuple(sorted(sample.labels.items()))] += sample.value
        return []

    def _split(self, job: _Job, span: int, offset: int, size: int) -> list[_Piece]:
        pieces = []
        end = offset
        while end < offset + span:
            length = min(size, offset + span - end)
            pieces.append(_Piece(job, length, end))
            end += length
        return pieces

    def _fall_back(self, job: _Job) -> list[_Piece]:
        """Too many series for one query: one query per request instead (same answers)."""
        job.fallback = [self._count_job(job.base, [r], _usable_field(r)) for r in job.requests]
        return [piece for sub in job.fallback for piece in self._pieces(sub)]

    # --- answers ----------------------------------------------------------------------------

    def _answer(self, job: _Job, request: Request) -> Answer:
        if job.fallback is not None:
            return self._answer(job.fallback[job.requests.index(request)], request)
        if job.error is not None:
            return job.error
        query = job.query_text
        if job.kind == "quantile":
            assert isinstance(request, QuantileRequest)
            if job.note:
                return Measured(None, job.query_text or job.build(job.base.window, None), job.note)
            wanted = request.scope.model_version
            values = [v for labels, v in job.samples.items()
                      if job.version_label is None or dict(labels).get(job.version_label, "") == wanted]
            if len(values) > 1:  # by () gives one series; more means the query is wrong
                from mlobs.errors import ConfigError

                return ConfigError(f"quantile query returned {len(values)} series, expected 1: {query}")
            value = values[0] if values else None
            return Measured(None if value is None or value != value else value, query)
        groups: dict[tuple[str, ...], float] = defaultdict(float)
        wanted = ("LabelFilterErr",) if isinstance(request, DroppedRequest) else \
            ("",) if any(f.op == VALID for f in request.filters) else ("", "LabelFilterErr")
        for key, value in job.samples.items():
            labels = dict(key)
            if job.version_label is not None and request.scope.model_version is not None \
                    and labels.get(job.version_label, "") != request.scope.model_version:
                continue
            if job.client_filters:
                # Lines that are not JSON ("JSONParserErr") count nowhere, as with __error__="".
                if labels.get(MARK, "") not in wanted:
                    continue
                if not all(passes(f, labels) for f in request.filters if f.op != VALID):
                    continue
            by = request.by if isinstance(request, CountRequest) else ()
            groups[tuple(labels.get(name, "") for name in by)] += value
        if isinstance(request, DroppedRequest):
            return Measured(float(sum(groups.values())), query)
        return Counted(dict(groups), query)


def _usable_field(request: Request) -> str | None:
    if isinstance(request, DroppedRequest):
        return request.field
    fields = [f.field for f in request.filters if f.op == VALID]
    return fields[0] if fields else None


def _version_filters(version_field: str, versions: list[str | None]) -> list:
    from mlobs.loki import logql

    distinct = list(dict.fromkeys(versions))
    if None in distinct:
        return []  # some request wants every version: filter nothing, group by version
    if len(distinct) == 1:
        return [logql.LabelFilter(version_field, "=", distinct[0])]
    return [logql.AnyOf(tuple(logql.LabelFilter(version_field, "=", v) for v in distinct))]


def _whole_seconds(seconds: float) -> int | None:
    return int(seconds) if seconds == int(seconds) else None
