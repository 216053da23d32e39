"""The one redaction step every outgoing surface passes: nothing secret leaves the job.

A :class:`Redactor` is built once per run from the inputs (the secret inputs, credentials in any
URL, secret-looking ``catalog`` properties, the few well-known secret environment variables) and
applied to the final text of every surface: the PR or commit comment, the check run and its
annotations, the job summary, step outputs, workflow commands, results files, the stderr error
line and log records. It does two things:

- every URL loses its userinfo: ``https://user:pass@host/x`` → ``https://host/x`` (also when the
  ``@`` was already escaped for Markdown);
- every secret value is replaced by ``***`` in every form it can take on its way to a surface:
  as is, URL-encoded, HTML/XML- or Markdown-escaped, inside a JSON string, in a Python ``repr``
  (exception messages quote bytes that way), escaped for a workflow command, and the base64 of a
  ``user:password`` pair (an ``Authorization: Basic`` header).

``::add-mask::`` is the runner's own protection of the log; it never covers a comment body or a
check run, hence this module. Values shorter than :data:`MIN_SECRET_LENGTH` are not replaced
inside text (it would shred every word that contains them); URL userinfo is stripped whatever
its length.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from mlobs.cli import SECRET_OPTIONS
from mlobs.lake.catalog import is_secret_key

if TYPE_CHECKING:
    from mlobs.result import Report

MASK = "***"
MIN_SECRET_LENGTH = 4

# Inputs whose values are secrets (also: masked in Actions, passed by env by entrypoint.py).
SECRET_INPUTS = SECRET_OPTIONS
# Environment variables that hold secrets the action or its libraries may read.
SECRET_ENV = (
    "GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLOBS_GITHUB_TOKEN", "MLOBS_LOKI_TOKEN",
    "MLOBS_LOKI_PASSWORD",
)
# pyiceberg reads catalogs from PYICEBERG_CATALOG__<NAME>__<KEY> too.
_PYICEBERG_ENV = "PYICEBERG_CATALOG__"

# What follows "scheme://" up to the last "@" (or its Markdown forms) before the authority ends:
# the class stops at what ends a URL in Markdown, HTML, JSON or prose.
_USERINFO = re.compile(r"(?:[^\s/?#<>\"'`|\[\]{}]*(?:@\u200b?|&#64;))+")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>\"'`|\[\]{}]+")


def strip_userinfo(text: str) -> str:
    """``https://user:pass@host`` → ``https://host``, for every URL in ``text``.

    A scan for ``://`` and an anchored match after each (a single regex that also matches the
    scheme tries at every word of a 1 MiB summary: about 20 times slower).
    """
    if "://" not in text:
        return text
    parts, pos = [], 0
    while (found := text.find("://", pos)) != -1:
        start = found + 3
        parts.append(text[pos:start])
        userinfo = _USERINFO.match(text, start)
        pos = userinfo.end() if userinfo else start
    parts.append(text[pos:])
    return "".join(parts)


def url_secrets(text: str) -> list[str]:
    """The passwords (and ``user:password`` pairs) of URLs in ``text``, raw and decoded."""
    found: list[str] = []
    for match in _URL.finditer(text or ""):
        try:
            parts = urlsplit(match.group(0))
            password = parts.password
        except ValueError:
            continue
        if password:
            user = parts.username or ""
            for value in (password, unquote(password), f"{user}:{password}",
                          f"{unquote(user)}:{unquote(password)}"):
                found.append(value)
    return found


def _escapes(secret: str) -> set[str]:
    """Every form ``secret`` can take on a surface (see the module docstring)."""
    from mlobs.github import markdown as md
    from mlobs.github.actions import escape_data, escape_property

    forms = {
        secret,
        quote(secret, safe=""), quote(secret), quote_plus(secret),
        html.escape(secret), html.escape(secret, quote=False),
        html.escape(secret, quote=False).replace('"', "&quot;"),  # XML attributes (JUnit)
        md.text(secret), md.text(secret).replace(md.MENTION_BREAK, "@"), secret.replace("|", "\\|"),
        json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1], repr(secret.encode("utf-8"))[2:-1],
        escape_data(secret), escape_property(secret),
    }
    if ":" in secret:  # a user:password pair: also as an Authorization: Basic value
        forms.add(base64.b64encode(secret.encode("utf-8")).decode("ascii"))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces secrets by ``***`` and strips URL userinfo; see the module docstring."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> Redactor:
        """Register more secret values (and the secrets inside URLs among them)."""
        fresh = set()
        for secret in secrets:
            if not secret:
                continue
            secret = str(secret)
            for value in (secret, secret.strip(), *url_secrets(secret)):
                if len(value) >= MIN_SECRET_LENGTH:
                    fresh.add(value)
        if fresh - self._secrets:
            self._secrets |= fresh
            forms = set().union(*(_escapes(s) for s in self._secrets))
            # Longest first, so a secret is replaced whole before any part of it.
            ordered = sorted(forms, key=lambda f: (-len(f), f))
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))
        return self

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def text(self, value: str) -> str:
        """``value`` with every secret masked and every URL's userinfo stripped."""
        if not value:
            return value
        value = str(value)
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        return strip_userinfo(value)

    __call__ = text

    def data(self, value: Any) -> Any:
        """The same for every string inside a JSON-like value (dict keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.data(v) for v in value)
        return value

    def report(self, report: Report) -> Report:
        """A copy of a mode's report with every text field redacted."""
        return replace(
            report,
            title=self.text(report.title),
            summary=self.text(report.summary),
            body=self.text(report.body),
            annotations=[
                replace(a, message=self.text(a.message), title=self.text(a.title),
                        raw_details=self.text(a.raw_details),
                        path=self.text(a.path) if a.path else a.path)
                for a in report.annotations
            ],
            outputs={name: self.text(v) for name, v in report.outputs.items()},
            key=self.text(report.key),  # names the check run and the sticky marker
        )

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_inputs(cls, params: Mapping[str, object], env: Mapping[str, str]) -> Redactor:
        """From the mode's parsed options (click names: ``loki_password``) and the environment."""
        redactor = cls()
        for name in SECRET_INPUTS:
            redactor.add(_str(params.get(name.replace("-", "_"))))
        for value in params.values():  # credentials inside any URL given as an input
            for item in value if isinstance(value, list | tuple) else (value,):
                if isinstance(item, str) and "://" in item:
                    redactor.add(*url_secrets(item))
        redactor.add(*catalog_secrets(_str(params.get("catalog")), env))
        redactor.add(*environment_secrets(env))
        return redactor


