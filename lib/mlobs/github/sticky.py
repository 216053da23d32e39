"""The hidden marker of a sticky comment, the verdict it carries, and the note when it changes.

A sticky comment is found again by its first line, one HTML comment:

    <!-- mlobs:sticky slo-validate:KEY env=production verdict=fail at=2025-06-01T10:17:00Z sha=… run=… -->

The part before ``verdict`` names the thread (mode, ``comment-key``, environment): one comment per
thread on a pull request or commit. The rest is the state the comment shows, machine-readable, so
the next run knows whether the verdict changed (an edit notifies nobody: a change is announced by
a short new comment) and a reviewer's run can quote production's latest verdict (see
:mod:`mlobs.github.production`). Only one HTML comment per body: GitHub shows nothing of it, and
every value in it is percent-encoded or from a fixed alphabet, so no input can end it early.
Comments written before the state existed (``<!-- mlobs:sticky slo-validate -->``) still match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from mlobs.github import markdown as md

PREFIX = "<!-- mlobs:sticky "
KINDS = ("sticky", "alert")  # a sticky comment; an alert issue (mlobs.github.alerts)
_LINE = {kind: re.compile(rf"<!-- mlobs:{kind} (?P<thread>[A-Za-z0-9._-]+(?::[A-Za-z0-9._-]+)?)"
                          r"(?P<fields>(?: [a-z]+=[^\s]*)*) -->") for kind in KINDS}
_FIELD = re.compile(r" ([a-z]+)=([^\s]*)")
# The state fields, in the order they are written; values from these alphabets only.
_VALUE = {
    "env": re.compile(r"[A-Za-z0-9%._~-]+"),
    "verdict": re.compile(r"pass|fail|inconclusive|error"),
    "at": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
    "since": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
    "sha": re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}"),
    "run": re.compile(r"\d{1,20}"),
    "deployment": re.compile(r"\d{1,20}"),
}


def safe_key(key: str) -> str:
    """``comment-key`` as it appears in markers (unchanged since the first sticky comments)."""
    return "".join(ch for ch in key if ch.isalnum() or ch in "-_.") if key else ""


@dataclass(frozen=True)
class Thread:
    """What one sticky comment is about: a mode, an optional ``comment-key``, an environment."""

    mode: str
    key: str = ""
    environment: str = ""

    @property
    def name(self) -> str:
        key = safe_key(self.key)
        return f"{self.mode}:{key}" if key else self.mode

    def head(self, kind: str = "sticky") -> str:
        """The marker's fixed part (thread only)."""
        env = f" env={quote(self.environment, safe='')}" if self.environment else ""
        return f"<!-- mlobs:{kind} {self.name}{env}"


@dataclass(frozen=True)
class State:
    """The verdict a sticky comment shows, on which commit, when, from which run."""

    verdict: str
    at: datetime
    sha: str | None = None
    run: str | None = None
    deployment: int | None = None
    since: datetime | None = None  # alert issues: failing since

    @classmethod
    def now(cls, verdict: str, sha: str | None, run: str | None = None,
            deployment: int | None = None) -> State:
        return cls(verdict, datetime.now(UTC).replace(microsecond=0), sha, run, deployment)


@dataclass(frozen=True)
class Marker:
    thread: Thread
    state: State | None = None
    fields: dict[str, str] = field(default_factory=dict, repr=False)


def render(thread: Thread, state: State | None = None, kind: str = "sticky") -> str:
    """The marker line: the thread, then the state when there is one."""
    parts = [thread.head(kind)]
    if state is not None:
        parts.append(f" verdict={state.verdict} at={stamp(state.at)}")
        if state.sha and _VALUE["sha"].fullmatch(state.sha):
            parts.append(f" sha={state.sha}")
        if state.run and _VALUE["run"].fullmatch(state.run):
            parts.append(f" run={state.run}")
        if state.deployment is not None:
            parts.append(f" deployment={int(state.deployment)}")
        if state.since is not None:
            parts.append(f" since={stamp(state.since)}")
    return "".join(parts) + " -->"


def parse(body: str | None, kind: str = "sticky") -> Marker | None:
    """The marker on the first line of ``body``, or None. Unknown or malformed fields are ignored
    (a later version may add some); a malformed verdict or time means no state."""
    first = (body or "").split("\n", 1)[0].rstrip("\r")
    match = _LINE[kind].fullmatch(first)
    if not match:
        return None
    fields = {k: v for k, v in _FIELD.findall(match["fields"])
              if k in _VALUE and _VALUE[k].fullmatch(v)}
    mode, _, key = match["thread"].partition(":")
    thread = Thread(mode, key, unquote(fields.get("env", "")))
    state = None
    if "verdict" in fields and "at" in fields:
        state = State(fields["verdict"], parse_stamp(fields["at"]), fields.get("sha"),
                      fields.get("run"), int(fields["deployment"]) if "deployment" in fields else None,
                      parse_stamp(fields["since"]) if "since" in fields else None)
    return Marker(thread, state, fields)


def same_thread(a: Thread, b: Thread) -> bool:
    return (a.mode, safe_key(a.key), a.environment) == (b.mode, safe_key(b.key), b.environment)


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def human_time(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if when else "an unknown time"


VERDICT_WORDS = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "⚠️ inconclusive",
                 "error": "⛔ error"}


def verdict_words(verdict: str) -> str:
    return VERDICT_WORDS.get(verdict, md.text(verdict))


def changed(previous: State | None, verdict: str) -> bool:
    """A change worth a new comment: any other verdict than the one the comment showed (pass →
    fail, fail → pass, anything → inconclusive or error). Unknown before: nothing to compare."""
    return previous is not None and previous.verdict != verdict


def transition_comment(title: str, previous: State, verdict: str, sticky_url: str | None,
                       run_url: str | None, where: str = "") -> str:
    """The short new comment that announces a change (the edited sticky comment notifies nobody).

    ``title`` is plain text (escaped here); ``where`` is Markdown already (e.g. "in `production`").
    """
    links = []
    if sticky_url:
        links.append(f"[the full results]({md.url(sticky_url)})")
    if run_url:
        links.append(f"[workflow run]({md.url(run_url)})")
    return (f"**Verdict changed{' ' + where if where else ''}: {verdict_words(previous.verdict)} → "
            f"{verdict_words(verdict)}** — {md.text(md.clip(title, md.TITLE_LIMIT))} (the previous "
            f"verdict was from {human_time(previous.at)}).\n\n"
            + (" · ".join(links) + "\n" if links else ""))
