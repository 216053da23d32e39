"""Where the numbers come from: Grafana Loki (LogQL) or a JSON-lines log file, same semantics.

Both sources answer the same three questions — counts grouped by fields, a quantile of a numeric
field, and how many lines a numeric field could not be read from — and remember answers, so a
measurement that several scenarios need is queried once.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from mlobs.errors import ConfigError, SourceUnavailable
from mlobs.loki.logql import NUMBER_REGEX as NUMERIC
from mlobs.slo.model import Counted, Filter, Measured, Scope

# What Loki's unwrap (Go's strconv.ParseFloat) reads as a number; both sources use this regex.
_NUMERIC = re.compile(NUMERIC)


class Source:
    description = "source"

    def __init__(self) -> None:
        self._cache: dict[tuple, object] = {}
        self._unavailable: SourceUnavailable | None = None
        self.queries_issued = 0

    def _cached(self, key: tuple, compute):
        if self._unavailable is not None:
            raise self._unavailable  # down once is down for this run: fail the rest fast
        if key not in self._cache:
            self.queries_issued += 1
            try:
                self._cache[key] = compute()
            except SourceUnavailable as exc:
                self._unavailable = exc
                raise
        return self._cache[key]

    def count(self, scope: Scope, filters: tuple[Filter, ...] = (), by: tuple[str, ...] = ()) -> Counted:
        filters = scope.base_filters() + tuple(filters)
        return self._cached(("count", scope, filters, by), lambda: self._count(scope, filters, by))

    def quantile(self, scope: Scope, q: float, field: str, filters: tuple[Filter, ...] = ()) -> Measured:
        filters = scope.base_filters() + tuple(filters)
        return self._cached(("quantile", scope, q, field, filters),
                            lambda: self._quantile(scope, q, field, filters))

    def dropped(self, scope: Scope, field: str, filters: tuple[Filter, ...] = ()) -> Measured:
        """Lines in scope whose ``field`` is present but not a number (left out of quantiles)."""
        filters = scope.base_filters() + tuple(filters)
        return self._cached(("dropped", scope, field, filters),
                            lambda: self._dropped(scope, field, filters))

    def explore_url(self, grafana_url: str, query: str, scope: Scope) -> str | None:
        return None

    # implemented by each source
    def _count(self, scope, filters, by) -> Counted: raise NotImplementedError
    def _quantile(self, scope, q, field, filters) -> Measured: raise NotImplementedError
    def _dropped(self, scope, field, filters) -> Measured: raise NotImplementedError


def numeric_filter(field: str) -> Filter:
    return Filter(field, "=~", NUMERIC)


# ---------------------------------------------------------------------------------------------
# Loki


class LokiSource(Source):
    """Instant queries at the window's end; every number is one LogQL aggregation over all streams."""

    def __init__(self, client, url: str) -> None:
        super().__init__()
        self.client = client
        self.description = f"Loki {url}"

    def _instant(self, query: str, scope: Scope):
        return self.client.instant(query, at=scope.end)

    def _count(self, scope, filters, by) -> Counted:
        from mlobs.loki import logql

        query = logql.count_query(logql.Selector.parse(scope.selector), scope.window,
                                  filters=_label_filters(filters), by=by,
                                  json_fields=_fields(filters, by))
        groups: dict[tuple[str, ...], float] = {}
        for sample in self._instant(query, scope):
            key = tuple(sample.labels.get(name, "") for name in by)
            groups[key] = groups.get(key, 0.0) + sample.value
        return Counted(groups, query)

    def _quantile(self, scope, q, field, filters) -> Measured:
        from mlobs.loki import logql

        query = logql.quantile_query(logql.Selector.parse(scope.selector), q, field, scope.window,
                                     filters=_label_filters(filters),
                                     json_fields=_fields(filters, (field,)))
        samples = self._instant(query, scope)
        if len(samples) > 1:  # by () must give one series; more means the query is wrong
            raise ConfigError(f"quantile query returned {len(samples)} series, expected 1: {query}")
        value = samples[0].value if samples else None
        return Measured(None if value is None or math.isnan(value) else value, query)

    def _dropped(self, scope, field, filters) -> Measured:
        from mlobs.loki import logql

        query = logql.unwrap_dropped_query(logql.Selector.parse(scope.selector), field, scope.window,
                                           filters=_label_filters(filters),
                                           json_fields=_fields(filters, (field,)))
        samples = self._instant(query, scope)
        return Measured(sum(s.value for s in samples), query)

    def explore_url(self, grafana_url: str, query: str, scope: Scope) -> str | None:
        from urllib.parse import quote

        state = {"datasource": "loki", "queries": [{"refId": "A", "expr": query}],
                 "range": {"from": str(int((scope.end - scope.window_s) * 1000)),
                           "to": str(int(scope.end * 1000))}}
        return f"{grafana_url.rstrip('/')}/explore?left={quote(json.dumps(state, separators=(',', ':')))}"


