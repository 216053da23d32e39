"""The one place that builds LogQL.

Every value that ends up inside a query — label values from users, model versions, regexes — goes
through :func:`string_literal`, and every label or field name through
:func:`validate_label_name`, so no input can change the shape of a query.

Query shapes (see the functions for the why of each piece)::

    count_query      sum by (<by>) (count_over_time(<sel> | json <fields> | <filters> | __error__="" [<window>]))
    quantile_query   quantile_over_time(<q>, <sel> | json <fields> | <filters> | unwrap <f> | __error__="" [<window>]) by (<by>)
    unwrap_dropped   sum by (<by>) (count_over_time(<sel> | json <fields> | <filters> | __error__="" | <f>!="" | <f>!~"<float>" [<window>]))

``by ()`` (rather than no grouping) is deliberate: ``| json`` turns every field into a label, so an
ungrouped aggregation returns one series per label set, not one number for the service.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlobs.errors import ConfigError

__all__ = [
    "FLOAT64_MAX",
    "AnyOf",
    "LabelFilter",
    "NUMBER_REGEX",
    "ErrorMark",
    "UsableNumber",
    "Matcher",
    "Selector",
    "count_query",
    "format_duration",
    "parse_duration",
    "parse_go_float",
    "quantile_query",
    "string_literal",
    "unwrap_dropped_query",
    "usable_number",
    "validate_label_name",
]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Prometheus' model.ParseDuration, which Loki uses for `[range]`: units largest first, each at most
# once, integers only.
_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?"
)
_DURATION_UNITS_S = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)

# What Go's strconv.ParseFloat — the function behind `| unwrap` and numeric label filters —
# accepts: decimal with optional exponent, hexadecimal with a mandatory p exponent, underscores
# between digits (Go literal syntax), and Inf/Infinity (signed or not) and NaN (unsigned) in any
# case. Checked against Go itself: "1_000" is 1000, "-nan" and " 1" are errors. Values that overflow
# ("1e999") also fail to parse; no regular expression can say that, see parse_go_float.
_D = r"[0-9](?:_?[0-9])*"
_H = r"[0-9a-f](?:_?[0-9a-f])*"
NUMBER_REGEX = (
    rf"(?i:[+-]?(?:(?:{_D}(?:[.](?:{_D})?)?|[.]{_D})(?:e[+-]?{_D})?"
    rf"|0x(?:_?{_H}(?:[.](?:{_H})?)?|[.]{_H})p[+-]?{_D}"
    r"|inf(?:inity)?)|nan)"
)
_GO_FLOAT = re.compile(NUMBER_REGEX)

# The largest finite float64: `x <= FLOAT64_MAX` is false for +Inf and NaN.
FLOAT64_MAX = 1.7976931348623157e308


def parse_go_float(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)`` — the number, or None where Go returns an error
    (bad syntax, or a value out of float64's range)."""
    if not isinstance(text, str) or not _GO_FLOAT.fullmatch(text):
        return None
    lower = text.lower().lstrip("+")
    if lower in ("inf", "infinity", "nan") or lower in ("-inf", "-infinity"):
        return float(lower)
    digits = text.replace("_", "")
    try:
        if "x" in lower:
            sign = -1.0 if digits.startswith("-") else 1.0
            value = sign * float.fromhex(digits.lstrip("+-"))
        else:
            value = float(digits)
    except (OverflowError, ValueError):
        return None
    return None if math.isinf(value) else value


# Labels Loki sets itself; they are never JSON fields to extract.
_INTERNAL_LABELS = frozenset({"__error__", "__error_details__"})


def validate_label_name(name: str, *, what: str = "label name") -> str:
    """Return ``name`` if it is a valid Prometheus/Loki label name, else raise ConfigError."""
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}",
            hint="use letters, digits and underscores, not starting with a digit",
        )
    return name


