"""A loopback Grafana Loki double that evaluates a LogQL subset for real.

It exists so tests exercise the real HTTP client and real query text, and it is kept honest by
``tests/test_loki_conformance.py``, which replays the responses recorded from a real Loki
(``tests/data/loki-conformance``) against it, and by ``tests/test_slo_plan_conformance.py`` (the
queries slo-validate's plan sends, recorded in ``tests/data/loki-plan-recordings``). Semantics follow
Loki 3.x's documentation and source where the recordings are silent; the notes marked *Loki:* say
which behaviour is copied and why it matters.

Supported: stream selectors (= != =~ !~), line filters (|= != |~ !~), ``| json`` with and without
parameters, label filters (string, regex, numeric, duration, bytes — values read as go-humanize
and Go's ParseFloat read them; and/or/comma), ``| label_format`` (renames, and templates of text
and ``{{.label}}``), ``| drop`` (names and matchers; ``__error__`` clears the error), ``| unwrap``
(with bytes/duration conversions) and post-unwrap filters, the range functions ``count_over_time
rate bytes_over_time bytes_rate sum/avg/min/max/stddev/stdvar/first/last/quantile_over_time`` with
``by``/``without``, ``offset``, the vector aggregations ``sum avg min max count``, and the limits
``max_query_series`` and ``max_query_length`` (see LokiDouble). Anything else answers HTTP 400 with
a message starting ``LokiDouble does not implement``. Known difference: for a malformed JSON line
(cut short, a bare NaN), Loki's ``| json a="a"`` still reads the fields it can and flags an error
only when a requested one is unreadable; the double calls the whole line not JSON.

Deliberately independent of ``mlobs.loki``: it has its own unquoting and float parsing, so a
mistake in the query builder cannot be mirrored by the same mistake here.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["LokiDouble", "RecordedRequest", "conformance_corpus"]

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
NS = 1_000_000_000


def conformance_corpus() -> Path:
    """The recorded real-Loki answers: this project's test data, kept in ``tests/data``."""
    return Path(__file__).resolve().parents[1] / "data" / "loki-conformance"


# =================================================================================================
# Errors that become HTTP 400 text/plain bodies
# =================================================================================================


class QueryError(Exception):
    """Loki answers these with HTTP 400 and the message as a text/plain body."""

    def __init__(self, body: str) -> None:
        super().__init__(body)
        self.body = body


class ParseError(QueryError):
    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        # Loki: logqlmodel.ParseError.Error() — no position for errors found after parsing.
        if line or col:
            super().__init__(f"parse error at line {line}, col {col}: {message}")
        else:
            super().__init__(f"parse error : {message}")


class Unsupported(QueryError):
    def __init__(self, what: str) -> None:
        super().__init__(f"LokiDouble does not implement {what}")


class PipelineError(QueryError):
    def __init__(self, labels: dict[str, str]) -> None:
        kind = labels["__error__"]
        # Loki: logqlmodel.PipelineError.Error(), byte for byte.
        super().__init__(
            f"pipeline error: '{kind}' for series: '{_prom_labels(labels)}'.\n"
            f'Use a label filter to intentionally skip this error. (e.g | __error__!="{kind}").\n'
            'To skip all potential errors you can match empty errors.(e.g __error__="")\n'
            'The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__="" )\n'
        )


EMPTY_MATCHER_MESSAGE = (
    "queries require at least one regexp or equality matcher that does not have an "
    'empty-compatible value. For instance, app=~".*" does not meet this requirement, but '
    'app=~".+" will'
)


# =================================================================================================
# Go-compatible helpers: quoting, unquoting, float and duration parsing
# =================================================================================================


def _go_quote(text: str) -> str:
    """strconv.Quote, as Prometheus' Labels.String() uses for values."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", "\\": "\\\\", '"': '\\"'}  # fmt: skip
    out = []
    for ch in text:
        code = ord(ch)
        if ch in named:
            out.append(named[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _prom_labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in sorted(labels.items())) + "}"


_GO_DIGITS = r"[0-9](?:_?[0-9])*"
_GO_HEX_DIGITS = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_GO_DECIMAL = re.compile(
    rf"[+-]?(?:{_GO_DIGITS}(?:\.(?:{_GO_DIGITS})?)?|\.{_GO_DIGITS})(?:[eE][+-]?{_GO_DIGITS})?"
)
_GO_HEX = re.compile(
    rf"[+-]?0[xX](?:_?{_GO_HEX_DIGITS}(?:\.(?:{_GO_HEX_DIGITS})?)?|\.{_GO_HEX_DIGITS})"
    rf"[pP][+-]?{_GO_DIGITS}"
)
# Go: Inf and Infinity take a sign, NaN does not ("-nan" is invalid syntax).
_GO_SPECIAL = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
               "+infinity": math.inf, "-infinity": -math.inf, "nan": math.nan}  # fmt: skip


def _go_parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64), raising ValueError with Go's error text.

    Go's float literal syntax: underscores may separate digits ("1_000"); out-of-range values are
    an error (the value Go also returns, ±Inf, is not used by Loki)."""
    if text.lower() in _GO_SPECIAL:
        return _GO_SPECIAL[text.lower()]
    if _GO_DECIMAL.fullmatch(text):
        value = float(text.replace("_", ""))
    elif _GO_HEX.fullmatch(text):
        sign = -1.0 if text.startswith("-") else 1.0
        try:
            value = sign * float.fromhex(text.lstrip("+-").replace("_", ""))
        except OverflowError:
            value = math.inf
    else:
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text)}: invalid syntax")
    if math.isinf(value):
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text)}: value out of range")
    return value


_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                      "s": NS, "m": 60 * NS, "h": 3600 * NS}  # fmt: skip


def _go_parse_duration_ns(text: str) -> int:
    """time.ParseDuration, in nanoseconds."""
    body, sign = text, 1
    if body[:1] in "+-":
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    if body == "0":
        return 0
    total, pos = 0.0, 0
    while pos < len(body):
        part = _GO_DURATION_PART.match(body, pos)
        if part is None or part.group(1) in ("", "."):
            raise ValueError(f"time: invalid duration {_go_quote(text)}")
        total += float(part.group(1)) * _GO_DURATION_UNITS[part.group(2)]
        pos = part.end()
    if not body:
        raise ValueError(f"time: invalid duration {_go_quote(text)}")
    return sign * round(total)


_PROM_DURATION = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
_PROM_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def _prom_parse_duration_ns(text: str) -> int:
    """Prometheus model.ParseDuration, in nanoseconds."""
    if text == "0":
        return 0
    match = _PROM_DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a valid duration string: {_go_quote(text)}")
    return (
        sum(int(v) * u for v, u in zip(match.groups(), _PROM_UNITS_MS, strict=True) if v)
        * 1_000_000
    )


def _parse_any_duration_ns(text: str) -> int:
    # Loki's lexer tries Prometheus syntax first, then Go's.
    try:
        return _prom_parse_duration_ns(text)
    except ValueError:
        return _go_parse_duration_ns(text)


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}  # fmt: skip


