"""``alert-issue``: one GitHub issue per environment while it fails, closed when it recovers.

- **fail**: the open alert issue of the thread (mode, ``comment-key``, environment) gets its body
  updated in place — the latest results, failing since when, which deployment; none open → one is
  opened, labelled :data:`LABEL`.
- **pass**: the open one gets a short comment ("recovered", which run) and is closed as completed.
- **inconclusive / error**: the open one's body records the latest check; nothing is opened or
  closed on a verdict that does not know.

Found again by its label, the hidden marker on its first line and its author being the token's
own account (:mod:`mlobs.github.sticky` writes and parses the marker) — never by its title, which
people edit. Only *open* issues with the label are listed, so the search stays one short request
however many runs and past incidents there were. If two are open (two runs raced), the newer is
closed as a duplicate of the older. A person who closes it while it still fails mutes it for that
running commit: no new issue until another commit is running, or the sticky comment has shown
another verdict in between (a new incident).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlobs.github import markdown as md
from mlobs.github import sticky
from mlobs.github.api import json_pages, request_json

if TYPE_CHECKING:
    from github.Repository import Repository

LABEL = "mlobs-alert"  # GitHub: label names ≤ 50 characters, descriptions ≤ 100
LABEL_COLOR = "d73a4a"
LABEL_DESCRIPTION = "Production verdict failing (ml-observability-action); closed on recovery"
CLOSED_LOOKED_AT = 100  # recently updated closed alert issues read to honour a person's close


@dataclass(frozen=True)
class AlertOutcome:
    action: str  # opened | updated | closed | muted | none
    number: int | None = None
    url: str | None = None
    duplicates_closed: tuple[int, ...] = ()


@dataclass(frozen=True)
class AlertContext:
    """What the issue says besides the verdict, all Markdown already escaped."""

    title: str  # plain text: the report's title
    summary: str  # Markdown: the report's short form
    target_line: str = ""  # which deployment / commit / PR
    results_url: str | None = None  # the sticky comment
    run_url: str | None = None


def issue_title(thread: sticky.Thread) -> str:
    """Plain text, within GitHub's 256 characters; set once (people may retitle it)."""
    where = f" in {thread.environment}" if thread.environment else ""
    key = f" ({thread.key})" if thread.key else ""
    title = f"mlobs {thread.mode}{key} failing{where}".replace("@", md.MENTION_BREAK)
    return md.clip(title, md.TITLE_LIMIT)