def string_literal(value: str) -> str:
    """A double-quoted LogQL string literal that decodes back to exactly ``value``.

    Loki unquotes with Go's rules, so backslash, double quote and every control, format or
    otherwise invisible character are escaped; printable Unicode is kept as is.
    """
    if not isinstance(value, str):
        raise ConfigError(f"expected a string for a LogQL literal, got {type(value).__name__}")
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch).startswith(("C", "Z")) and ch != " ":
            # Control, format, private-use and unassigned characters, and separators other than
            # the plain space: invisible in a log or a PR comment, so always escaped.
            code = ord(ch)
            if 0xD800 <= code <= 0xDFFF:
                raise ConfigError("a LogQL string cannot hold a lone surrogate character")
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_duration(text: str) -> float:
    """Seconds in a Loki range duration such as ``30s``, ``5m``, ``1h30m`` or ``1d``.

    Raises ConfigError for anything Loki would reject in ``[...]`` and for a zero window.
    """
    if not isinstance(text, str) or not text:
        raise ConfigError(f"invalid duration {text!r}", hint="use e.g. 30s, 5m, 1h or 1h30m")
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        raise ConfigError(
            f"invalid duration {text!r}",
            hint="use whole numbers with units y, w, d, h, m, s, ms, largest first (e.g. 1h30m)",
        )
    seconds = sum(
        int(part) * unit
        for part, unit in zip(match.groups(), _DURATION_UNITS_S, strict=True)
        if part
    )
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} is zero", hint="a query window must be positive")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """The shortest Loki range duration for a whole number of seconds: 3600 → ``1h``, 5400 → ``1h30m``.

    Uses d, h, m and s only (Prometheus' y and w are exact multiples too, but read worse).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != int(seconds) \
            or seconds <= 0:
        raise ConfigError(f"a query window must be a positive whole number of seconds, got {seconds!r}")
    left, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


# --- stream selectors -----------------------------------------------------------------------------

_MATCH_OPS = ("=~", "!~", "!=", "=")


@dataclass(frozen=True)
class Matcher:
    """One ``name<op>"value"`` stream matcher."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        validate_label_name(self.name)
        if self.op not in _MATCH_OPS:
            raise ConfigError(f"invalid matcher operator {self.op!r} for label {self.name!r}")
        if not isinstance(self.value, str):
            raise ConfigError(f"the value for label {self.name!r} must be a string")
        if self.op in ("=~", "!~"):
            _check_regex(self.value, f"the regex for label {self.name!r}")

    def matches_empty(self) -> bool:
        """Whether an absent label (empty value) satisfies this matcher."""
        if self.op == "=":
            return self.value == ""
        if self.op == "!=":
            return self.value != ""
        found = re.fullmatch(self.value, "") is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{string_literal(self.value)}"


@dataclass(frozen=True)
class Selector:
    """A validated stream selector: ``{namespace="openfaas-fn", function_name="classifier"}``."""

    matchers: tuple[Matcher, ...]

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ConfigError(
                "the stream selector has no matchers",
                hint='name at least one label, e.g. {namespace="openfaas-fn"}',
            )
        # Loki refuses selectors that could match every stream (parse error otherwise).
        if all(m.op in ("!=", "!~") or m.matches_empty() for m in self.matchers):
            raise ConfigError(
                f"the stream selector {self} would match every stream",
                hint='include at least one = or =~ matcher that cannot match an empty value, e.g. app=~".+"',
            )

    @classmethod
    def of(cls, labels: dict[str, str]) -> Selector:
        """A selector of ``=`` matchers, in the mapping's order."""
        return cls(tuple(Matcher(name, "=", value) for name, value in labels.items()))

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse and validate a user-supplied selector; anything but matchers in braces is refused."""
        if not isinstance(text, str):
            raise ConfigError(f"the stream selector must be a string, got {type(text).__name__}")
        return cls(tuple(_SelectorParser(text).parse()))

    def label_names(self) -> frozenset[str]:
        return frozenset(m.name for m in self.matchers)

    def __str__(self) -> str:
        return "{" + ", ".join(str(m) for m in self.matchers) + "}"


class _SelectorParser:
    """A small hand parser: matchers only, so a pipe or a second selector is a clear error."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> ConfigError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        return ConfigError(
            f"invalid stream selector {self.text!r}: expected {expected} at position "
            f"{self.pos + 1}, found {found}",
            hint='write matchers only, e.g. {namespace="openfaas-fn", function_name="classifier"}',
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> list[Matcher]:
        self.skip_space()
        if not self.text.startswith("{", self.pos):
            raise self.fail("'{'")
        self.pos += 1
        matchers: list[Matcher] = []
        self.skip_space()
        if self.text.startswith("}", self.pos):
            self.pos += 1
        else:
            while True:
                matchers.append(self.matcher())
                self.skip_space()
                if self.text.startswith(",", self.pos):
                    self.pos += 1
                    continue
                if self.text.startswith("}", self.pos):
                    self.pos += 1
                    break
                raise self.fail("',' or '}'")
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail("the end of the selector (pipelines and other text are not allowed)")
        return matchers

    def matcher(self) -> Matcher:
        self.skip_space()
        name = _LABEL_NAME.match(self.text, self.pos)
        if name is None:
            raise self.fail("a label name")
        self.pos = name.end()
        self.skip_space()
        for op in _MATCH_OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                break
        else:
            raise self.fail("one of = != =~ !~")
        self.skip_space()
        return Matcher(name.group(), op, self.string())

    def string(self) -> str:
        if self.text.startswith("`", self.pos):
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.fail("a closing '`'")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        if not self.text.startswith('"', self.pos):
            raise self.fail("a quoted string")
        start = self.pos
        self.pos += 1
        raw = bytearray()
        while True:
            if self.pos >= len(self.text):
                self.pos = start
                raise self.fail("a closing '\"' for the string starting here")
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                break
            if ch == "\n":
                raise self.fail("an escaped newline (\\n) inside the string")
            if ch == "\\":
                raw += self.escape()
            else:
                raw += ch.encode()
                self.pos += 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            self.pos = start
            raise self.fail("a string whose escapes form valid UTF-8") from None

    def escape(self) -> bytes:
        # Go's interpreted-string escapes, as Loki's lexer (strutil.Unquote) applies them.
        simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                  "\\": "\\", '"': '"'}  # fmt: skip
        kind = self.text[self.pos + 1 : self.pos + 2]
        if kind in simple:
            self.pos += 2
            return simple[kind].encode()
        for letter, width in (("x", 2), ("u", 4), ("U", 8)):
            if kind == letter:
                digits = self.text[self.pos + 2 : self.pos + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.fail(f"{width} hex digits after \\{letter}")
                self.pos += 2 + width
                code = int(digits, 16)
                if letter == "x":
                    return bytes([code])
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise self.fail("a valid Unicode code point")
                return chr(code).encode()
        digits = self.text[self.pos + 1 : self.pos + 4]
        if len(digits) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) <= 255:
            self.pos += 4
            return bytes([int(digits, 8)])
        raise self.fail("a valid escape sequence")