def _go_unquote(literal: str) -> str:
    """Decode a double-quoted Go string literal (Prometheus strutil.Unquote)."""
    body = literal[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        kind = body[i + 1 : i + 2]
        if kind in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[kind].encode()
            i += 2
        elif kind in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError("invalid char escape")
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError("invalid char escape")
            else:
                out += chr(code).encode()
            i += 2 + width
        elif re.fullmatch(r"[0-7]{3}", body[i + 1 : i + 4]) and int(body[i + 1 : i + 4], 8) < 256:
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        else:
            raise ValueError("invalid char escape")
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-8 rune") from None


def _format_value(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64) plus Prometheus' spelling of NaN and infinities."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _json_timestamp(ts_ms: int) -> int | float:
    # Prometheus writes seconds with up to millisecond precision, no trailing zeros.
    return ts_ms // 1000 if ts_ms % 1000 == 0 else ts_ms / 1000


# =================================================================================================
# Lexer (after Loki's pkg/logql/syntax/lex.go)
# =================================================================================================

_KEYWORDS = {
    "by": "BY", "without": "WITHOUT", "bool": "BOOL", "json": "JSON", "logfmt": "LOGFMT",
    "regexp": "REGEXP", "unpack": "UNPACK", "pattern": "PATTERN", "unwrap": "UNWRAP",
    "offset": "OFFSET", "on": "ON", "ignoring": "IGNORING", "group_left": "GROUP_LEFT",
    "group_right": "GROUP_RIGHT", "or": "OR", "and": "AND", "unless": "UNLESS",
    "line_format": "LINE_FMT", "label_format": "LABEL_FMT", "ip": "IP",
    "decolorize": "DECOLORIZE", "drop": "DROP", "keep": "KEEP",
}  # fmt: skip
_RANGE_OPS = {
    "count_over_time": "COUNT_OVER_TIME", "rate": "RATE", "rate_counter": "RATE_COUNTER",
    "bytes_over_time": "BYTES_OVER_TIME", "bytes_rate": "BYTES_RATE",
    "avg_over_time": "AVG_OVER_TIME", "sum_over_time": "SUM_OVER_TIME",
    "min_over_time": "MIN_OVER_TIME", "max_over_time": "MAX_OVER_TIME",
    "stdvar_over_time": "STDVAR_OVER_TIME", "stddev_over_time": "STDDEV_OVER_TIME",
    "quantile_over_time": "QUANTILE_OVER_TIME", "first_over_time": "FIRST_OVER_TIME",
    "last_over_time": "LAST_OVER_TIME", "absent_over_time": "ABSENT_OVER_TIME",
}  # fmt: skip
_VECTOR_OPS = {
    "sum": "SUM", "avg": "AVG", "count": "COUNT", "max": "MAX", "min": "MIN",
    "stddev": "STDDEV", "stdvar": "STDVAR", "bottomk": "BOTTOMK", "topk": "TOPK",
    "sort": "SORT", "sort_desc": "SORT_DESC", "approx_topk": "APPROX_TOPK",
}  # fmt: skip
_FUNCTIONS = {
    **_RANGE_OPS, **_VECTOR_OPS, "vector": "VECTOR", "label_replace": "LABEL_REPLACE",
    "bytes": "BYTES_CONV", "duration": "DURATION_CONV", "duration_seconds": "DURATION_SECONDS_CONV",
}  # fmt: skip
_OPERATORS = {
    "!=": "NEQ", "=~": "RE", "!~": "NRE", "!>": "NPA", "|=": "PIPE_EXACT", "|~": "PIPE_MATCH",
    "|>": "PIPE_PATTERN", "==": "CMP_EQ", ">=": "GTE", "<=": "LTE",
    "{": "OPEN_BRACE", "}": "CLOSE_BRACE", "(": "OPEN_PARENTHESIS", ")": "CLOSE_PARENTHESIS",
    ",": "COMMA", "=": "EQ", "|": "PIPE", ">": "GT", "<": "LT", "+": "ADD", "-": "SUB",
    "*": "MUL", "/": "DIV", "%": "MOD", "^": "POW", ".": "DOT",
}  # fmt: skip
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?"
)
_IDENT = re.compile(r"[^\W\d]\w*")
_DURATION_RUNES = set("0123456789.nuµmshdwy")
_BYTES_RUNES = set("0123456789.BikKMGTP")


_HUMANIZE_UNITS = {"b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2, "gib": 1024**3,
                   "gb": 1000**3, "tib": 1024**4, "tb": 1000**4, "pib": 1024**5, "pb": 1000**5,
                   "eib": 1024**6, "eb": 1000**6, "": 1, "ki": 1024, "k": 1000, "mi": 1024**2,
                   "m": 1000**2, "gi": 1024**3, "g": 1000**3, "ti": 1024**4, "t": 1000**4,
                   "pi": 1024**5, "p": 1000**5, "ei": 1024**6, "e": 1000**6}  # fmt: skip


def _parse_bytes(text: str) -> int:
    """go-humanize's ParseBytes, as Loki's bytes label filters (and literals) read a value: the
    leading run of digits, '.' and ',' (commas removed) through strconv.ParseFloat, times the unit
    the rest names after trimming spaces; ≥ 2^64 is "too large"."""
    run = 0
    for ch in text:
        if not (unicodedata.category(ch) == "Nd" or ch in ".,"):
            break
        run += 1
    if not text[:run].isascii():
        # Go slices the bytes by the count of runes: a multi-byte digit leaves broken UTF-8.
        raise ValueError(f"strconv.ParseFloat: parsing {_go_quote(text[:run])}: invalid syntax")
    number = _go_parse_float(text[:run].replace(",", ""))
    extra = text[run:].strip().lower()
    if extra not in _HUMANIZE_UNITS:
        raise ValueError(f"unhandled size name: {extra}")
    value = number * _HUMANIZE_UNITS[extra]
    if value >= 2.0**64:
        raise ValueError(f"too large: {text}")
    return int(value)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    value: Any
    line: int
    col: int


def _lex(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0

    def here(at: int) -> tuple[int, int]:
        return line, at - line_start + 1

    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == "#"):
            if text[pos] == "#":  # comments run to the end of the line
                while pos < len(text) and text[pos] != "\n":
                    pos += 1
                continue
            if text[pos] == "\n":
                line, line_start = line + 1, pos + 1
            pos += 1
        if pos >= len(text):
            tokens.append(Token("$end", "", None, *here(pos)))
            return tokens
        start = pos
        ln, col = here(start)
        ch = text[pos]
        if ch in '"`':
            end = pos + 1
            while end < len(text) and text[end] != ch:
                if ch == '"' and text[end] == "\\":
                    end += 1
                if ch == '"' and end < len(text) and text[end] == "\n":
                    raise ParseError("literal not terminated", ln, col)
                end += 1
            if end >= len(text):
                raise ParseError("literal not terminated", ln, col)
            literal = text[pos : end + 1]
            try:
                value = _go_unquote(literal) if ch == '"' else literal[1:-1].replace("\r", "")
            except ValueError as exc:
                raise ParseError(str(exc), ln, col) from None
            tokens.append(Token("STRING", literal, value, ln, col))
            pos = end + 1
            continue
        if ch == "[":
            end = text.find("]", pos)
            if end < 0:
                raise ParseError("missing closing ']' in duration", ln, col)
            try:
                value = _prom_parse_duration_ns(text[pos + 1 : end])
            except ValueError as exc:
                raise ParseError(str(exc), ln, col) from None
            tokens.append(Token("RANGE", text[pos : end + 1], value, ln, col))
            pos = end + 1
            continue
        number = _NUMBER.match(text, pos) if (ch.isdigit() or ch == ".") else None
        if number and (ch != "." or len(number.group()) > 1):
            token, pos = _number_token(text, number, ln, col)
            tokens.append(token)
            continue
        if ch == "-" and pos + 1 < len(text) and text[pos + 1].isdigit():
            # Loki tries "-<duration>" before falling back to the SUB operator.
            number = _NUMBER.match(text, pos + 1)
            assert number is not None
            token, end = _number_token(text, number, ln, col, sign="-")
            if token.kind == "DURATION":
                tokens.append(token)
                pos = end
                continue
        two = text[pos : pos + 2]
        if len(two) == 2 and two in _OPERATORS:
            tokens.append(Token(_OPERATORS[two], two, two, ln, col))
            pos += 2
            continue
        ident = _IDENT.match(text, pos)
        if ident:
            word = ident.group()
            lower = word.lower()
            pos = ident.end()
            if lower in _FUNCTIONS and _followed_by_call(text, pos):
                tokens.append(Token(_FUNCTIONS[lower], word, lower, ln, col))
            elif lower in _KEYWORDS:
                tokens.append(Token(_KEYWORDS[lower], word, lower, ln, col))
            else:
                tokens.append(Token("IDENTIFIER", word, word, ln, col))
            continue
        if ch in _OPERATORS:
            tokens.append(Token(_OPERATORS[ch], ch, ch, ln, col))
        else:
            # Loki's lexer hands any other character to the parser as an IDENTIFIER.
            tokens.append(Token("IDENTIFIER", ch, ch, ln, col))
        pos += 1


