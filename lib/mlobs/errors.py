"""Typed errors. The CLI turns each into one line on stderr, a ``::error::`` in Actions and an exit code."""

from __future__ import annotations

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


class NotImplementedMode(MlobsError):
    """A mode whose implementation has not landed yet."""