def _check_regex(pattern: str, what: str) -> None:
    # Loki uses RE2; Python's engine accepts nearly the same syntax for the patterns people write,
    # so compiling here catches typos before they reach Loki as a 400.
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what} {pattern!r} is not a valid regular expression: {exc}") from None


# --- label filters ---------------------------------------------------------------------------------

_STRING_OPS = frozenset({"=", "!=", "=~", "!~"})
_NUMERIC_OPS = frozenset({"=", "!=", ">", ">=", "<", "<="})


@dataclass(frozen=True)
class LabelFilter:
    """A label filter on a JSON field: ``status_code >= 500`` or ``model_version="v1.2.1"``.

    A number (int/float) is compared numerically and rendered bare; a string is compared as a
    string and rendered as an escaped literal. ``>``/``>=``/``<``/``<=`` need a number.
    """

    field: str
    op: str
    value: str | int | float

    def __post_init__(self) -> None:
        validate_label_name(self.field, what="field name")
        if isinstance(self.value, bool) or not isinstance(self.value, str | int | float):
            raise ConfigError(
                f"the value compared with {self.field!r} must be a string or a number, "
                f"got {type(self.value).__name__}"
            )
        if isinstance(self.value, str):
            if self.op not in _STRING_OPS:
                raise ConfigError(
                    f"{self.field} {self.op} {self.value!r}: {self.op} needs a number",
                    hint="compare strings with =, !=, =~ or !~",
                )
            if self.op in ("=~", "!~"):
                _check_regex(self.value, f"the regex for field {self.field!r}")
        else:
            if self.op not in _NUMERIC_OPS:
                raise ConfigError(
                    f"{self.field} {self.op} {self.value!r}: {self.op} needs a string"
                )
            if not math.isfinite(self.value):
                raise ConfigError(
                    f"{self.field} {self.op} {self.value!r}: the number must be finite"
                )

    def __str__(self) -> str:
        if isinstance(self.value, str):
            return f"{self.field}{self.op}{string_literal(self.value)}"
        return f"{self.field} {self.op} {_number(self.value)}"