def _number_token(
    text: str, number: re.Match[str], ln: int, col: int, sign: str = ""
) -> tuple[Token, int]:
    end = number.end()
    for runes, kind in ((_DURATION_RUNES, "DURATION"), (_BYTES_RUNES, "BYTES")):
        stop = end
        while stop < len(text) and not text[stop].isspace() and text[stop] in runes:
            stop += 1
        if stop > end:
            candidate = sign + text[number.start() : stop]
            try:
                value = (
                    _parse_any_duration_ns(candidate)
                    if kind == "DURATION"
                    else _parse_bytes(candidate)
                )
            except ValueError:
                continue
            return Token(kind, candidate, value, ln, col), stop
    return Token("NUMBER", sign + number.group(), sign + number.group(), ln, col), end


def _followed_by_call(text: str, pos: int) -> bool:
    rest = text[pos:].lstrip()
    if rest.startswith("("):
        return True
    word = re.match(r"(by|without)\s*\(", rest, re.IGNORECASE)
    return word is not None


# =================================================================================================
# AST
# =================================================================================================


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = re.fullmatch(self.value, value, re.DOTALL) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Grouping:
    labels: tuple[str, ...]
    without: bool

    @property
    def singleton(self) -> bool:
        return not self.labels and not self.without


@dataclass(frozen=True)
class LineFilter:
    op: str  # |= != |~ !~
    values: tuple[str, ...]  # alternatives joined by `or`

    def keep(self, line: str) -> bool:
        if self.op in ("|=", "!="):
            found = any(v in line for v in self.values)
        else:
            found = any(re.search(v, line) for v in self.values)
        return found if self.op in ("|=", "|~") else not found


@dataclass(frozen=True)
class JsonStage:
    params: tuple[tuple[str, str], ...] | None  # (label, path) pairs; None: every field


@dataclass(frozen=True)
class StringFilter:
    matcher: Matcher


@dataclass(frozen=True)
class NumericFilter:
    name: str
    op: str
    value: float
    kind: str  # "number", "duration" (value in seconds) or "bytes"


@dataclass(frozen=True)
class BinaryFilter:
    left: Any
    right: Any
    is_and: bool


@dataclass(frozen=True)
class LabelFormat:
    """``| label_format dst="{{.src}} text", dst2=src2``: templates (text and ``{{.label}}``
    only) or renames."""

    items: tuple[tuple[str, tuple[tuple[str, str], ...] | None, str | None], ...]


@dataclass(frozen=True)
class Drop:
    """``| drop name, name="value", name=~"re"``."""

    names: tuple[str, ...]
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class Unwrap:
    name: str
    conversion: str  # "", "bytes", "duration", "duration_seconds"
    post_filters: tuple[Any, ...]


@dataclass(frozen=True)
class LogRange:
    matchers: tuple[Matcher, ...]
    stages: tuple[Any, ...]
    unwrap: Unwrap | None
    range_ns: int
    offset_ns: int


@dataclass(frozen=True)
class RangeAgg:
    op: str
    param: float | None
    log: LogRange
    grouping: Grouping | None


@dataclass(frozen=True)
class VectorAgg:
    op: str
    inner: Any
    grouping: Grouping


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    stages: tuple[Any, ...]


# =================================================================================================
# Parser: recursive descent over the subset, with goyacc-style "unexpected X" messages
# =================================================================================================

_LINE_FILTER_KINDS = {"PIPE_EXACT": "|=", "NEQ": "!=", "PIPE_MATCH": "|~", "NRE": "!~"}
_MATCH_KINDS = {"EQ": "=", "NEQ": "!=", "RE": "=~", "NRE": "!~"}
_COMPARE_KINDS = {"EQ": "==", "CMP_EQ": "==", "NEQ": "!=", "GT": ">", "GTE": ">=", "LT": "<",
                  "LTE": "<="}  # fmt: skip
_RANGE_KINDS = {kind: op for op, kind in _RANGE_OPS.items()}
_VECTOR_KINDS = {kind: op for op, kind in _VECTOR_OPS.items()}
_BINARY_KINDS = {"OR", "AND", "UNLESS", "ADD", "SUB", "MUL", "DIV", "MOD", "POW", "CMP_EQ", "NEQ",
                 "GT", "GTE", "LT", "LTE"}  # fmt: skip
