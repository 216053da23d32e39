"""Which runs may become history, and what their failed samples were.

A run is committed only if it is a measurement of the model: not when every sample failed, and
not when more than `max-error-rate` of them did (the lake refuses the first on its own; this
module adds the second as the commit's admission check, see ``mlobs.lake.runs.admit``). Either
way nothing reaches the table, so the run is neither a baseline nor "already committed" when it
is retried after the Bento is fixed.

Failed samples are grouped into *kinds*: error texts that differ only in numbers, ids or quoted
values ("unreadable prediction [0.74, 0.25]", "… [0.12, 0.88]") are one kind, shown with a count
and the first text seen. Counting streams: each batch's distinct error texts are counted in Arrow
and only those distinct texts are normalised, and at most ``MAX_KINDS`` kinds are kept.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlobs.errors import ConfigError
from mlobs.lake.runs import RunCounts, RunRefused

if TYPE_CHECKING:
    import pyarrow as pa

# Why 5 %: failed samples count as wrong answers, so a run's accuracy can be understated by up to
# its error rate. At 5 % that bias is of the order of the sampling noise of accuracy on the golden
# sets people keep in a repository (95 % interval at accuracy 0.9: ±5.9 points on 100 rows, ±2.6
# on 500): the numbers still describe the model. Far above it, failures of the serving path, not
# the model, decide what the gates see. Transient failures (429/5xx, timeouts) are retried before
# a sample counts as failed, so what remains is systematic: a bug worth a red check.
DEFAULT_MAX_ERROR_RATE = 0.05
MAX_KINDS = 1000  # distinct kinds kept while counting; the rest count as "other kinds"
TOP_KINDS = 10  # kinds shown in the comment and the results file
MAX_KIND_CHARS = 300
OTHER_KINDS = "(other error kinds)"

_HTTP_STATUS = r"\bHTTP \d{3}\b"  # a status code is part of the kind: 500 and 503 differ
_WITH_DIGIT = r"[A-Za-z0-9_.+:/-]*\d[A-Za-z0-9_.+:/-]*"  # numbers, ids, uuids, versions, hosts
_TOKENS = re.compile(f"{_HTTP_STATUS}|{_WITH_DIGIT}")
# Quoted values vary per sample; a quoted JSON / Python key (followed by ':') is structure. Keys
# are matched too (and kept), so a key's closing quote never opens a value; a quote inside a word
# is an apostrophe ("can't"), not a quote.
_QUOTED = re.compile(r"""(?<!\w)(?P<q>["'])(?:(?!(?P=q))[^\\]|\\.)*(?P=q)(?!\w)(?P<key>\s*:)?""")
_RUN_OF_VALUES = re.compile(r"(?:#|'…'|\"…\")(?:\s*,\s*(?:#|'…'|\"…\"))+")


@functools.lru_cache(maxsize=8192)
def kind_of(message: str) -> str:
    """The kind of an error text: numbers, ids and quoted values replaced by placeholders."""
    text = " ".join(message.split())
    text = _QUOTED.sub(lambda m: m[0] if m["key"] else f"{m['q']}…{m['q']}", text)
    text = _TOKENS.sub(lambda m: m[0] if m[0].startswith("HTTP ") else "#", text)
    text = _RUN_OF_VALUES.sub(lambda m: m[0].split(",")[0].strip() + ", …", text)
    return text[:MAX_KIND_CHARS]


@dataclass(frozen=True)
class ErrorKind:
    count: int
    kind: str
    example: str  # the first error text of this kind, as the Bento or client said it


@dataclass
class ErrorSummary:
    """A run's failed samples by kind: the largest kinds, and what the rest add up to."""

    rows: int
    errors: int
    kinds: list[ErrorKind] = field(default_factory=list)
    more_kinds: int = 0  # kinds not listed (all kinds beyond MAX_KINDS count as one)
    more_errors: int = 0  # failed samples in the kinds not listed

    @property
    def rate(self) -> float:
        return self.errors / self.rows if self.rows else 0.0

    def lines(self) -> list[str]:
        """``"300 × unreadable prediction [0.74, 0.25]"``, largest kind first."""
        out = [f"{k.count} × {k.example}" for k in self.kinds]
        if self.more_kinds:
            out.append(f"{self.more_errors} × {self.more_kinds} other kind(s)")
        return out


class ErrorTally:
    """Counts rows, failed rows and error kinds of a run's sample batches as they stream past."""

    def __init__(self, max_kinds: int = MAX_KINDS) -> None:
        self.rows = 0
        self.errors = 0
        self._max_kinds = max_kinds
        self._counts: dict[str, int] = {}
        self._examples: dict[str, str] = {}

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        error = batch.column("error")
        failed = len(error) - error.null_count
        if not failed:
            return
        self.errors += failed
        for entry in pc.value_counts(pc.drop_null(error)).to_pylist():
            self._count(entry["values"], entry["counts"])

    def add_messages(self, messages: Iterable[str]) -> None:
        """Count error texts one by one (for tests and callers without Arrow batches)."""
        for message in messages:
            self.rows += 1
            self.errors += 1
            self._count(message, 1)

    def _count(self, message: str, n: int) -> None:
        kind = kind_of(message)
        if kind not in self._counts and len(self._counts) >= self._max_kinds:
            kind = OTHER_KINDS
        self._counts[kind] = self._counts.get(kind, 0) + n
        self._examples.setdefault(kind, message)

    def summary(self, top: int = TOP_KINDS) -> ErrorSummary:
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        listed = [(k, n) for k, n in ranked if k != OTHER_KINDS][:top]
        rest = [(k, n) for k, n in ranked if (k, n) not in listed]
        return ErrorSummary(
            rows=self.rows, errors=self.errors,
            kinds=[ErrorKind(n, k, self._examples[k]) for k, n in listed],
            more_kinds=len(rest), more_errors=sum(n for _, n in rest),
        )


def tally_run(engine, info) -> ErrorSummary:
    """The error kinds of a committed run, read back from its `error` column."""
    tally = ErrorTally()
    if info.errors == 0:  # recorded at commit: nothing to read
        tally.rows = info.rows
        return tally.summary()
    for batch in engine.iter_run(info, columns=["error"]):
        tally.add(batch)
    return tally.summary()


# -- the admission check --------------------------------------------------------------------------


class UntrustedRun(RunRefused):
    """More than `max-error-rate` of the run's samples failed; nothing was committed."""


def parse_max_error_rate(value: object) -> float:
    """`max-error-rate`: a fraction (``0.05``) or a percentage (``5%``) between 0 and 1."""
    text = str(value if value is not None else "").strip()
    if not text:
        return DEFAULT_MAX_ERROR_RATE
    percent = text.endswith("%")
    try:
        rate = float(text.rstrip("%").strip()) / (100 if percent else 1)
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 1:  # NaN fails too
        raise ConfigError(
            f"max-error-rate must be a fraction between 0 and 1 (e.g. 0.05) or a percentage "
            f"(e.g. 5%), got {text!r}"
        )
    return rate


class TrustGate:
    """Watches a run's batches on their way to the lake and admits the run, or refuses it."""

    def __init__(self, max_error_rate: float = DEFAULT_MAX_ERROR_RATE) -> None:
        self.max_error_rate = max_error_rate
        self.tally = ErrorTally()

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            self.tally.add(batch)
            yield batch

    def accept(self, counts: RunCounts) -> None:
        """The lake's admission check (``write_run(accept=…)``)."""
        if counts.rows and counts.errors / counts.rows > self.max_error_rate:
            raise UntrustedRun(
                f"{counts.errors} of {counts.rows} samples failed ({percent(counts.errors / counts.rows)}, "
                f"more than max-error-rate {percent(self.max_error_rate)}): the run was not committed"
            )

    def summary(self) -> ErrorSummary:
        return self.tally.summary()


def percent(value: float) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} %"