def _number(value: int | float) -> str:
    # repr gives the shortest round-trip form; Loki's lexer reads exponents ("1e-07") too.
    return str(value) if isinstance(value, int) else repr(float(value))


@dataclass(frozen=True)
class AnyOf:
    """Label filters joined with ``or`` in one stage: ``model_version="v2" or model_version="v1"``."""

    filters: tuple[LabelFilter, ...]

    def __post_init__(self) -> None:
        if not self.filters or not all(isinstance(f, LabelFilter) for f in self.filters):
            raise ConfigError("AnyOf needs at least one LabelFilter")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.field for f in self.filters))

    def __str__(self) -> str:
        return " or ".join(map(str, self.filters))


# A latency Loki can both compare as bytes and read as a float: a plain decimal, no sign, no
# exponent, no spaces (see UsableNumber). Python's regex, as Go's: ASCII digits only.
USABLE_NUMBER_REGEX = r"[0-9]+(?:[.][0-9]*)?|[.][0-9]+"
_USABLE = re.compile(USABLE_NUMBER_REGEX)
_UINT64_LIMIT = 2.0**64  # go-humanize's ParseBytes refuses values ≥ MaxUint64 ("too large")


@dataclass(frozen=True)
class UsableNumber:
    """Two label-filter stages that keep every line and mark ``LabelFilterErr`` on those whose
    ``field`` is not a usable number: ``f < 1KB or f >= 1KB | f == 0 or f != 0``.

    Both comparisons are true for any value they can read, so they never drop a line; they only
    fail to read some. The bytes one (go-humanize's ParseBytes) cannot read a sign, an exponent,
    NaN, Inf, letters or an empty value; the number one (Go's ParseFloat) cannot read the commas,
    spaces and size units ParseBytes tolerates. What both read is a plain decimal ≥ 0 below 2^64
    — ``12``, ``12.5``, ``.5`` — which is what :func:`usable_number` accepts. A query then either
    drops the marked lines (``__error__=""``) or counts them apart (:class:`ErrorMark`).
    Label filters cost next to nothing per line (measured against Loki 3.7, bench/RESULTS.md). The
    bytes literal is ``1KB``, not ``0B``: Loki's query frontend re-renders bytes literals with
    go-humanize ("0 B" → ``0B``, which its own lexer then reads as a binary number and refuses).
    """

    field: str

    def __post_init__(self) -> None:
        validate_label_name(self.field, what="field name")

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def __str__(self) -> str:
        f = self.field
        return f"{f} < 1KB or {f} >= 1KB | {f} == 0 or {f} != 0"


