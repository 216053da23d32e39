"""The strings the renderers put in comments and reports: exact to the byte."""

from __future__ import annotations

import math

import pytest

from mlobs.stats.deltas import DeltaInterval
from mlobs.stats.format import format_delta, format_interval, format_number, format_p, format_signed
from mlobs.stats.intervals import Interval, wilson


def _delta(delta, low, high, p, test="McNemar exact", paired=True):
    return DeltaInterval("accuracy", 0.7, 0.7 - delta, delta, low, high, 0.95, p, p, 0.01,
                         paired, test, "", 480, 480, True)


def test_value_with_its_interval():
    assert format_interval(Interval(0.6982, 0.6551, 0.73849, 0.95, "Wilson")) == \
        "0.698 [0.655, 0.738]"
    assert format_interval(0.5, 0.25, 0.75, digits=2) == "0.50 [0.25, 0.75]"
    assert format_interval(0.1234) == "0.123"
    assert format_interval(math.nan, math.nan, math.nan) == "n/a"
    assert str(wilson(335, 480)) == "0.698 [0.655, 0.737]"


def test_delta_with_interval_p_value_and_method():
    assert format_delta(_delta(-0.0121, -0.0254, 0.0009, 0.0712)) == \
        "\u22120.012 [\u22120.025, +0.001], p=0.071 (McNemar, paired)"
    assert format_delta(_delta(0.02, 0.004, 0.036, 0.0004, "bootstrap", False)) == \
        "+0.020 [+0.004, +0.036], p<0.001 (bootstrap, unpaired)"
    assert format_delta(_delta(0.0, -0.0002, 0.0004, 1.0, "two-proportion z", False)) == \
        "±0.000 [±0.000, ±0.000], p=1 (Newcombe/z, unpaired)"


@pytest.mark.parametrize(("x", "text"), [(-0.0004, "0.000"), (-0.0006, "\u22120.001"),
                                         (math.inf, "∞"), (None, "n/a"), (1.0, "1.000")])
def test_numbers_never_show_minus_zero(x, text):
    assert format_number(x) == text


def test_signed_and_p():
    assert format_signed(-0.0004) == "±0.000" and format_signed(0.0125) == "+0.013"
    assert [format_p(p) for p in (0.07, 0.0712, 0.5, 0.049999, 0.00123, 0.0009, 1.0, None)] == [
        "p=0.07", "p=0.071", "p=0.5", "p=0.05", "p=0.0012", "p<0.001", "p=1", "p=n/a"]
