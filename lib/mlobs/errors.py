"""Typed errors. The CLI turns each into one line on stderr, a ``::error::`` in Actions and an exit code."""

from __future__ import annotations

import errno
import os
import re

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_CANNOT_EVALUATE = 2


class MlobsError(Exception):
    """Anything that stops a mode from evaluating. Exit code 2 unless a subclass says otherwise."""

    exit_code = EXIT_CANNOT_EVALUATE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return " ".join(text.split())


class ConfigError(MlobsError):
    """A bad input value or combination of inputs."""


class SourceUnavailable(MlobsError):
    """A service the mode depends on (Loki, a Bento, a catalog) could not be reached."""


class EnvironmentProblem(MlobsError):
    """The machine, not the input: a full disk, a read-only or forbidden folder."""


def first_line(value: str | bytes | BaseException | None, limit: int | None = None) -> str:
    """The first non-empty line of a message, an exception's text or a response body, stripped and
    cut to ``limit`` characters (with "…"): how a library's multi-line error becomes part of our one
    line. An exception without text gives its type's name; nothing gives ""."""
    if isinstance(value, BaseException):
        text = str(value).strip() or type(value).__name__
    elif isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    else:
        text = value or ""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if limit is None or len(line) <= limit else line[:limit] + "…"


def clip(text: str, limit: int) -> str:
    """``text`` as one line (runs of whitespace, newlines included, become one space), cut to
    ``limit`` characters with a final "…": how a server's words or a value enter an error line."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# What the runner's machine does to a write, as opposed to what a bug does.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# Libraries that wrap an OSError into their own text (pyarrow's IOError, SQLite) keep the words.
_ENVIRONMENT_WORDS = re.compile(
    r"No space left on device|Read-only file system|Permission denied|Disk quota exceeded"
    r"|database or disk is full|attempt to write a readonly database", re.IGNORECASE)
_QUOTED_PATH = re.compile(r"""['"](/[^'"]+)['"]|(?<![\w/])(/[\w.@%+=:,~-]+(?:/[\w.@%+=:,~-]+)+)""")


def environment_error(exc: BaseException) -> EnvironmentProblem | None:
    """One line naming the path and the OS error, if ``exc`` (or what it wraps) is a full disk or
    a read-only / forbidden location; None for anything else."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            path = current.filename or _path_in(str(current))
            reason = os.strerror(current.errno)  # not strerror: libraries pad it with prose
            code = errno.errorcode.get(current.errno, str(current.errno))
            where = f"cannot write {path}" if path else "cannot write"
            return EnvironmentProblem(f"{where}: {reason} ({code})", hint=_hint(current.errno))
        words = _ENVIRONMENT_WORDS.search(str(current))
        if words and not isinstance(current, MlobsError):
            path = _path_in(str(current))
            where = f"cannot write {path}" if path else "cannot write"
            return EnvironmentProblem(f"{where}: {words.group(0)}", hint=_hint_for(words.group(0)))
        current = current.__cause__ or current.__context__
    return None


def _path_in(text: str) -> str | None:
    match = _QUOTED_PATH.search(text)
    return (match.group(1) or match.group(2)) if match else None


def _hint(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free some space on the runner (or point output-dir / the warehouse elsewhere)"
    return "make the folder writable, or point output-dir / the warehouse / report-dir elsewhere"


def _hint_for(words: str) -> str:
    return _hint(errno.ENOSPC if "space" in words.lower() or "full" in words.lower() or
                 "quota" in words.lower() else errno.EROFS)
