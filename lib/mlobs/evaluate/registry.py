"""The headline metrics of an evaluation: one entry each, and every surface follows from here.

An entry says what a metric is called (``name``: the key in report documents, results and
``max-regression``; ``label``: for people), which way is better, how it is shown (digits, as a
percentage or not), how its confidence interval is computed, and how it is computed from a run's
:class:`~mlobs.evaluate.metrics.Metrics`. The evaluate comment and check run, the regression gates,
publish-report's comment, the report pages (the Hugo templates iterate over what
:func:`page_metrics` puts in each page), the index's history chart, the ``max-regression`` help
and its description in ``action.yml`` (written by ``scripts/readme_inputs.py``) all read it.

Adding a headline metric is one :func:`register` call below. Its ``value`` function gets the
run's ``Metrics`` — counts, per-class precision/recall/F1, the confusion matrix and reliability
bins — so most metrics need no new aggregate.

This module imports nothing heavy: the CLI reads it to write ``mlobs evaluate --help``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlobs.evaluate.metrics import Metrics

# How a metric's confidence interval is computed (the statistics live in mlobs.stats):
# "wilson" — a proportion of samples: a Wilson score interval; "bootstrap" — a percentile
# bootstrap over the run's rows. None: the metric is shown without an interval.
INTERVALS = ("wilson", "bootstrap")

# Lower-case: Hugo lower-cases the keys of maps it reads (a report document's headline is one),
# so a name with a capital could not be looked up in a template.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_RESERVED = {"n", "errors"}  # the other keys of a report document's headline

# Per-class metrics a gate may name as ``<metric>[<class>]``, and whether higher is better.
CLASS_METRICS = {"f1": True}


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    value: Callable[[Metrics], float | None]
    digits: int = 3
    percent: bool = False
    interval: str | None = None
    index_column: bool = False  # a column of the report site's index table
    history_line: bool = False  # a line of the index's history chart (the chart spans 0 to 1)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name in _RESERVED or self.name in CLASS_METRICS:
            raise ValueError(f"metric name {self.name!r}: use 1–40 lower-case letters, digits and "
                             f"'_', starting with a letter, not one of {sorted(_RESERVED | set(CLASS_METRICS))}")
        if not self.label.strip():
            raise ValueError(f"metric {self.name!r} needs a label")
        if not 0 <= self.digits <= 6:
            raise ValueError(f"metric {self.name!r}: digits must be 0–6, got {self.digits}")
        if self.interval is not None and self.interval not in INTERVALS:
            raise ValueError(f"metric {self.name!r}: interval must be one of {INTERVALS} or None, "
                             f"got {self.interval!r}")

    def of(self, metrics: Metrics) -> float | None:
        """The metric of a run; None when it is undefined (no sample, no confidence, NaN)."""
        value = self.value(metrics)
        return None if value is None or math.isnan(value) else float(value)

    def format(self, value: float | None) -> str:
        """``0.894``, or ``89.4%`` for a percentage; ``—`` when there is no value."""
        if value is None or math.isnan(value):
            return "—"
        return f"{value * 100:.{self.digits}f}%" if self.percent else f"{value:.{self.digits}f}"

    def format_change(self, change: float) -> str:
        """A signed change: ``+0.011``, or ``+1.1 pp`` (percentage points) for a percentage."""
        return f"{change * 100:+.{self.digits}f} pp" if self.percent else f"{change:+.{self.digits}f}"

    def page(self) -> dict:
        """What the report pages read (no callables: it goes into a page's front matter)."""
        return {"name": self.name, "label": self.label, "higher_is_better": self.higher_is_better,
                "digits": self.digits, "percent": self.percent, "interval": self.interval,
                "index_column": self.index_column, "history_line": self.history_line}


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in _METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    del _METRICS[name]


def metrics() -> tuple[Metric, ...]:
    """The headline metrics, in the order every surface shows them."""
    return tuple(_METRICS.values())


def names() -> tuple[str, ...]:
    return tuple(_METRICS)


def get(name: str) -> Metric | None:
    return _METRICS.get(name)


def primary() -> Metric:
    """The metric in the evaluate comment's title: the first one."""
    return next(iter(_METRICS.values()))


def higher_is_better(name: str) -> bool:
    """For a headline metric or a per-class one (``f1[<class>]``, or plain ``f1``)."""
    metric = _METRICS.get(name)
    if metric is not None:
        return metric.higher_is_better
    return CLASS_METRICS.get(name.split("[", 1)[0], True)


def page_metrics() -> list[dict]:
    return [m.page() for m in _METRICS.values()]


def gate_help(markdown: bool = False) -> str:
    """The ``max-regression`` help: for ``--help`` (plain) or action.yml and the README (Markdown)."""
    def code(text: str) -> str:
        return f"`{text}`" if markdown else text

    first, second = (list(_METRICS) * 2)[:2]  # the examples: the first two metrics
    known = [code(m.name) + ("" if m.higher_is_better else " (lower is better)") for m in _METRICS.values()]
    known += [code(f"{name}[<class>]") for name in CLASS_METRICS]
    quote = "`" if markdown else "'"
    return (f"Gates vs the baseline: absolute {quote}{first}=0.01{quote} or relative "
            f"{quote}{second}=2%{quote}, on {', '.join(known[:-1])} or {known[-1]}.")


def markdown_table() -> str:
    """The README's table of headline metrics."""
    rows = ["| metric | label | better | shown as | interval |", "|---|---|---|---|---|"]
    for m in _METRICS.values():
        interval = f"`{m.interval}`" if m.interval else "—"
        rows.append(f"| `{m.name}` | {m.label} | {'higher' if m.higher_is_better else 'lower'} | "
                    f"{m.format(0.89412)} | {interval} |")
    return "\n".join(rows)


# -- the headline metrics ------------------------------------------------------------------------

register(Metric("accuracy", "accuracy", True, attrgetter("accuracy"), interval="wilson",
                index_column=True, history_line=True))
register(Metric("macro_f1", "macro F1", True, attrgetter("macro_f1"), interval="bootstrap",
                index_column=True, history_line=True))
register(Metric("weighted_f1", "weighted F1", True, attrgetter("weighted_f1"), interval="bootstrap"))
register(Metric("ece", "ECE", False, attrgetter("ece"), interval="bootstrap", index_column=True))
register(Metric("error_rate", "error rate", False, attrgetter("error_rate"), interval="wilson"))