def usable_number(value: str | None) -> float | None:
    """The value as a quantile uses it, or None where :class:`UsableNumber` marks the line."""
    if not value or not _USABLE.fullmatch(value):
        return None
    number = float(value)
    return number if number < _UINT64_LIMIT else None


@dataclass(frozen=True)
class ErrorMark:
    """``label_format <label>="{{.__error__}}" | drop __error__, __error_details__``: the line's
    pipeline error (``LabelFilterErr`` from :class:`UsableNumber`, ``JSONParserErr`` for a line
    that is not JSON, or none) becomes an ordinary label a count can group by, and the error
    itself is dropped so the aggregation accepts the line (Loki refuses errors in metrics)."""

    label: str

    def __post_init__(self) -> None:
        validate_label_name(self.label)

    def __str__(self) -> str:
        return f"label_format {self.label}={string_literal('{{.__error__}}')} | drop __error__, __error_details__"


# --- query builders --------------------------------------------------------------------------------


def count_query(
    selector: Selector | str,
    window: str,
    filters: Iterable[LabelFilter | AnyOf | UsableNumber] = (),
    by: Iterable[str] = (),
    json_fields: Iterable[str] | None = None,
    offset: str | None = None,
    mark: ErrorMark | None = None,
) -> str:
    """Count JSON log lines matching ``filters`` in ``window``, one series per ``by`` group.

    The ``| __error__=""`` guard comes last, after the filters: it drops lines that are not JSON
    (JSONParserErr) and lines where a numeric filter met a non-numeric value (LabelFilterErr —
    which ``| json f="f"`` causes for every line that lacks ``f``, since the parser then sets it to
    ""). Placed before the filters, the second kind would fail the whole query with HTTP 400.
    With a ``mark`` the errors are kept and counted apart instead (group ``by`` its label).
    ``offset`` shifts the window back (a sub-window of a longer one).
    """
    sel, filt, groups = _common(selector, filters, by)
    window = _window(window)
    if mark is not None and not isinstance(mark, ErrorMark):
        raise ConfigError("mark must be an ErrorMark")
    derived = {mark.label} if mark is not None else set()
    fields = _json_fields(sel, json_fields, _filter_fields(filt),
                          [g for g in groups if g not in derived])
    guard = str(mark) if mark is not None else '__error__=""'
    pipeline = _pipeline(sel, fields, [*map(str, filt), guard])
    return f"sum by ({', '.join(groups)}) (count_over_time({pipeline} [{window}]{_offset(offset)}))"


def quantile_query(
    selector: Selector | str,
    q: float,
    field: str,
    window: str,
    filters: Iterable[LabelFilter | AnyOf] = (),
    by: Iterable[str] = (),
    json_fields: Iterable[str] | None = None,
) -> str:
    """The ``q`` quantile of the numeric JSON field ``field`` over ``window``, per ``by`` group.

    Lines where ``field`` is missing or null yield no sample (Loki skips them); lines where it is
    not a number are dropped by the ``__error__=""`` guard after the unwrap (which also drops the
    lines a filter could not read, e.g. :class:`UsableNumber`) — count those with
    :func:`unwrap_dropped_query` or a count with an :class:`ErrorMark`, so a report can say how
    many were ignored.
    """
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
        raise ConfigError(f"quantile {q!r} must be a number between 0 and 1")
    sel, filt, groups = _common(selector, filters, by)
    field = validate_label_name(field, what="field name")
    window = _window(window)
    fields = _json_fields(sel, json_fields, [field, *_filter_fields(filt)], groups)
    stages = [*map(str, filt), f"unwrap {field}", '__error__=""']
    pipeline = _pipeline(sel, fields, stages)
    return f"quantile_over_time({_number(q)}, {pipeline} [{window}]) by ({', '.join(groups)})"