_CONVERSIONS = {"BYTES_CONV": "bytes", "DURATION_CONV": "duration",
                "DURATION_SECONDS_CONV": "duration_seconds"}  # fmt: skip


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0
        self.selectors: list[tuple[Matcher, ...]] = []

    @classmethod
    def parse(cls, text: str) -> Any:
        parser = cls(text)
        expr = parser.expr()
        if parser.peek().kind in _BINARY_KINDS and not isinstance(expr, LogQuery):
            raise Unsupported("binary operations between metric queries")
        parser.expect("$end")
        for matchers in parser.selectors:
            # Loki: syntax.validateMatchers, run once the whole expression has parsed.
            if not any(m.op in ("=", "=~") and not m.matches("") for m in matchers):
                raise ParseError(EMPTY_MATCHER_MESSAGE)
        return expr

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def unexpected(self, token: Token, expecting: str | None = None) -> ParseError:
        message = f"syntax error: unexpected {token.kind}"
        if expecting:
            message += f", expecting {expecting}"
        return ParseError(message, token.line, token.col)

    def expect(self, kind: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.unexpected(token, kind if kind != "$end" else None)
        return self.take()

    # --- expressions ---

    def expr(self) -> Any:
        token = self.peek()
        if token.kind == "OPEN_BRACE":
            matchers = self.selector()
            return LogQuery(matchers, self.pipeline())
        return self.metric_expr()

    def metric_expr(self) -> Any:
        token = self.peek()
        if token.kind in _RANGE_KINDS:
            return self.range_agg()
        if token.kind in _VECTOR_KINDS:
            return self.vector_agg()
        if token.kind == "OPEN_PARENTHESIS":
            self.take()
            inner = self.metric_expr()
            self.expect("CLOSE_PARENTHESIS")
            return inner
        if token.kind in ("NUMBER", "VECTOR", "LABEL_REPLACE", "ADD", "SUB"):
            raise Unsupported(f"{token.text!r} expressions")
        raise self.unexpected(token)

    def range_agg(self) -> RangeAgg:
        op = _RANGE_KINDS[self.take().kind]
        self.expect("OPEN_PARENTHESIS")
        text: str | None = None
        if self.peek().kind == "NUMBER":
            text = self.take().value
            self.expect("COMMA")
        log = self.log_range()
        self.expect("CLOSE_PARENTHESIS")
        grouping = self.grouping() if self.peek().kind in ("BY", "WITHOUT") else None
        # Loki: newRangeAggregationExpr checks the parameter, then validate() the rest.
        if text is not None and op != "quantile_over_time":
            raise ParseError(f"parameter {text} not supported for operation {op}")
        if text is None and op == "quantile_over_time":
            raise ParseError(f"parameter required for operation {op}")
        param = None if text is None else float(text)
        _validate_range_agg(op, log, grouping)
        if op in ("absent_over_time", "rate_counter"):
            raise Unsupported(op)
        return RangeAgg(op, param, log, grouping)

    def vector_agg(self) -> VectorAgg:
        op = _VECTOR_KINDS[self.take().kind]
        grouping = self.grouping() if self.peek().kind in ("BY", "WITHOUT") else None
        self.expect("OPEN_PARENTHESIS")
        if self.peek().kind == "NUMBER":
            raise Unsupported(f"{op} with a parameter")
        inner = self.metric_expr()
        self.expect("CLOSE_PARENTHESIS")
        if grouping is None and self.peek().kind in ("BY", "WITHOUT"):
            grouping = self.grouping()
        if op not in ("sum", "avg", "min", "max", "count"):
            raise Unsupported(f"the {op} aggregation")
        # Loki: mustNewVectorAggregationExpr turns a missing grouping into an empty `by ()`.
        return VectorAgg(op, inner, grouping or Grouping((), False))

    def grouping(self) -> Grouping:
        without = self.take().kind == "WITHOUT"
        self.expect("OPEN_PARENTHESIS")
        labels: list[str] = []
        if self.peek().kind != "CLOSE_PARENTHESIS":
            labels.append(self.expect("IDENTIFIER").value)
            while self.peek().kind == "COMMA":
                self.take()
                labels.append(self.expect("IDENTIFIER").value)
        self.expect("CLOSE_PARENTHESIS")
        return Grouping(tuple(labels), without)

    def log_range(self) -> LogRange:
        if self.peek().kind == "OPEN_PARENTHESIS":
            self.take()
            matchers = self.selector()
            stages, unwrap = self.pipeline(), self.unwrap()
            self.expect("CLOSE_PARENTHESIS")
            range_ns, offset_ns = self.expect("RANGE").value, self.offset()
            return LogRange(matchers, stages, unwrap, range_ns, offset_ns)
        matchers = self.selector()
        if self.peek().kind == "RANGE":
            range_ns, offset_ns = self.take().value, self.offset()
            stages, unwrap = self.pipeline(), self.unwrap()
        else:
            stages, unwrap = self.pipeline(), self.unwrap()
            range_ns, offset_ns = self.expect("RANGE").value, self.offset()
        return LogRange(matchers, stages, unwrap, range_ns, offset_ns)

    def offset(self) -> int:
        if self.peek().kind != "OFFSET":
            return 0
        self.take()
        return self.expect("DURATION").value

    def selector(self) -> tuple[Matcher, ...]:
        self.expect("OPEN_BRACE")
        matchers: list[Matcher] = []
        if self.peek().kind != "CLOSE_BRACE":
            matchers.append(self.matcher())
            while self.peek().kind == "COMMA":
                self.take()
                matchers.append(self.matcher())
        self.expect("CLOSE_BRACE")
        self.selectors.append(tuple(matchers))
        return tuple(matchers)

    def matcher(self) -> Matcher:
        name = self.expect("IDENTIFIER").value
        op_token = self.take()
        if op_token.kind not in _MATCH_KINDS:
            raise self.unexpected(op_token)
        value = self.expect("STRING").value
        return _matcher(name, _MATCH_KINDS[op_token.kind], value)

    # --- pipelines ---

    def pipeline(self) -> tuple[Any, ...]:
        stages: list[Any] = []
        while True:
            token = self.peek()
            if token.kind in _LINE_FILTER_KINDS:
                self.take()
                values = [self.expect("STRING").value]
                while self.peek().kind == "OR" and self.peek(1).kind == "STRING":
                    self.take()
                    values.append(self.take().value)
                stage = LineFilter(_LINE_FILTER_KINDS[token.kind], tuple(values))
                if stage.op in ("|~", "!~"):
                    for value in values:
                        _compile(value)
                stages.append(stage)
            elif token.kind in ("PIPE_PATTERN", "NPA"):
                raise Unsupported("pattern line filters")
            elif token.kind == "PIPE" and self.peek(1).kind != "UNWRAP":
                self.take()
                stages.append(self.stage())
            else:
                return tuple(stages)

    def stage(self) -> Any:
        token = self.peek()
        if token.kind == "JSON":
            self.take()
            if self.peek().kind != "IDENTIFIER":
                return JsonStage(None)
            params = [self.json_param()]
            while self.peek().kind == "COMMA":
                self.take()
                params.append(self.json_param())
            return JsonStage(tuple(params))
        if token.kind in ("IDENTIFIER", "OPEN_PARENTHESIS"):
            return self.label_filter()
        if token.kind == "LABEL_FMT":
            self.take()
            return self.label_format()
        if token.kind == "DROP":
            self.take()
            return self.drop()
        if token.kind in ("LOGFMT", "REGEXP", "UNPACK", "PATTERN", "LINE_FMT",
                          "KEEP", "DECOLORIZE"):  # fmt: skip
            raise Unsupported(f"the {token.text} stage")
        raise self.unexpected(token)

    def label_format(self) -> LabelFormat:
        items = []
        while True:
            name = self.expect("IDENTIFIER").value
            self.expect("EQ")
            value = self.take()
            if value.kind == "STRING":
                items.append((name, _simple_template(value.value), None))
            elif value.kind == "IDENTIFIER":
                items.append((name, None, value.value))
            else:
                raise self.unexpected(value)
            if self.peek().kind != "COMMA":
                break
            self.take()
        names = [name for name, _, _ in items]
        for name in names:
            # Loki: LabelsFormatter's validate(), at parse time.
            if name == "__error__":
                raise ParseError("__error__ cannot be formatted")
            if names.count(name) > 1:
                raise ParseError(f"multiple label name '{name}' not allowed in a single format operation")
        return LabelFormat(tuple(items))

    def drop(self) -> Drop:
        names: list[str] = []
        matchers: list[Matcher] = []
        while True:
            name = self.expect("IDENTIFIER").value
            if self.peek().kind in _MATCH_KINDS:
                op = _MATCH_KINDS[self.take().kind]
                matchers.append(_matcher(name, op, self.expect("STRING").value))
            else:
                names.append(name)
            if self.peek().kind != "COMMA":
                return Drop(tuple(names), tuple(matchers))
            self.take()

    def json_param(self) -> tuple[str, str]:
        label = self.expect("IDENTIFIER").value
        if self.peek().kind != "EQ":
            return label, label
        self.take()
        return label, self.expect("STRING").value

    def unwrap(self) -> Unwrap | None:
        if not (self.peek().kind == "PIPE" and self.peek(1).kind == "UNWRAP"):
            return None
        self.take()
        self.take()
        conversion = ""
        if self.peek().kind in _CONVERSIONS:
            conversion = _CONVERSIONS[self.take().kind]
            self.expect("OPEN_PARENTHESIS")
            name = self.expect("IDENTIFIER").value
            self.expect("CLOSE_PARENTHESIS")
        else:
            name = self.expect("IDENTIFIER").value
        post: list[Any] = []
        while self.peek().kind == "PIPE" and self.peek(1).kind in (
            "IDENTIFIER",
            "OPEN_PARENTHESIS",
        ):
            self.take()
            post.append(self.label_filter())
        return Unwrap(name, conversion, tuple(post))

    def label_filter(self) -> Any:
        left = self.label_filter_and()
        while self.peek().kind == "OR":
            self.take()
            left = BinaryFilter(left, self.label_filter_and(), is_and=False)
        return left

    def label_filter_and(self) -> Any:
        left = self.label_filter_primary()
        while True:
            kind = self.peek().kind
            if kind in ("AND", "COMMA"):
                self.take()
            elif kind not in ("IDENTIFIER", "OPEN_PARENTHESIS"):
                return left
            left = BinaryFilter(left, self.label_filter_primary(), is_and=True)

    def label_filter_primary(self) -> Any:
        if self.peek().kind == "OPEN_PARENTHESIS":
            self.take()
            inner = self.label_filter()
            self.expect("CLOSE_PARENTHESIS")
            return inner
        name = self.expect("IDENTIFIER").value
        op_token = self.take()
        value = self.take()
        if value.kind == "STRING" and op_token.kind in _MATCH_KINDS:
            return StringFilter(_matcher(name, _MATCH_KINDS[op_token.kind], value.value))
        if op_token.kind not in _COMPARE_KINDS:
            raise self.unexpected(op_token)
        op = _COMPARE_KINDS[op_token.kind]
        if value.kind in ("ADD", "SUB") and self.peek().kind == "NUMBER":
            sign = "-" if value.kind == "SUB" else ""
            return NumericFilter(name, op, float(sign + self.take().value), "number")
        if value.kind == "NUMBER":
            return NumericFilter(name, op, float(value.value), "number")
        if value.kind == "DURATION":
            return NumericFilter(name, op, value.value / NS, "duration")
        if value.kind == "BYTES":
            return NumericFilter(name, op, float(value.value), "bytes")
        if value.kind == "IP":
            raise Unsupported("ip() label filters")
        raise self.unexpected(value)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ParseError(f"error parsing regexp: {exc}") from None


def _matcher(name: str, op: str, value: str) -> Matcher:
    if op in ("=~", "!~"):
        _compile(value)
    return Matcher(name, op, value)


def _validate_range_agg(op: str, log: LogRange, grouping: Grouping | None) -> None:
    # Loki: RangeAggregationExpr.validate(), same messages.
    grouped_ok = {"avg_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time",
                  "max_over_time", "min_over_time", "first_over_time", "last_over_time"}  # fmt: skip
    if grouping is not None and op not in grouped_ok:
        raise ParseError(f"grouping not allowed for {op} aggregation")
    if log.unwrap is not None:
        if op not in grouped_ok | {"sum_over_time", "rate", "rate_counter", "absent_over_time"}:
            raise ParseError(f"invalid aggregation {op} with unwrap")
    elif op not in ("bytes_over_time", "bytes_rate", "count_over_time", "rate", "absent_over_time"):
        raise ParseError(f"invalid aggregation {op} without unwrap")


# =================================================================================================
# Pipeline evaluation
# =================================================================================================


@dataclass(frozen=True)
class Hints:
    """Loki's parser hints: which parsed labels a metric query needs (pkg/logql/log/parser_hints.go).

    They matter for conformance, not just speed: they decide whether ``| json`` runs at all (so
    whether a non-JSON line becomes an error) and which labels an error series shows.
    """

    skip_parsing: bool = False
    required: frozenset[str] | None = None  # None: extract every field
    preserve_error: bool = False

    @classmethod
    def build(
        cls, required: Iterable[str], groups: Iterable[str], without: bool, no_labels: bool,
        metric_label: str,
    ) -> Hints:  # fmt: skip
        names: list[str] = []
        for name in [*required, *groups, *([metric_label] if metric_label else [])]:
            names.append(name)
            if name.endswith("_extracted"):
                names.append(name.removesuffix("_extracted"))
        hints = frozenset(names)
        if no_labels:
            if hints:
                return cls(required=hints, preserve_error="__error__" in hints)
            return cls(skip_parsing=True)
        if without or not list(groups):
            return cls()
        return cls(required=hints, preserve_error="__error__" in hints)

    def should_extract(self, name: str) -> bool:
        return self.required is None or name in self.required


class LineState:
    """The labels of one log line as it moves through the pipeline (Loki's LabelsBuilder)."""

    def __init__(self, stream: dict[str, str], metadata: dict[str, str]) -> None:
        self.stream = stream
        self.metadata = metadata
        self.parsed: dict[str, str] = {}
        self.dropped: set[str] = set()
        self.error = ""
        self.error_details = ""

    def get(self, name: str) -> str | None:
        if name == "__error__":
            return self.error
        if name == "__error_details__":
            return self.error_details
        if name in self.parsed:
            return self.parsed[name]
        if name in self.dropped:
            return None
        for source in (self.metadata, self.stream):
            if name in source:
                return source[name]
        return None

    def set_error(self, error: str, details: str = "") -> None:
        self.error, self.error_details = error, details

    def delete(self, name: str) -> None:
        if name == "__error__":
            self.error = ""
        elif name == "__error_details__":
            self.error_details = ""
        else:
            self.parsed.pop(name, None)
            self.dropped.add(name)  # the stream's labels are shared by its lines: not mutated

    def labels(self) -> dict[str, str]:
        merged = {**{k: v for k, v in {**self.stream, **self.metadata}.items() if k not in self.dropped},
                  **self.parsed}
        if self.error:
            merged["__error__"] = self.error
            if self.error_details:
                merged["__error_details__"] = self.error_details
        return {k: v for k, v in merged.items() if v != ""}


class _RawNumber(str):
    """A JSON number kept as written, as Loki's json parser does ("99.0" stays "99.0")."""


def _decode_json(line: str) -> Any:
    return json.JSONDecoder(
        parse_float=_RawNumber, parse_int=_RawNumber, parse_constant=_reject_constant
    ).raw_decode(line.lstrip(" \t\r\n"))[0]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _sanitize(key: str, first: bool) -> str:
    key = key.strip() if first else key
    if first and key[:1].isdigit():
        key = "_" + key
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _flatten(obj: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in obj.items():
        name = f"{prefix}_{_sanitize(key, False)}" if prefix else _sanitize(key, True)
        if not name:
            continue
        if isinstance(value, dict):
            yield from _flatten(value, name)
        elif isinstance(value, bool):
            yield name, "true" if value else "false"
        elif isinstance(value, str):  # strings and _RawNumber
            yield name, str(value)
        # Loki: null values and arrays produce no label.


def _json_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _json_path(path: str) -> list[str | int]:
    """Loki's jsonexpr: a.b[0]["c d"]."""
    parts: list[str | int] = []
    for match in re.finditer(
        r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]', path
    ):
        if match.group(1) is not None:
            parts.append(match.group(1))
        elif match.group(2) is not None:
            parts.append(int(match.group(2)))
        else:
            parts.append(json.loads(f'"{match.group(3)}"'))
    return parts


def _apply_json(stage: JsonStage, line: str, state: LineState, hints: Hints) -> None:
    if hints.skip_parsing:
        return
    if stage.params is None:
        if not line.lstrip(" \t\r\n").startswith("{"):
            return _json_error(
                state, hints, "Value looks like object, but can't find closing '}' symbol"
            )
        try:
            obj = _decode_json(line)
        except ValueError:
            return _json_error(state, hints, "Malformed JSON error")
        for name, value in _flatten(obj):
            if name in state.stream:
                name += "_extracted"
            if hints.should_extract(name):
                state.parsed[name] = value
        return None
    if not line:
        return None
    if line[0] not in '"{[':
        return _json_error(state, hints, "")
    try:
        obj = _decode_json(line)
    except ValueError:
        return _json_error(state, hints, "Malformed JSON error")
    for label, path in stage.params:
        value = _lookup(obj, path)
        if value is not _MISSING:
            key = label + "_extracted" if label in state.stream else label
            state.parsed[key] = _json_value(value)
        elif state.get(label) is None:
            state.parsed[label] = ""  # Loki: every requested label exists, empty if not found
    return None


_MISSING = object()


def _lookup(obj: Any, path: str) -> Any:
    value = obj
    for part in _json_path(path):
        if isinstance(part, int):
            found = isinstance(value, list) and part < len(value)
        else:
            found = isinstance(value, dict) and part in value
        if not found:
            return _MISSING
        value = value[part]
    return value


def _json_error(state: LineState, hints: Hints, details: str) -> None:
    state.set_error("JSONParserErr", details)
    if hints.preserve_error:
        state.parsed["__preserve_error__"] = "true"


def _apply_filter(node: Any, state: LineState) -> bool:
    if isinstance(node, BinaryFilter):
        left = _apply_filter(node.left, state)
        if not node.is_and and left:
            return True
        right = _apply_filter(node.right, state)
        return (left and right) if node.is_and else right
    if isinstance(node, StringFilter):
        return node.matcher.matches(state.get(node.matcher.name) or "")
    value = state.get(node.name)
    if value is None:
        return False
    try:
        if node.kind == "duration":
            number = _go_parse_duration_ns(value) / NS
        elif node.kind == "bytes":
            number = float(_parse_bytes(value))
        else:
            number = _go_parse_float(value)
    except ValueError as exc:
        if not state.error:  # Loki keeps the first, more useful error
            state.set_error("LabelFilterErr", str(exc))
        return True
    return {
        "==": number == node.value, "!=": number != node.value, ">": number > node.value,
        ">=": number >= node.value, "<": number < node.value, "<=": number <= node.value,
    }[node.op]  # fmt: skip


_TEMPLATE_FIELD = re.compile(r"\{\{-?\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")


def _simple_template(text: str) -> tuple[tuple[str, str], ...]:
    """A label_format template made of text and ``{{.label}}`` only, as ("text"|"field", value)."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _TEMPLATE_FIELD.finditer(text):
        parts.append(("text", text[pos : match.start()]))
        parts.append(("field", match.group(1)))
        pos = match.end()
    parts.append(("text", text[pos:]))
    if any("{{" in value or "}}" in value for kind, value in parts if kind == "text"):
        raise Unsupported("label_format templates beyond text and {{.label}}")
    return tuple(p for p in parts if p[1] or p[0] == "field")


def _apply_label_format(stage: LabelFormat, state: LineState) -> None:
    # Loki: LabelsFormatter.Process. A template sees every label of the line so far — the
    # pipeline's __error__ and __error_details__ included — with a missing one read as "";
    # a rename moves the value and deletes the source label.
    snapshot: dict[str, str] | None = None
    for name, template, source in stage.items:
        if source is not None:
            value = state.get(source)
            if value is not None and source not in ("__error__", "__error_details__"):
                state.parsed[name] = value
                state.delete(source)
            continue
        if snapshot is None:
            snapshot = {k: v for k, v in {**state.stream, **state.metadata}.items()
                        if k not in state.dropped} | state.parsed
            if state.error:
                snapshot["__error__"] = state.error
                snapshot["__error_details__"] = state.error_details
        assert template is not None
        state.parsed[name] = "".join(snapshot.get(v, "") if kind == "field" else v
                                     for kind, v in template)


def _apply_drop(stage: Drop, state: LineState) -> None:
    # Loki: DropLabels.Process — a plain name always goes, name="value" only when it matches;
    # dropping __error__ (and __error_details__) clears the line's error.
    for name in stage.names:
        state.delete(name)
    for matcher in stage.matchers:
        value = state.get(matcher.name)
        if value is not None and matcher.matches(value):
            state.delete(matcher.name)


def _filter_labels(node: Any) -> list[str]:
    if isinstance(node, LabelFormat):
        return [n for _, template, source in node.items
                for n in ([source] if source is not None else [v for k, v in template or () if k == "field"])]
    if isinstance(node, Drop):
        return []
    if isinstance(node, BinaryFilter):
        return [*_filter_labels(node.left), *_filter_labels(node.right)]
    if isinstance(node, StringFilter):
        return [node.matcher.name]
    if isinstance(node, NumericFilter):
        return [node.name]
    return []


def _convert(value: str, conversion: str) -> float:
    if conversion == "bytes":
        return float(_parse_bytes(value))
    if conversion in ("duration", "duration_seconds"):
        return _go_parse_duration_ns(value) / NS
    return _go_parse_float(value)


@dataclass(frozen=True)
class Extractor:
    """How a range aggregation turns log lines into labelled samples (Loki's SampleExtractor)."""

    log: LogRange
    counts_bytes: bool
    groups: tuple[str, ...]
    without: bool
    no_labels: bool
    hints: Hints

    @classmethod
    def for_range(cls, node: RangeAgg, override: Grouping | None) -> Extractor:
        groups: tuple[str, ...] = ()
        without = no_labels = False
        # Loki: the parent `sum`'s grouping, when pushed down, replaces the range grouping.
        for grouping in (node.grouping, override):
            if grouping is not None:
                groups, without, no_labels = grouping.labels, grouping.without, grouping.singleton
        required = [name for stage in node.log.stages for name in _filter_labels(stage)]
        metric_label = ""
        if node.log.unwrap is not None:
            unwrap = node.log.unwrap
            required += [name for f in unwrap.post_filters for name in _filter_labels(f)]
            if not groups or without:
                # Loki: ungrouped unwrap aggregations drop the unwrapped label from the series.
                without, groups = True, tuple(sorted({*groups, unwrap.name}))
            metric_label = unwrap.name
        hints = Hints.build(required, groups, without, no_labels, metric_label)
        counts_bytes = node.op in ("bytes_over_time", "bytes_rate")
        return cls(node.log, counts_bytes, groups, without, no_labels, hints)

    def process(
        self, stream: dict[str, str], line: str, metadata: dict[str, str]
    ) -> tuple[float, dict[str, str]] | None:
        state = LineState(stream, metadata)
        for stage in self.log.stages:
            if isinstance(stage, LineFilter):
                if not stage.keep(line):
                    return None
            elif isinstance(stage, JsonStage):
                _apply_json(stage, line, state, self.hints)
            elif isinstance(stage, LabelFormat):
                _apply_label_format(stage, state)
            elif isinstance(stage, Drop):
                _apply_drop(stage, state)
            elif not _apply_filter(stage, state):
                return None
        unwrap = self.log.unwrap
        if unwrap is None:
            value = float(len(line.encode())) if self.counts_bytes else 1.0
        else:
            raw = state.get(unwrap.name)
            if not raw:
                return None  # Loki: a missing or empty unwrap label yields no sample
            try:
                value = _convert(raw, unwrap.conversion)
            except ValueError as exc:
                value = 0.0
                state.set_error("SampleExtractionErr", str(exc))
            for post in unwrap.post_filters:
                if not _apply_filter(post, state):
                    return None
        return value, self.grouped_labels(state)

    def grouped_labels(self, state: LineState) -> dict[str, str]:
        labels = state.labels()
        if state.error:
            return labels  # Loki keeps every label on errors, so the error names its series
        if self.no_labels:
            return {}
        if self.groups and not self.without:
            return {k: v for k, v in labels.items() if k in self.groups}
        if self.without:
            return {k: v for k, v in labels.items() if k not in self.groups}
        return labels


# =================================================================================================
# Aggregation
# =================================================================================================

LabelKey = tuple[tuple[str, str], ...]
Result = dict[LabelKey, dict[int, float]]  # series -> {evaluation time ns: value}


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _quantile(q: float, values: list[float]) -> float:
    # Loki/Prometheus: linear interpolation between the closest ranks.
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _range_function(node: RangeAgg) -> Callable[[list[tuple[int, float]]], float]:
    seconds = node.log.range_ns / NS

    def values(points: list[tuple[int, float]]) -> list[float]:
        return [value for _, value in points]

    functions: dict[str, Callable[[list[tuple[int, float]]], float]] = {
        "count_over_time": lambda pts: float(len(pts)),
        "rate": lambda pts: sum(values(pts)) / seconds,
        "bytes_over_time": lambda pts: sum(values(pts)),
        "bytes_rate": lambda pts: sum(values(pts)) / seconds,
        "sum_over_time": lambda pts: sum(values(pts)),
        "avg_over_time": lambda pts: statistics.fmean(values(pts)),
        "min_over_time": lambda pts: min(values(pts)),
        "max_over_time": lambda pts: max(values(pts)),
        "stdvar_over_time": lambda pts: statistics.pvariance(values(pts)),
        "stddev_over_time": lambda pts: statistics.pstdev(values(pts)),
        "first_over_time": lambda pts: pts[0][1],
        "last_over_time": lambda pts: pts[-1][1],
        "quantile_over_time": lambda pts: _quantile(node.param or 0.0, values(pts)),
    }
    return functions[node.op]


_VECTOR_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,  # Loki adds in order, without compensation
    "avg": statistics.fmean,
    "min": min,
    "max": max,
    "count": lambda vs: float(len(vs)),
}


@dataclass
class Stream:
    labels: dict[str, str]
    entries: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)


