"""Send a mode's :class:`~mlobs.result.Report` to every surface: comment, check run, summary, outputs.

One method per surface, each short and testable alone. The API can refuse us (a fork PR's read-only
token, a missing permission): that never fails the job — the job summary and workflow-command
annotations still carry the result, and the log says so once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from mlobs.github import markdown as md
from mlobs.github.actions import GithubActions
from mlobs.github.context import GithubContext
from mlobs.result import Annotation, Report

if TYPE_CHECKING:  # PyGithub is imported lazily: --help must not pay for it
    from github import Github
    from github.Repository import Repository

log = logging.getLogger(__name__)

ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit per check-run create/update
WORKFLOW_ANNOTATION_LEVEL = {"failure": "error", "warning": "warning", "notice": "notice"}


class CommentMode(StrEnum):
    STICKY = "sticky"
    NEW = "new"
    OFF = "off"


@dataclass(frozen=True)
class ReportSettings:
    token: str | None = field(default=None, repr=False)
    comment_mode: CommentMode = CommentMode.STICKY
    check_run: bool = True
    dry_run: bool = False
    dry_run_dir: Path = Path(".mlobs/dry-run")
    # PyGithub's pacing between write requests (GitHub asks for ~1 s to avoid secondary limits).
    write_interval: float = 1.0


@dataclass
class Published:
    """What the reporter did, for logs and tests."""

    comment_url: str | None = None
    comment_action: str | None = None  # created | updated | None
    check_run_id: int | None = None
    refused: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def marker(mode: str, key: str = "") -> str:
    """The hidden HTML marker that finds our sticky comment again."""
    safe_key = "".join(ch for ch in key if ch.isalnum() or ch in "-_.") if key else ""
    return f"<!-- mlobs:sticky {mode}{':' + safe_key if safe_key else ''} -->"


def annotation_batches(annotations: list[Annotation]) -> list[list[Annotation]]:
    """Annotations in chunks GitHub accepts; the one place that knows the limit."""
    return [
        annotations[i : i + ANNOTATIONS_PER_REQUEST]
        for i in range(0, len(annotations), ANNOTATIONS_PER_REQUEST)
    ] or [[]]


class Reporter:
    def __init__(
        self,
        settings: ReportSettings,
        context: GithubContext,
        actions: GithubActions,
        github: Github | None = None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.actions = actions
        self._github = github
        self._said_refused = False

    # ---- orchestration -------------------------------------------------------------------

    def publish(self, report: Report) -> Published:
        published = Published()
        self.publish_outputs(report)
        if self.settings.dry_run:
            published.files = self.render_dry_run(report)
            self.actions.stream.write(
                f"dry-run: rendered comment, check run and summary to {self.settings.dry_run_dir}\n"
            )
            return published

        self.publish_summary(report)
        if self._api_usable():
            if self.settings.check_run:
                published.check_run_id = self._guard(published, "check run", self.publish_check, report)
            if self.settings.comment_mode is not CommentMode.OFF:
                result = self._guard(published, "comment", self.publish_comment, report)
                if result:
                    published.comment_action, published.comment_url = result
        if published.check_run_id is None:
            self.publish_workflow_annotations(report.annotations)
        else:  # the check run could not place these on a file: the log still shows them
            self.publish_workflow_annotations([a for a in report.annotations if not a.path])
        return published

    def _api_usable(self) -> bool:
        if not self.settings.token:
            self.actions.stream.write("No github-token: skipping the comment and check run.\n")
            return False
        if not self.context.can_call_api:
            self.actions.stream.write(
                "GITHUB_REPOSITORY/GITHUB_SHA not set (not running in Actions?): "
                "skipping the comment and check run.\n"
            )
            return False
        return self.settings.check_run or self.settings.comment_mode is not CommentMode.OFF

    def _guard(self, published: Published, what: str, send, report: Report):
        from github import GithubException

        try:
            return send(report)
        except GithubException as exc:
            reason = _api_reason(exc)
        except OSError as exc:  # connection refused, DNS, TLS: GitHub unreachable
            reason = f"GitHub API unreachable ({type(exc).__name__}: {exc})"
        published.refused.append(f"{what}: {reason}")
        if not self._said_refused:
            self._said_refused = True
            self.actions.warning(
                f"Could not post the {what} ({reason}). This is expected for pull requests from "
                "forks (read-only token) or without `permissions: checks: write, "
                "pull-requests: write`. The results are in the job summary and annotations."
            )
        return None

    # ---- surfaces ------------------------------------------------------------------------

    def publish_outputs(self, report: Report) -> None:
        self.actions.set_output("result", report.verdict.value)
        for name, value in report.outputs.items():
            self.actions.set_output(name, value)

    def publish_summary(self, report: Report) -> bool:
        return self.actions.append_summary(self.summary_markdown(report))

    def publish_check(self, report: Report) -> int:
        repo = self._repo()
        requests = self.check_run_requests(report)
        first = requests[0]["payload"]
        check = repo.create_check_run(**first)
        for follow_up in requests[1:]:
            check.edit(**follow_up["payload"])
        return check.id

    def publish_comment(self, report: Report) -> tuple[str, str]:
        repo = self._repo()
        body = self.comment_markdown(report)
        sticky = self.settings.comment_mode is CommentMode.STICKY
        tag = marker(report.mode, report.key)
        pr_number = self.context.pr_number or self._find_pull_request(repo)
        if pr_number:
            issue = repo.get_issue(pr_number)
            existing = _first_with_marker(issue.get_comments(), tag) if sticky else None
            if existing is not None:
                existing.edit(body)
                return "updated", existing.html_url
            return "created", issue.create_comment(body).html_url
        commit = repo.get_commit(self.context.sha)
        existing = _first_with_marker(commit.get_comments(), tag) if sticky else None
        if existing is not None:
            existing.edit(body)
            return "updated", existing.html_url
        return "created", commit.create_comment(body).html_url

    def publish_workflow_annotations(self, annotations: list[Annotation]) -> None:
        for ann in annotations:
            self.actions.annotate(
                WORKFLOW_ANNOTATION_LEVEL.get(ann.level, "warning"),
                ann.message,
                file=ann.path,
                line=ann.start_line if ann.path else None,
                end_line=ann.end_line if ann.path else None,
                title=ann.title or None,
            )

    def render_dry_run(self, report: Report) -> list[Path]:
        out = self.settings.dry_run_dir
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "comment.md": self.comment_markdown(report),
            "summary.md": self.summary_markdown(report),
            "check-run.json": json.dumps(self.check_run_requests(report), indent=2, default=str) + "\n",
            "outputs.json": json.dumps({"result": report.verdict.value, **report.outputs}, indent=2) + "\n",
        }
        written = []
        for name, content in files.items():
            path = out / name
            path.write_text(content, encoding="utf-8")
            written.append(path)
        return written

    # ---- rendering -----------------------------------------------------------------------

    def comment_markdown(self, report: Report) -> str:
        tag = marker(report.mode, report.key)
        footer = self._footer()
        head = f"{tag}\n## {report.title}\n\n"
        body = md.truncate(report.body, md.COMMENT_LIMIT - len(head) - len(footer) - 2)
        return f"{head}{body}\n{footer}"

    def summary_markdown(self, report: Report) -> str:
        return f"## {report.title}\n\n{report.body}\n"

    def check_run_requests(self, report: Report) -> list[dict]:
        """The create request and its follow-up updates, each with at most 50 annotations."""
        name = f"mlobs {report.mode}" + (f" ({report.key})" if report.key else "")
        output_base = {
            "title": report.title[:1000],
            "summary": md.truncate(report.summary, md.CHECK_TEXT_LIMIT, "the job summary"),
            "text": md.truncate(report.body, md.CHECK_TEXT_LIMIT, "the job summary"),
        }
        requests = []
        # Only files in the repository can carry a check-run annotation.
        in_repo = [a for a in report.annotations if a.path]
        for i, batch in enumerate(annotation_batches(in_repo)):
            output = dict(output_base, annotations=[a.to_api() for a in batch])
            if i == 0:
                payload = {
                    "name": name,
                    "head_sha": self.context.sha,
                    "status": "completed",
                    "conclusion": report.verdict.check_conclusion,
                    "output": output,
                }
                if self.context.run_url:
                    payload["details_url"] = self.context.run_url
                requests.append({"method": "POST", "payload": payload})
            else:
                requests.append({"method": "PATCH", "payload": {"output": output}})
        return requests

    def _footer(self) -> str:
        run = f"[workflow run]({self.context.run_url})" if self.context.run_url else "a local run"
        sha = f" on `{self.context.sha[:12]}`" if self.context.sha else ""
        return f"<sub>ml-observability-action · {run}{sha}</sub>\n"

    # ---- API plumbing --------------------------------------------------------------------

    def _gh(self) -> Github:
        if self._github is None:
            from github import Auth, Github, GithubRetry

            self._github = Github(
                auth=Auth.Token(self.settings.token or ""),
                base_url=self.context.api_url,
                timeout=20,
                retry=GithubRetry(total=3),
                seconds_between_requests=None,
                seconds_between_writes=self.settings.write_interval or None,
                user_agent="ml-observability-action",
                lazy=True,
            )
        return self._github

    def _repo(self) -> Repository:
        return self._gh().get_repo(self.context.repository)

    def _find_pull_request(self, repo: Repository) -> int | None:
        """For push / schedule / workflow_dispatch: an open PR whose head is this commit."""
        open_prs = [pr for pr in repo.get_commit(self.context.sha).get_pulls() if pr.state == "open"]
        for pr in open_prs:
            if pr.head.sha == self.context.sha:
                return pr.number
        return open_prs[0].number if open_prs else None


def _first_with_marker(comments, tag: str):
    for comment in comments:
        if (comment.body or "").startswith(tag):
            return comment
    return None


def _api_reason(exc) -> str:
    message = ""
    if isinstance(exc.data, dict):
        message = str(exc.data.get("message", ""))
    return f"HTTP {exc.status}{': ' + message if message else ''}"