def unwrap_dropped_query(
    selector: Selector | str,
    field: str,
    window: str,
    filters: Iterable[LabelFilter] = (),
    by: Iterable[str] = (),
    json_fields: Iterable[str] | None = None,
) -> str:
    """Count lines whose ``field`` is present but not a number — those a quantile query drops.

    Loki rejects ``count_over_time`` with ``unwrap`` ("invalid aggregation count_over_time with
    unwrap"), so the check is a label filter instead: ``<field>!=""`` (present: null and missing
    both read as empty) and ``<field>!~"<float>"`` where the regex spells what Go's
    strconv.ParseFloat — the function behind ``unwrap`` — accepts.
    """
    sel, filt, groups = _common(selector, filters, by)
    field = validate_label_name(field, what="field name")
    window = _window(window)
    fields = _json_fields(sel, json_fields, [field, *_filter_fields(filt)], groups)
    stages = [
        *map(str, filt),
        '__error__=""',
        f'{field}!=""',
        f"{field}!~{string_literal(NUMBER_REGEX)}",
    ]
    pipeline = _pipeline(sel, fields, stages)
    return f"sum by ({', '.join(groups)}) (count_over_time({pipeline} [{window}]))"


def _common(
    selector: Selector | str, filters: Iterable[LabelFilter | AnyOf | UsableNumber], by: Iterable[str]
) -> tuple[Selector, list[LabelFilter | AnyOf | UsableNumber], list[str]]:
    sel = selector if isinstance(selector, Selector) else Selector.parse(selector)
    filt = list(filters)
    for item in filt:
        if not isinstance(item, LabelFilter | AnyOf | UsableNumber):
            raise ConfigError(f"expected a LabelFilter, got {type(item).__name__}")
    if isinstance(by, str):
        raise ConfigError(f"'by' must be a list of label names, not the string {by!r}")
    groups = [validate_label_name(name, what="grouping label") for name in by]
    return sel, filt, list(dict.fromkeys(groups))


def _filter_fields(filters: Iterable[LabelFilter | AnyOf | UsableNumber]) -> list[str]:
    return [name for f in filters for name in (f.fields if isinstance(f, AnyOf | UsableNumber) else (f.field,))]


def _offset(offset: str | None) -> str:
    if offset is None:
        return ""
    parse_duration(offset)
    return f" offset {offset}"


def _window(window: str) -> str:
    parse_duration(window)
    return window


def _json_fields(
    selector: Selector,
    explicit: Iterable[str] | None,
    needed: Sequence[str],
    groups: Sequence[str],
) -> list[str]:
    """The JSON fields to extract, in a stable order.

    By default: the fields the filters and the unwrap read, plus grouping labels that are not
    stream labels named in the selector. An explicit list replaces that default, except that the
    unwrap field and the filtered fields are always kept — without them the query means nothing.
    """
    if explicit is None:
        wanted = [*needed, *groups]
    else:
        if isinstance(explicit, str):
            raise ConfigError(f"json_fields must be a list of field names, not {explicit!r}")
        wanted = [*needed, *explicit]
    stream_labels = selector.label_names()
    fields: list[str] = []
    for name in wanted:
        validate_label_name(name, what="field name")
        if name in _INTERNAL_LABELS or name in fields:
            continue
        if explicit is None and name in stream_labels and name in groups and name not in needed:
            continue
        fields.append(name)
    return fields


def _pipeline(selector: Selector, fields: Sequence[str], stages: Sequence[str]) -> str:
    # `| json a="a"` extracts only what the query reads; plain `| json` (no field needed) still
    # parses every line, so the __error__ guard can drop the ones that are not JSON.
    parser = (
        "json " + ", ".join(f"{name}={string_literal(name)}" for name in fields)
        if fields
        else "json"
    )
    return " | ".join([str(selector), parser, *stages])