class AlertIssues:
    def __init__(self, repo: Repository, viewer: str, clean: Callable[[str], str]) -> None:
        self.repo = repo
        self.viewer = viewer
        self.clean = clean  # the run's redaction step: every text sent passes it

    def sync(self, thread: sticky.Thread, state: sticky.State, context: AlertContext,
             new_incident: bool = False) -> AlertOutcome:
        """Bring the thread's alert issue in line with ``state``; ``new_incident``: the sticky
        comment showed another verdict before this failure (a person's earlier close no longer
        mutes it)."""
        open_issues = self._ours("open", thread)
        keep, duplicates = (open_issues[0], open_issues[1:]) if open_issues else (None, [])
        closed = tuple(self._close_duplicate(issue, keep) for issue in duplicates)
        if state.verdict == "fail":
            if keep is not None:
                previous = sticky.parse(keep.get("body"), "alert")
                since = previous.state.since if previous and previous.state else None
                self._edit(keep, {"body": self._body(thread, replace(state, since=since or state.at),
                                                      context)})
                return AlertOutcome("updated", keep["number"], keep.get("html_url"), closed)
            if not new_incident and self._muted(thread, state):
                return AlertOutcome("muted", None, None, closed)
            self._ensure_label()
            body = self._body(thread, replace(state, since=state.at), context)
            issue = request_json(self.repo.requester, "POST", f"{self.repo.url}/issues",
                                 {"title": self.clean(issue_title(thread)), "body": body,
                                  "labels": [LABEL]})
            return AlertOutcome("opened", issue.get("number"), issue.get("html_url"), closed)
        if keep is None:
            return AlertOutcome("none", None, None, closed)
        previous = sticky.parse(keep.get("body"), "alert")
        since = previous.state.since if previous and previous.state else None
        if state.verdict == "pass":
            request_json(self.repo.requester, "POST",
                         f"{self.repo.url}/issues/{keep['number']}/comments",
                         {"body": self.clean(recovery_comment(thread, state, context, since))})
            self._edit(keep, {"body": self._body(thread, replace(state, since=since), context),
                              "state": "closed", "state_reason": "completed"})
            return AlertOutcome("closed", keep["number"], keep.get("html_url"), closed)
        self._edit(keep, {"body": self._body(thread, replace(state, since=since), context)})
        return AlertOutcome("updated", keep["number"], keep.get("html_url"), closed)

    # ---- finding ---------------------------------------------------------------------------

    def _ours(self, state: str, thread: sticky.Thread, limit: int | None = None) -> list[dict]:
        """Issues (not pull requests) with the label, the thread's marker and our author, oldest
        first."""
        params = {"state": state, "labels": LABEL}
        if state == "closed":
            params.update(sort="updated", direction="desc")
        found = []
        for issue in json_pages(self.repo.requester, f"{self.repo.url}/issues", params, limit=limit):
            if issue.get("pull_request") is not None:
                continue  # GitHub lists pull requests among issues
            if (issue.get("user") or {}).get("login") != self.viewer:
                continue
            marker = sticky.parse(issue.get("body"), "alert")
            if marker is not None and sticky.same_thread(marker.thread, thread):
                found.append(issue)
        if state == "open":
            found.sort(key=lambda issue: int(issue["number"]))
        return found

    def _muted(self, thread: sticky.Thread, state: sticky.State) -> bool:
        """A person closed this thread's latest alert while it still failed on this commit."""
        closed = self._ours("closed", thread, limit=CLOSED_LOOKED_AT)
        if not closed:
            return False
        marker = sticky.parse(closed[0].get("body"), "alert")
        last = marker.state if marker else None
        return bool(last and last.verdict != "pass" and last.sha and last.sha == state.sha)

    # ---- writing ---------------------------------------------------------------------------

    def _edit(self, issue: dict, fields: dict) -> None:
        fields = {k: self.clean(v) if k == "body" else v for k, v in fields.items()}
        request_json(self.repo.requester, "PATCH", f"{self.repo.url}/issues/{issue['number']}", fields)

    def _close_duplicate(self, issue: dict, keep: dict) -> int:
        request_json(self.repo.requester, "POST", f"{self.repo.url}/issues/{issue['number']}/comments",
                     {"body": f"Duplicate of #{int(keep['number'])} (two runs opened one each); "
                              "closing this one."})
        request_json(self.repo.requester, "PATCH", f"{self.repo.url}/issues/{issue['number']}",
                     {"state": "closed", "state_reason": "duplicate"})
        return int(issue["number"])

    def _ensure_label(self) -> None:
        """Create the label with its colour and description; it may exist already (422)."""
        from github import GithubException

        try:
            request_json(self.repo.requester, "POST", f"{self.repo.url}/labels",
                         {"name": LABEL, "color": LABEL_COLOR, "description": LABEL_DESCRIPTION})
        except GithubException as exc:
            if exc.status != 422:  # already_exists; anything else is a real refusal
                raise

    def _body(self, thread: sticky.Thread, state: sticky.State, context: AlertContext) -> str:
        head = sticky.render(thread, state, kind="alert")
        status = {"fail": f"❌ **Failing** since {sticky.human_time(state.since)}",
                  "pass": f"✅ **Recovered** at {sticky.human_time(state.at)} (failing since "
                          f"{sticky.human_time(state.since)})",
                  }.get(state.verdict, f"{sticky.verdict_words(state.verdict)} at the latest check "
                                       f"(failing since {sticky.human_time(state.since)})")
        links = [f"last checked {sticky.human_time(state.at)}"]
        if context.run_url:
            links.append(f"[workflow run]({md.url(context.run_url)})")
        if context.results_url:
            links.append(f"[full results]({md.url(context.results_url)})")
        text = (f"{head}\n## {md.text(md.clip(context.title, md.TITLE_LIMIT))}\n\n{status} · "
                f"{' · '.join(links)}\n\n{context.target_line}\n{context.summary}\n\n"
                "<sub>Opened by ml-observability-action (`alert-issue`): updated while failing, "
                "closed when the verdict passes again. Closing it by hand mutes it for the running "
                "commit.</sub>\n")
        return self.clean(md.fit(text, md.COMMENT_LIMIT, md.utf16_size))


def recovery_comment(thread: sticky.Thread, state: sticky.State, context: AlertContext,
                     since: datetime | None) -> str:
    where = f" in {md.code(thread.environment, table=False)}" if thread.environment else ""
    run = f" ([workflow run]({md.url(context.run_url)}))" if context.run_url else ""
    failing = f", after failing since {sticky.human_time(since)}" if since else ""
    return (f"✅ **Recovered**{where}: {md.text(md.clip(context.title, md.TITLE_LIMIT))} — passes "
            f"again as of {sticky.human_time(state.at or datetime.now(UTC))}{failing}{run}. "
            "Closing.\n")
