"""The runner side of GitHub Actions: workflow commands and the environment files.

One class owns the ``::command::`` syntax and ``$GITHUB_OUTPUT`` / ``$GITHUB_STEP_SUMMARY``; the
output stream is injectable so tests read exactly what it wrote. Everything it writes passes the
run's :class:`~mlobs.redact.Redactor` first (``::add-mask::`` alone excepted: it must name the
secret to protect it).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mlobs.redact import Redactor

SUMMARY_LIMIT_BYTES = 1024 * 1024  # GitHub rejects a step summary over 1 MiB


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


class GithubActions:
    def __init__(self, stream: TextIO | None = None, env: Mapping[str, str] | None = None,
                 redactor: Redactor | None = None) -> None:
        from mlobs.redact import Redactor

        self._stream = stream
        self._env = {} if env is None else env  # the CLI passes the environment it read
        self.redactor = redactor if redactor is not None else Redactor()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def in_actions(self) -> bool:
        return self._env.get("GITHUB_ACTIONS") == "true"

    def command(self, name: str, message: str = "", **properties: object) -> None:
        clean = self.redactor.text
        props = ",".join(
            f"{key}={escape_property(clean(str(value)))}"
            for key, value in properties.items()
            if value is not None and value != ""
        )
        head = f"::{name} {props}" if props else f"::{name}"
        self._write(f"{head}::{escape_data(clean(message))}\n")

    def echo(self, line: str) -> None:
        """A plain line in the log (redacted like everything else)."""
        self._write(self.redactor.text(line.rstrip("\n")) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def annotate(
        self,
        level: str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        end_line: int | None = None,
        title: str | None = None,
    ) -> None:
        """``level`` is error | warning | notice."""
        self.command(level, message, file=file, line=line, endLine=end_line, title=title)

    def error(self, message: str, **where: object) -> None:
        self.annotate("error", message, **where)  # type: ignore[arg-type]

    def warning(self, message: str, **where: object) -> None:
        self.annotate("warning", message, **where)  # type: ignore[arg-type]

    def add_mask(self, secret: str | None) -> None:
        if secret:  # not through command(): the runner must see the value it is asked to mask
            self._write(f"::add-mask::{escape_data(secret)}\n")

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.command("group", title)
        try:
            yield
        finally:
            self.command("endgroup")

    def set_output(self, name: str, value: str) -> bool:
        """Append one output; multi-line values use the heredoc syntax with a fresh delimiter."""
        path = self._env.get("GITHUB_OUTPUT")
        if not path:
            return False
        value = self.redactor.text(str(value))
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            while delimiter in value:  # practically never; cheap to be sure
                delimiter = f"ghadelimiter_{uuid.uuid4()}"
            record = f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
        else:
            record = f"{name}={value}\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(record)
        return True

    def append_summary(self, markdown: str) -> bool:
        """Append to the job summary, trimmed so the file stays under GitHub's 1 MiB."""
        path = self._env.get("GITHUB_STEP_SUMMARY")
        if not path:
            return False
        from mlobs.github.markdown import truncate_bytes

        used = Path(path).stat().st_size if Path(path).exists() else 0
        markdown = self.redactor.text(markdown)
        text = truncate_bytes(markdown.rstrip("\n") + "\n", SUMMARY_LIMIT_BYTES - used)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
        return True
