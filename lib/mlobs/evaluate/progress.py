"""Progress of an evaluation: a bar on a terminal, periodic plain lines in CI logs.

CI logs are not terminals: a redrawn bar would become thousands of lines there. So without a
TTY (or in CI: ``ci``, which the CLI sets from ``CI``/``GITHUB_ACTIONS``) a line is logged at every 10 % step or every 10 s,
whichever comes first, plus a final one:
``evaluated 3,200/10,000 samples (32%), 2,950/s, 3 errors``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "format_line"]

log = logging.getLogger("mlobs.evaluate")


def format_line(done: int, total: int | None, rate: float, errors: int) -> str:
    """``evaluated 3,200/10,000 samples (32%), 2,950/s, 3 errors`` (total unknown: no %)."""
    if total:
        head = f"evaluated {done:,}/{total:,} samples ({100 * done // total}%)"
    else:
        head = f"evaluated {done:,} samples"
    return f"{head}, {rate:,.0f}/s, {errors:,} error{'' if errors == 1 else 's'}"


def _is_interactive(stream: TextIO, ci: bool) -> bool:
    return not ci and bool(getattr(stream, "isatty", lambda: False)())


@dataclass
class Progress:
    """Call :meth:`update` per finished batch and :meth:`close` once at the end (idempotent).

    ``tty`` None decides from ``stream`` and ``ci``; ``emit`` receives the CI lines (default: logged at
    INFO on ``mlobs.evaluate``). Not thread-safe: update it from the thread that consumes results.
    """

    total: int | None = None
    label: str = ""
    tty: bool | None = None
    ci: bool = False  # output goes to a CI log (CommonSettings.in_ci): lines, never a bar
    every_s: float = 10.0
    every_fraction: float = 0.1
    stream: TextIO | None = None
    emit: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.monotonic
    done: int = field(default=0, init=False)
    errors: int = field(default=0, init=False)
    _started: float = field(default=0.0, init=False, repr=False)
    _last_at: float = field(default=0.0, init=False, repr=False)
    _last_step: int = field(default=0, init=False, repr=False)
    _bar: Any = field(default=None, init=False, repr=False)
    _task: Any = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        interactive = _is_interactive(stream, self.ci) if self.tty is None else self.tty
        self._started = self._last_at = self.clock()
        if interactive:
            self._start_bar(stream)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def rate(self) -> float:
        elapsed = self.clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        prefix = f"[{self.label}] " if self.label else ""
        return prefix + format_line(self.done, self.total, self.rate, self.errors)

    def update(self, samples: int, errors: int = 0) -> None:
        """Record ``samples`` more evaluated samples, ``errors`` of them failed."""
        self.done += samples
        self.errors += errors
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, errors=self.errors)
            return
        now = self.clock()
        step = int(self.done / self.total / self.every_fraction) if self.total else 0
        if step > self._last_step or now - self._last_at >= self.every_s:
            self._last_step, self._last_at = step, now
            if not (self.total and self.done >= self.total):  # the final line comes from close()
                self._say(self.line())

    def close(self) -> None:
        """Stop the bar, or log the final line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()
        self._say(self.line())

    def _say(self, text: str) -> None:
        if self.emit is not None:
            self.emit(text)
        else:
            log.info("%s", text)

    def _start_bar(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(file=stream), transient=False,
        )
        self._task = self._bar.add_task(self.label or "evaluating", total=self.total, errors=0)
        self._bar.start()
