"""One spelling per class, on both sides of the comparison: dataset labels and model predictions.

A golden set written by pandas has ``1.0`` where the model answers ``1``; a CSV has ``"1"``; JSON
lines have ``1``. All three are one class here, spelled ``"1"``: every label and every prediction
goes through :func:`canonical` (Arrow, vectorised) or :func:`canonical_value` (one Python value)
before it is compared or stored. The rules:

- numbers (and text that is a plain decimal number) are spelled as Python spells an ``int`` when
  they are whole and below 2**53 in magnitude (``1.0`` → ``1``, ``"007"`` → ``7``), else as the
  shortest round-trip float (``0.5``); bigger whole numbers keep their digits as written;
- booleans are ``true`` / ``false`` (JSON's spelling, whoever produced them);
- text is stripped of surrounding white space;
- no label at all: null, NaN, empty or blank text, and the spellings of "missing" that Python,
  pandas and JSON write into files — ``None``, ``nan``/``NaN``, ``null``/``NULL``, ``<NA>`` — are
  null. Such rows are not scored (a missing label is not a class).

``ClassNames`` maps class indices (a model's argmax, an integer prediction, a probability
column) to names (the ``class-names`` input).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlobs.errors import ConfigError

__all__ = ["MISSING_TEXT", "ClassNames", "canonical", "canonical_value", "index_keys"]

# Lower-case "none" is not here: it is a real class in many label sets ("no defect").
MISSING_TEXT = frozenset({"", "None", "nan", "NaN", "NAN", "null", "NULL", "Null", "<NA>"})
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_NUMBER_RE = re.compile(_NUMBER)
_EXACT = 2**53  # whole floats below this are exact integers


def canonical_value(value: Any) -> str | None:
    """One label or prediction (a JSON value) → its canonical text; None when it is missing."""
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING_TEXT:
            return None
        if _NUMBER_RE.match(text):
            return _number_text(text)
        return text
    return None  # lists and objects are not labels


def _float_text(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < _EXACT:
        return str(int(value))
    return repr(value)


def _number_text(text: str) -> str:
    try:
        as_int = int(text)
    except ValueError:
        return _float_text(float(text)) or text
    return str(as_int) if abs(as_int) < _EXACT else text.lstrip("+")


def canonical(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column of labels (any scalar Arrow type) → canonical text, missing values as null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_dictionary(kind):
        return canonical(array.dictionary_decode())
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(array, "true", "false")
    if pa.types.is_integer(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return _canonical_floats(pc.cast(array, pa.float64()))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _canonical_text(pc.cast(array, pa.string()))
    raise ConfigError(f"a label column of type {kind} cannot hold class labels: use text or numbers")


def _canonical_floats(array: pa.Array) -> pa.Array:
    finite = pc.is_finite(array)  # NaN and ±inf are no label
    array = pc.if_else(finite, array, pa.scalar(None, pa.float64()))
    whole = pc.and_(pc.equal(pc.floor(array), array), pc.less(pc.abs(array), float(_EXACT)))
    as_int = pc.cast(pc.if_else(whole, array, 0.0), pa.int64())
    # Arrow spells floats like Python's repr for ordinary values; whole ones become integers.
    return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(array, pa.string()))


def _canonical_text(array: pa.Array) -> pa.Array:
    text = pc.utf8_trim_whitespace(array)
    missing = pc.is_in(text, value_set=pa.array(sorted(MISSING_TEXT)))
    text = pc.if_else(missing, pa.scalar(None, pa.string()), text)
    numeric = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    if not pc.any(numeric).as_py():
        return text
    # Few distinct spellings in a label column: convert those in Python (exact for big integers).
    values = text.to_pylist()
    flags = numeric.to_pylist()
    cache: dict[str, str] = {}
    out = [(cache.setdefault(v, _number_text(v)) if f else v) for v, f in zip(values, flags, strict=True)]
    return pa.array(out, pa.string())


@dataclass(frozen=True)
class ClassNames:
    """``class-names``: index i of a distribution / an integer prediction is ``names[i]``."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, value: str | None, workdir: Path) -> ClassNames | None:
        """Comma-separated names, or a path (relative to ``workdir``) to a file with one per line."""
        if value is None or not value.strip():
            return None
        text = value.strip()
        if "," in text:
            names, where = [part.strip() for part in text.split(",")], "class-names"
        else:  # one name is no mapping: a single value is the path of a file, one name a line
            path = Path(text).expanduser()
            path = path if path.is_absolute() else workdir / path
            if not path.is_file():
                raise ConfigError(f"class-names: {text!r} is neither comma-separated names nor a "
                                  f"file (looked for {path})")
            lines = path.read_text(encoding="utf-8").splitlines()
            names, where = [line.strip() for line in lines if line.strip()], f"class-names file {text}"
        if not names or any(not n for n in names):
            raise ConfigError(f"{where}: empty class name in {text!r}")
        canonical_names = [canonical_value(n) for n in names]
        if any(n is None for n in canonical_names):
            raise ConfigError(f"{where}: {', '.join(repr(n) for n in names if canonical_value(n) is None)} "
                              "spells a missing value, not a class")
        seen: set[str] = set()
        dupes = [n for n in canonical_names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
        if dupes:
            raise ConfigError(f"{where}: {', '.join(map(repr, dupes))} listed twice")
        return cls(tuple(n for n in canonical_names if n is not None))

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str | None:
        return self.names[index] if 0 <= index < len(self.names) else None

    def keys_for(self, width: int) -> list[str]:
        """Keys of a distribution of ``width`` columns; ValueError when the widths differ."""
        if width != len(self.names):
            raise ValueError(f"the Bento answered {width} class probabilities but class-names has "
                             f"{len(self.names)} names")
        return list(self.names)

    def map_indices(self, array: pa.Array) -> pa.Array:
        """Canonical integer texts in range → names; everything else unchanged."""
        lookup = {str(i): n for i, n in enumerate(self.names)}
        values = array.to_pylist()
        return pa.array([lookup.get(v, v) if v is not None else None for v in values], pa.string())


def index_keys(width: int, names: ClassNames | None) -> list[str]:
    """Keys for a probability vector: the class names, else the column indices ``"0"…``."""
    return names.keys_for(width) if names is not None else [str(i) for i in range(width)]