def environment_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of the well-known secret variables and of secret-looking pyiceberg settings."""
    found = [env.get(name) for name in SECRET_ENV]
    found += [value for key, value in env.items()
              if key.startswith(_PYICEBERG_ENV) and is_secret_key(key[len(_PYICEBERG_ENV):])]
    return [value for value in found if value]


def catalog_secrets(catalog: str | None, env: Mapping[str, str]) -> list[str]:
    """Secret values in the ``catalog`` input (``k=v,…``) or in the named catalog's settings."""
    text = (catalog or "").strip()
    if not text:
        return []
    found = []
    if "=" in text:
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if sep and is_secret_key(key.strip()):
                found.append(value.strip())
            elif "://" in value:
                found += url_secrets(value)
        return found
    try:  # a name from .pyiceberg.yaml: its secrets are secrets too
        from pyiceberg.utils.config import Config
    except ImportError:
        return []
    try:
        properties = Config().get_catalog_config(text) or {}
    except Exception:  # an unreadable config is reported by the lake layer, not here
        return []
    for key, value in properties.items():
        if is_secret_key(str(key)):
            found.append(str(value))
        elif "://" in str(value):
            found += url_secrets(str(value))
    return found


def line_break_secret(params: Mapping[str, object]) -> str | None:
    """The name of the first secret input holding a CR or LF inside it, if any.

    A header value cannot carry a line break: HTTP libraries refuse it with a message that quotes
    the whole value. Surrounding whitespace (a pasted secret's trailing newline) is not counted:
    the inputs are stripped before use.
    """
    for name in SECRET_INPUTS:
        value = _str(params.get(name.replace("-", "_")))
        if value and ("\r" in value.strip() or "\n" in value.strip()):
            return name
    return None


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (attach it to handlers)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = self.redactor.text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor.text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        return True


def write_text(path: Path, text: str, redactor: Redactor | None = None) -> Path:
    """Write a results or dry-run file through the redaction step, all or nothing.

    The text goes to a temporary file beside it that replaces ``path`` only once complete, so a
    full disk never leaves a truncated results file for the next step to misread; an OS error
    names the file (a failed ``write`` alone would not).
    """
    data = (redactor.text(text) if redactor is not None else text).encode("utf-8")
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as fh:
            fh.write(data)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return path


def _str(value: object) -> str | None:
    return None if value is None else str(value)
