"""Where the numbers come from: Grafana Loki (LogQL) or a JSON-lines log file, same semantics.

Both sources answer the same three kinds of request (:mod:`mlobs.slo.model`) — counts grouped by
fields, a quantile of a numeric field, and how many lines that field could not be read from — and
are asked for everything a run needs before any verdict is computed (``prefetch``), so Loki gets
the fewest queries (:mod:`mlobs.slo.plan`) and a measurement several scenarios need is computed
once.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from mlobs.errors import ConfigError, MlobsError, SourceUnavailable
from mlobs.loki.logql import NUMBER_REGEX as NUMERIC
from mlobs.loki.logql import parse_go_float, usable_number
from mlobs.slo.model import (
    VALID,
    Counted,
    CountRequest,
    DroppedRequest,
    Filter,
    Measured,
    QuantileRequest,
    Request,
    Scope,
)

Answer = Counted | Measured | MlobsError


class Source:
    description = "source"

    def __init__(self) -> None:
        self._cache: dict[Request, Answer] = {}
        self._unavailable: SourceUnavailable | None = None
        self.queries_issued = 0  # queries sent to Loki / measurements computed from a file
        self.unplanned = 0  # requests answered one by one because no prefetch asked for them

    def prefetch(self, requests: Iterable[Request]) -> None:
        """Answer every request in one go (Loki: the fewest queries, concurrently)."""
        missing = [r for r in dict.fromkeys(requests) if r not in self._cache]
        if missing:
            self._answer(missing)

    def get(self, request: Request) -> Counted | Measured:
        if request not in self._cache:
            self.unplanned += 1
            self._answer([request])
        answer = self._cache[request]
        if isinstance(answer, MlobsError):
            raise answer
        return answer

    def _answer(self, requests: list[Request]) -> None:
        if self._unavailable is not None:
            raise self._unavailable  # down once is down for this run: fail the rest fast
        try:
            self._cache.update(self._fetch(requests))
        except SourceUnavailable as exc:
            self._unavailable = exc
            raise

    def explore_url(self, grafana_url: str, query: str, scope: Scope) -> str | None:
        return None

    def _fetch(self, requests: list[Request]) -> dict[Request, Answer]:
        raise NotImplementedError


def numeric_filter(field: str) -> Filter:
    return Filter(field, "=~", NUMERIC)


def passes(f: Filter, labels: dict[str, str]) -> bool:
    """Whether a line (or a group of a count, by its labels) passes ``f``, as Loki's label filter
    would decide: absent labels read as ""; a numeric comparison with a value that is not a number
    is a LabelFilterErr, which the queries' ``__error__=""`` guard drops."""
    if f.op == VALID:
        return usable_number(labels.get(f.field)) is not None
    value = labels.get(f.field, "")
    if f.op in ("=~", "!~"):
        found = re.fullmatch(str(f.value), value) is not None  # Loki's label regexes are anchored
        return found is (f.op == "=~")
    if f.op in ("=", "!=") and isinstance(f.value, str):
        return (value == f.value) is (f.op == "=")
    number = parse_go_float(value)
    if number is None:
        return False
    threshold = float(f.value)
    return {"=": number == threshold, "==": number == threshold, "!=": number != threshold,
            ">": number > threshold, ">=": number >= threshold, "<": number < threshold,
            "<=": number <= threshold}[f.op]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Loki


class LokiSource(Source):
    """Instant queries at the window's end; every number is one LogQL aggregation over all streams,
    planned so that one count query and one query per quantile answer a whole run."""

    def __init__(self, client, url: str, *, concurrency: int = 4) -> None:
        super().__init__()
        self.client = client
        self.concurrency = concurrency
        self.description = f"Loki {client.base_url}"  # the client keeps no userinfo in it

    def _fetch(self, requests: list[Request]) -> dict[Request, Answer]:
        from mlobs.slo.plan import LokiPlan

        plan = LokiPlan(self.client, concurrency=self.concurrency)
        try:
            return plan.answer(requests)
        finally:
            self.queries_issued += plan.queries_sent

    def explore_url(self, grafana_url: str, query: str, scope: Scope) -> str | None:
        from urllib.parse import quote

        state = {"datasource": "loki", "queries": [{"refId": "A", "expr": query}],
                 "range": {"from": str(int((scope.end - scope.window_s) * 1000)),
                           "to": str(int(scope.end * 1000))}}
        return f"{grafana_url.rstrip('/')}/explore?left={quote(json.dumps(state, separators=(',', ':')))}"


# ---------------------------------------------------------------------------------------------
# Log file