def _fields(filters: Iterable[Filter], extra: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*(f.field for f in filters), *extra]))


def _label_filters(filters: Iterable[Filter]):
    from mlobs.loki import logql

    return tuple(logql.LabelFilter(f.field, f.op, f.value) for f in filters)


# ---------------------------------------------------------------------------------------------
# Log file


class FileSource(Source):
    """The function's JSON-lines stdout evaluated in-process with Loki's semantics.

    The file is one stream, so the selector does not apply. Like ``| json`` followed by
    ``| __error__=""``: lines that are not JSON objects are skipped; values become strings
    (null fields are absent); numeric filters and unwrap skip lines whose value is not a number.
    """

    def __init__(self, path: Path, timestamp_field: str = "timestamp") -> None:
        super().__init__()
        self.path = path
        self.description = f"log file {path.name}"
        self._rows: list[tuple[float, dict[str, str]]] | None = None
        self._timestamp_field = timestamp_field
        self.skipped_lines = 0

    def rows(self) -> list[tuple[float, dict[str, str]]]:
        if self._rows is None:
            if not self.path.is_file():
                raise ConfigError(f"logs-file {str(self.path)!r} does not exist")
            rows = []
            with self.path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parsed = _parse_line(line, self._timestamp_field)
                    if parsed is None:
                        self.skipped_lines += 1
                    else:
                        rows.append(parsed)
            self._rows = rows
        return self._rows

    def _select(self, scope: Scope, filters: tuple[Filter, ...]) -> list[dict[str, str]]:
        start = scope.end - scope.window_s
        predicates = [_predicate(f) for f in filters]
        return [labels for ts, labels in self.rows()
                if start < ts <= scope.end and all(p(labels) for p in predicates)]

    def _count(self, scope, filters, by) -> Counted:
        groups: dict[tuple[str, ...], float] = defaultdict(float)
        for labels in self._select(scope, filters):
            groups[tuple(labels.get(name, "") for name in by)] += 1
        return Counted(dict(groups), f"{self.description}: count{_describe(filters, by)}")

    def _quantile(self, scope, q, field, filters) -> Measured:
        from mlobs.stats import quantile

        values = [v for v in (_number(labels.get(field)) for labels in self._select(scope, filters))
                  if v is not None]
        value = quantile(values, q) if values else None
        return Measured(value, f"{self.description}: quantile {q:g} of {field}{_describe(filters, ())}")

    def _dropped(self, scope, field, filters) -> Measured:
        rows = self._select(scope, filters)
        bad = sum(1 for labels in rows if field in labels and _number(labels[field]) is None)
        return Measured(float(bad), f"{self.description}: non-numeric {field}{_describe(filters, ())}")


def _describe(filters: tuple[Filter, ...], by: tuple[str, ...]) -> str:
    where = " and ".join(f"{f.field} {f.op} {f.value!r}" for f in filters if f.value != NUMERIC)
    return (f" where {where}" if where else "") + (f" by {', '.join(by)}" if by else "")


def _parse_line(line: str, timestamp_field: str) -> tuple[float, dict[str, str]] | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    labels: dict[str, str] = {}
    _flatten(obj, "", labels)
    ts = _timestamp(labels.get(timestamp_field))
    return None if ts is None else (ts, labels)


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
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: str | None) -> float | None:
    """The value as unwrap reads it; None where unwrap would drop the line."""
    if value is None or not _NUMERIC.fullmatch(value):
        return None
    try:
        number = float.fromhex(value) if "x" in value.lower() else float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _predicate(f: Filter):
    if f.op in ("=~", "!~"):
        rx = re.compile(f"(?:{f.value})\\Z")  # Loki's label regexes are fully anchored
        wanted = f.op == "=~"
        return lambda labels: bool(rx.match(labels.get(f.field, ""))) is wanted
    if f.op in ("=", "!=") and isinstance(f.value, str):
        wanted = f.op == "="
        return lambda labels: (labels.get(f.field, "") == f.value) is wanted
    compare = {"=": float.__eq__, "==": float.__eq__, "!=": float.__ne__, ">": float.__gt__,
               ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}[f.op]
    threshold = float(f.value)

    def numeric(labels: dict[str, str]) -> bool:
        number = _number(labels.get(f.field))
        return number is not None and compare(number, threshold)

    return numeric