class Engine:
    def __init__(self, streams: Iterable[Stream]) -> None:
        self.streams = list(streams)
        self.lines_scanned = 0  # entries of matching streams inside a queried window (benchmarks)

    def evaluate(self, expr: Any, times: list[int]) -> Result:
        if isinstance(expr, RangeAgg):
            return self.range_agg(expr, times, None)
        if isinstance(expr, VectorAgg):
            return self.vector_agg(expr, times)
        raise Unsupported(f"evaluating {type(expr).__name__}")

    def range_agg(self, node: RangeAgg, times: list[int], override: Grouping | None) -> Result:
        extractor = Extractor.for_range(node, override)
        log = node.log
        low = min(times) - log.offset_ns - log.range_ns
        high = max(times) - log.offset_ns
        samples: list[tuple[int, LabelKey, float]] = []
        for stream in self.streams:
            if not all(m.matches(stream.labels.get(m.name, "")) for m in log.matchers):
                continue
            for ts, line, metadata in stream.entries:
                if low < ts <= high:
                    self.lines_scanned += 1
                    produced = extractor.process(stream.labels, line, metadata)
                    if produced is not None:
                        samples.append((ts, _key(produced[1]), produced[0]))
        samples.sort(key=lambda s: s[0])
        function = _range_function(node)
        result: Result = defaultdict(dict)
        for t in times:
            # Loki: the window is (t - range, t]; the lower bound is not inclusive.
            start, end = t - log.offset_ns - log.range_ns, t - log.offset_ns
            window: dict[LabelKey, list[tuple[int, float]]] = defaultdict(list)
            for ts, key, value in samples:
                if start < ts <= end:
                    window[key].append((ts, value))
            for key in sorted(window):
                labels = dict(key)
                # Loki: errors are not allowed in metrics unless specifically requested.
                if "__error__" in labels and labels.get("__preserve_error__") != "true":
                    raise PipelineError(labels)
            for key, points in window.items():
                result[key][t] = function(points)
        return result

    def vector_agg(self, node: VectorAgg, times: list[int]) -> Result:
        inner = node.inner
        pushdown = {"bytes_over_time", "bytes_rate", "sum_over_time", "rate", "count_over_time"}
        if (
            node.op == "sum"
            and isinstance(inner, RangeAgg)
            and inner.grouping is None
            and inner.op in pushdown
        ):
            # Loki: `sum by (x)` is pushed into the range aggregation's extractor, which changes
            # the parser hints (see Hints) — hence evaluated here rather than generically.
            inner_result = self.range_agg(inner, times, node.grouping)
        else:
            inner_result = self.evaluate(inner, times)
        function = _VECTOR_FUNCTIONS[node.op]
        result: Result = defaultdict(dict)
        for t in times:
            groups: dict[LabelKey, list[float]] = defaultdict(list)
            for key, points in inner_result.items():
                if t in points:
                    labels = dict(key)
                    if node.grouping.without:
                        kept = {k: v for k, v in labels.items() if k not in node.grouping.labels}
                    else:
                        kept = {k: v for k, v in labels.items() if k in node.grouping.labels}
                    groups[_key(kept)].append(points[t])
            for key, values in groups.items():
                result[key][t] = function(values)
        return result


