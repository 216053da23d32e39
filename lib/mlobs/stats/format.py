"""Text for a value with its interval, and for a delta with its interval and p-value.

Deterministic to the byte (plain ``format`` on floats, fixed digits): the renderers put these
strings in comments and reports that must not change when nothing changed.

- ``format_interval``: ``0.698 [0.655, 0.738]``
- ``format_delta``: ``−0.012 [−0.025, +0.001], p=0.07 (McNemar, paired)``

Negative numbers use the minus sign U+2212; deltas always carry a sign. A value that rounds to
zero is written without a sign in intervals and as ``±0.000`` in deltas, so ``−0.000`` never
appears. NaN and missing values are ``n/a``.
"""

from __future__ import annotations

import math
from typing import Any

MINUS = "\u2212"
NOT_AVAILABLE = "n/a"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_number(x: float | None, digits: int = 3) -> str:
    """``0.698``, ``−0.012``; infinities as ``∞``/``−∞``."""
    if _missing(x):
        return NOT_AVAILABLE
    if math.isinf(x):
        return "∞" if x > 0 else f"{MINUS}∞"
    text = f"{x:.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", MINUS)


def format_signed(x: float | None, digits: int = 3) -> str:
    """``+0.001``, ``−0.012``, ``±0.000``."""
    if _missing(x):
        return NOT_AVAILABLE
    text = format_number(x, digits)
    if text.startswith(MINUS):
        return text
    if text != "∞" and float(text) == 0:
        return f"±{text}"
    return f"+{text}"


def format_interval(value: Any, low: float | None = None, high: float | None = None,
                    digits: int = 3) -> str:
    """``0.698 [0.655, 0.738]`` — from an Interval (or anything with value/low/high), or from
    three numbers. Without bounds, just the value."""
    if hasattr(value, "low") and hasattr(value, "high"):
        value, low, high = value.value, value.low, value.high
    head = format_number(value, digits)
    if _missing(low) and _missing(high):
        return head
    return f"{head} [{format_number(low, digits)}, {format_number(high, digits)}]"


def format_p(p: float | None) -> str:
    """``p=0.07``, ``p=0.0012``, ``p<0.001``, ``p=1``: two significant digits."""
    if _missing(p):
        return f"p={NOT_AVAILABLE}"
    if p < 0.001:
        return "p<0.001"
    return f"p={float(f'{p:.2g}'):g}" if p < 1 else "p=1"


def format_delta(delta: Any, digits: int = 3) -> str:
    """``−0.012 [−0.025, +0.001], p=0.07 (McNemar, paired)`` from a DeltaInterval."""
    text = format_signed(delta.delta, digits)
    if not (_missing(delta.low) and _missing(delta.high)):
        text += f" [{format_signed(delta.low, digits)}, {format_signed(delta.high, digits)}]"
    return f"{text}, {format_p(delta.p_value)} ({delta.label})"