class FileSource(Source):
    """The function's JSON-lines stdout evaluated in-process with Loki's semantics.

    The file is one stream, so the selector does not apply. Like ``| json`` followed by
    ``| __error__=""``: lines that are not JSON objects are skipped; values become strings as
    written (null fields are absent); numeric filters skip lines whose value is not a number, and a
    quantile reads only values that are finite numbers ≥ 0 (the rest are counted as dropped).
    Lines without a readable timestamp, or outside the window, are skipped too — and every skip is
    counted in the evidence. A window with no line left in it cannot be evaluated (exit 2): an
    empty or wrong file is not "0 requests".
    """

    def __init__(self, path: Path, timestamp_field: str = "timestamp") -> None:
        super().__init__()
        self.path = path
        self.description = f"log file {path.name}"
        self._rows: list[tuple[float, dict[str, str]]] | None = None
        self._timestamp_field = timestamp_field
        self.lines_read = 0
        self.not_json = 0
        self.no_timestamp = 0

    def rows(self) -> list[tuple[float, dict[str, str]]]:
        if self._rows is None:
            if not self.path.is_file():
                raise ConfigError(f"logs-file {str(self.path)!r} does not exist")
            rows = []
            with self.path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        continue  # blank lines are not log lines (Loki refuses empty entries)
                    self.lines_read += 1
                    labels = _parse_line(line)
                    if labels is None:
                        self.not_json += 1
                        continue
                    ts = _timestamp(labels.get(self._timestamp_field))
                    if ts is None:
                        self.no_timestamp += 1
                        continue
                    rows.append((ts, labels))
            self._rows = rows
        return self._rows

    def _window_rows(self, scope: Scope) -> tuple[list[dict[str, str]], str]:
        start = scope.end - scope.window_s
        rows = self.rows()
        selected = [labels for ts, labels in rows if start < ts <= scope.end]
        outside = len(rows) - len(selected)
        evidence = (f"{self.lines_read} line(s) read, {len(selected)} in the window; skipped "
                    f"{self.not_json} not JSON, {self.no_timestamp} without a valid "
                    f"{self._timestamp_field}, {outside} outside the window")
        if not selected:
            span = f"{_rfc3339(start)} – {_rfc3339(scope.end)}"
            raise ConfigError(
                f"logs-file {self.path.name}: no line to evaluate in the window {span} "
                f"({evidence})",
                hint="check the file, window and window-end",
            )
        return selected, evidence

    def _fetch(self, requests: list[Request]) -> dict[Request, Answer]:
        answers: dict[Request, Answer] = {}
        for request in requests:
            self.queries_issued += 1
            rows, evidence = self._window_rows(request.scope)
            filters = request.scope.base_filters() + request.filters
            selected = [labels for labels in rows if all(passes(f, labels) for f in filters)]
            if isinstance(request, CountRequest):
                groups: dict[tuple[str, ...], float] = defaultdict(float)
                for labels in selected:
                    groups[tuple(labels.get(name, "") for name in request.by)] += 1
                answers[request] = Counted(
                    dict(groups), f"{self.description}: count{_describe(filters, request.by)} — {evidence}")
            elif isinstance(request, QuantileRequest):
                from mlobs.stats import quantile

                values = [v for v in (usable_number(labels.get(request.field)) for labels in selected)
                          if v is not None]
                answers[request] = Measured(
                    quantile(values, request.q) if values else None,
                    f"{self.description}: quantile {request.q!r} of {request.field}"
                    f"{_describe(filters, ())} — {evidence}")
            else:
                assert isinstance(request, DroppedRequest)
                bad = sum(1 for labels in selected if usable_number(labels.get(request.field)) is None)
                answers[request] = Measured(
                    float(bad), f"{self.description}: no usable {request.field}"
                                f"{_describe(filters, ())} — {evidence}")
        return answers


def _describe(filters: tuple[Filter, ...], by: tuple[str, ...]) -> str:
    parts = []
    for f in filters:
        if f.op == VALID:
            parts.append(f"{f.field} is a usable number")
        elif f.value != NUMERIC:
            parts.append(f"{f.field} {f.op} {f.value!r}")
    where = " and ".join(parts)
    return (f" where {where}" if where else "") + (f" by {', '.join(by)}" if by else "")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_line(line: str) -> dict[str, str] | None:
    # Numbers stay as written ("1e400", "1.50"), as Loki's json parser keeps them; NaN and
    # Infinity are not JSON, so such a line is not JSON for Loki either.
    try:
        obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    labels: dict[str, str] = {}
    _flatten(obj, "", labels)
    return labels


def _flatten(obj: dict, prefix: str, out: dict[str, str]) -> None:
    for key, value in obj.items():
        name = re.sub(r"[^a-zA-Z0-9_]", "_", f"{prefix}{key}")
        if isinstance(value, dict):
            _flatten(value, f"{name}_", out)
        elif value is None:
            continue  # Loki's json parser drops nulls
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = str(value)


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone is not a moment
    return moment.timestamp()


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