# =================================================================================================
# Ingestion: what Loki 3.x adds to pushed streams by default
# =================================================================================================

# Loki's default `discover_service_name` label list.
_SERVICE_NAME_LABELS = ("service", "app", "application", "app_name", "name", "app_kubernetes_io_name",
                        "container", "container_name", "k8s_container_name", "component",
                        "workload", "job", "k8s_job_name")  # fmt: skip
_LEVEL_FIELDS = ("level", "LEVEL", "Level", "severity", "SEVERITY", "Severity", "lvl", "LVL", "Lvl")
_LEVEL_WORDS = (("trace", "trace"), ("debug", "debug"), ("fatal", "fatal"), ("critical", "critical"),
                ("error", "error"), ("err", "error"), ("warning", "warn"), ("warn", "warn"),
                ("info", "info"))  # fmt: skip
_LEVEL_ALIASES = {"trace": "trace", "trc": "trace", "debug": "debug", "dbg": "debug",
                  "info": "info", "inf": "info", "warn": "warn", "warning": "warn", "wrn": "warn",
                  "error": "error", "err": "error", "eror": "error", "critical": "critical",
                  "crit": "critical", "fatal": "fatal"}  # fmt: skip


def _detect_level(line: str, stream: dict[str, str], metadata: dict[str, str]) -> str:
    """Loki's `discover_log_levels`: a level field if there is one, else a word in the line."""
    for source in (metadata, stream):
        for name in _LEVEL_FIELDS:
            if source.get(name):
                return _LEVEL_ALIASES.get(source[name].lower(), source[name])
    stripped = line.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = {}
        for name in _LEVEL_FIELDS:
            if isinstance(obj, dict) and isinstance(obj.get(name), str):
                found = _LEVEL_ALIASES.get(obj[name].lower())
                if found:
                    return found
    else:
        for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', line):
            if name in _LEVEL_FIELDS and _LEVEL_ALIASES.get(value.strip('"').lower()):
                return _LEVEL_ALIASES[value.strip('"').lower()]
    lower = line.lower()
    for word, level in _LEVEL_WORDS:
        at = lower.find(word)  # Loki checks the first occurrence only, as a whole word
        if at >= 0 and _word_edge(lower, at - 1) and _word_edge(lower, at + len(word)):
            return level
    return "unknown"


def _word_edge(text: str, pos: int) -> bool:
    return pos < 0 or pos >= len(text) or not (text[pos].isalnum() or text[pos] == "_")


# =================================================================================================
# The double
# =================================================================================================


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double saw it; header names are lower-case."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Fault:
    status: int | None
    body: str
    retry_after: str | None
    content_type: str
    delay_s: float


class LokiDouble:
    """A Loki on 127.0.0.1 that stores pushed streams and answers metric queries over them.

    Use as a context manager; ``url`` is its base URL. ``discover_service_name``,
    ``discover_log_levels`` and ``align_range_steps`` mirror Loki 3.x defaults (the recordings
    show ``service_name="unknown_service"``, ``detected_level`` and step-aligned range results).

    Limits, with Loki's defaults and messages (``limits_config``; recorded in
    ``tests/data/loki-plan-recordings``): ``max_query_series`` (500) refuses an instant result with
    more series; ``max_query_length`` (721h) refuses an instant query whose range is longer —
    except, with ``split_instant_queries`` (Loki's query frontend splits those by interval), the
    ``sum`` of a count/rate/bytes/sum_over_time aggregation, which a real Loki answers whole.
    ``lines_scanned`` counts the log lines the queries read; ``max_in_flight`` the most queries
    served at once (for benchmarks and concurrency tests).
    """

    def __init__(
        self,
        *,
        discover_service_name: bool = True,
        discover_log_levels: bool = True,
        align_range_steps: bool = True,
        max_query_series: int = 500,
        max_query_length_s: int = 721 * 3600,
        split_instant_queries: bool = True,
    ) -> None:
        self.discover_service_name = discover_service_name
        self.discover_log_levels = discover_log_levels
        self.align_range_steps = align_range_steps
        self.max_query_series = max_query_series
        self.max_query_length_s = max_query_length_s
        self.split_instant_queries = split_instant_queries
        self.lines_scanned = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._streams: dict[LabelKey, Stream] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # --- lifecycle ---

    def __enter__(self) -> LokiDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("LokiDoubleHandler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; later connections to ``url`` are refused (Loki down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # --- test controls ---

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        body: str | None = None,
        retry_after: float | str | None = None,
        content_type: str = TEXT_CONTENT_TYPE,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After`` if given)."""
        text = body if body is not None else f"injected failure: HTTP {status}"
        after = None if retry_after is None else str(retry_after)
        with self._lock:
            self._faults += [_Fault(status, text, after, content_type, 0.0) for _ in range(times)]

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests for ``seconds`` before answering them normally."""
        with self._lock:
            self._faults += [_Fault(None, "", None, "", seconds) for _ in range(times)]

    def push(self, streams: list[dict[str, Any]]) -> None:
        """Store streams in Loki's push format, as ``POST /loki/api/v1/push`` does."""
        with self._lock:
            for item in streams:
                labels = dict(item["stream"])
                if not labels:
                    raise QueryError("error at least one label pair is required per stream")
                for name in labels:
                    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                        raise QueryError(f"error parsing labels: invalid label name {name!r}")
                if self.discover_service_name and "service_name" not in labels:
                    found = next((labels[n] for n in _SERVICE_NAME_LABELS if labels.get(n)), None)
                    labels["service_name"] = found or "unknown_service"
                stream = self._streams.setdefault(_key(labels), Stream(labels))
                seen = {(ts, line) for ts, line, _ in stream.entries}
                for value in item["values"]:
                    ts, line = int(value[0]), str(value[1])
                    metadata = {
                        str(k): str(v) for k, v in (value[2] if len(value) > 2 else {}).items()
                    }
                    if self.discover_log_levels and "detected_level" not in metadata:
                        metadata["detected_level"] = _detect_level(line, labels, metadata)
                    if (ts, line) not in seen:  # Loki drops exact duplicates
                        stream.entries.append((ts, line, metadata))
                        seen.add((ts, line))
                stream.entries.sort(key=lambda e: e[0])

    # --- request handling (called from the HTTP handler) ---

    def handle(
        self, method: str, path: str, params: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        with self._lock:
            self._requests.append(RecordedRequest(method, path, dict(params), dict(headers), body))
            fault = self._faults.pop(0) if self._faults else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return self._handle(fault, method, path, params, body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle(
        self, fault: _Fault | None, method: str, path: str, params: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        if fault is not None:
            time.sleep(fault.delay_s)
            if fault.status is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return fault.status, fault.content_type, fault.body.encode(), extra
        try:
            if path == "/ready":
                return 200, TEXT_CONTENT_TYPE, b"ready\n", {}
            if path == "/loki/api/v1/push" and method == "POST":
                try:
                    payload = json.loads(body or b"{}")
                    streams = payload["streams"]
                except (ValueError, KeyError, TypeError):
                    raise QueryError("couldn't parse push request") from None
                try:
                    self.push(streams)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    raise QueryError(f"couldn't parse push request: {exc!r}") from None
                return 204, TEXT_CONTENT_TYPE, b"", {}
            if path == "/loki/api/v1/query" and method in ("GET", "POST"):
                return self._json(self._instant(params))
            if path == "/loki/api/v1/query_range" and method in ("GET", "POST"):
                return self._json(self._range(params))
        except QueryError as exc:
            return 400, TEXT_CONTENT_TYPE, exc.body.encode(), {}
        return 404, TEXT_CONTENT_TYPE, b"404 page not found\n", {}

    def _json(self, data: dict[str, Any]) -> tuple[int, str, bytes, dict[str, str]]:
        data["stats"] = {"summary": {"execTime": 0.0, "totalLinesProcessed": 0, "shards": 1}}
        body = json.dumps({"status": "success", "data": data}, separators=(",", ":"))
        return 200, JSON_CONTENT_TYPE, body.encode(), {}

    def _snapshot(self) -> Engine:
        with self._lock:
            return Engine(Stream(dict(s.labels), list(s.entries)) for s in self._streams.values())

    def _instant(self, params: dict[str, str]) -> dict[str, Any]:
        expr = Parser.parse(params.get("query", ""))
        if isinstance(expr, LogQuery):
            raise QueryError(
                "log queries are not supported as an instant query type, please change your "
                "query to a range query type"
            )
        at = _parse_time(params.get("time"), time.time_ns())
        self._check_length(expr)
        engine = self._snapshot()
        try:
            result = engine.evaluate(expr, [at])
        finally:
            with self._lock:
                self.lines_scanned += engine.lines_scanned
        if len(result) > self.max_query_series:
            # Loki: logqlmodel.NewSeriesLimitError, HTTP 400.
            raise QueryError(
                f"maximum number of series ({self.max_query_series}) reached for a single query; "
                "consider reducing query cardinality by adding more specific stream selectors, "
                "reducing the time range, or aggregating results with functions like sum(), "
                "count() or topk()"
            )
        vector = [
            {
                "metric": dict(key),
                "value": [_json_timestamp(at // 1_000_000), _format_value(points[at])],
            }
            for key, points in sorted(result.items())
            if at in points
        ]
        return {"resultType": "vector", "result": vector}

    def _range(self, params: dict[str, str]) -> dict[str, Any]:
        expr = Parser.parse(params.get("query", ""))
        if isinstance(expr, LogQuery):
            raise Unsupported("log (streams) queries")
        end = _parse_time(params.get("end"), time.time_ns())
        start = _parse_time(params.get("start"), end - 3600 * NS)
        if end < start:
            raise QueryError("end timestamp must not be before or equal to start time")
        step = _parse_step(params.get("step"), start, end)
        if (end - start) // step > 11_000:
            raise QueryError(
                "exceeded maximum resolution of 11,000 points per timeseries. Try increasing the "
                "value of the step parameter"
            )
        if self.align_range_steps:
            # Loki's query frontend aligns metric range queries to the step: start rounded down,
            # end rounded up (splitMetricByTime).
            start -= start % step
            end += -end % step
        times = list(range(start, end + 1, step))
        engine = self._snapshot()
        try:
            result = engine.evaluate(expr, times)
        finally:
            with self._lock:
                self.lines_scanned += engine.lines_scanned
        matrix = [
            {
                "metric": dict(key),
                "values": [
                    [_json_timestamp(t // 1_000_000), _format_value(points[t])]
                    for t in times
                    if t in points
                ],
            }
            for key, points in sorted(result.items())
        ]
        return {"resultType": "matrix", "result": matrix}


    def _check_length(self, expr: Any) -> None:
        """Loki's limits middleware: an instant query may not look back further than
        max_query_length, unless the frontend split it (see the class docstring)."""
        inner = expr.inner if isinstance(expr, VectorAgg) else expr
        if not isinstance(inner, RangeAgg) or not self.max_query_length_s:
            return
        split = (self.split_instant_queries and isinstance(expr, VectorAgg) and expr.op == "sum"
                 and inner.op in ("count_over_time", "rate", "bytes_over_time", "bytes_rate",
                                  "sum_over_time"))  # fmt: skip
        length_ns = inner.log.range_ns
        if not split and length_ns > self.max_query_length_s * NS:
            raise QueryError(
                f"the query time range exceeds the limit (query length: {_go_duration(length_ns)}, "
                f"limit: {_model_duration(self.max_query_length_s)})"
            )


def _go_duration(ns: int) -> str:
    """time.Duration.String() for whole seconds: 800h0m0s, 1h30m0s, 45m0s, 30s."""
    seconds = ns // NS
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _model_duration(seconds: int) -> str:
    """Prometheus model.Duration.String(): 721h → 30d1h, 14d → 2w (years and weeks only when
    they divide the rest exactly)."""
    parts, left = [], seconds * 1000
    for unit, size, exact in (("y", 365 * 86_400_000, True), ("w", 7 * 86_400_000, True),
                              ("d", 86_400_000, False), ("h", 3_600_000, False),
                              ("m", 60_000, False), ("s", 1000, False), ("ms", 1, False)):  # fmt: skip
        if exact and left % size:
            continue
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def _parse_time(value: str | None, default: int) -> int:
    """Loki's ParseTimestamp: float seconds, integer seconds (≤10 digits) or nanoseconds, RFC3339."""
    if not value:
        return default
    if "." in value:
        try:
            seconds = Decimal(value)
            return int((seconds * 1000).to_integral_value()) * 1_000_000
        except ArithmeticError:
            pass
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value) * NS if len(value) <= 10 else int(value)
    try:
        from datetime import datetime

        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"cannot parse {value!r} to a valid timestamp") from None
    return int(parsed.timestamp()) * NS + parsed.microsecond * 1000


def _parse_step(value: str | None, start: int, end: int) -> int:
    if not value:
        # Loki's default: a step that yields about 250 points, at least one second.
        return max(1, (end - start) // NS // 250) * NS
    try:
        step = int(Decimal(value) * NS)
    except (ArithmeticError, ValueError):
        try:
            step = _parse_any_duration_ns(value)
        except ValueError:
            raise QueryError(f"cannot parse {value!r} to a valid duration") from None
    if step <= 0:
        raise QueryError(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    return step


class _Handler(BaseHTTPRequestHandler):
    double: LokiDouble

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "POST" and "form-urlencoded" in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            status, content_type, payload, extra = self.double.handle(
                self.command, parts.path, params, headers, body
            )
        except Exception as exc:  # a bug in the double must show up in the test, not hang it
            status, content_type, extra = 500, TEXT_CONTENT_TYPE, {}
            payload = f"LokiDouble internal error: {exc!r}".encode()
        try:
            self.send_response(status)
            if payload or status != 204:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass
