"""Send a mode's :class:`~mlobs.result.Report` to every surface: comment, check run, summary, outputs.

One method per surface, each short and testable alone. The API can refuse us (a fork PR's read-only
token, a missing permission): that never fails the job — the job summary and workflow-command
annotations still carry the result, and the log says so once, quoting GitHub.

Everything sent is cut to GitHub's limits as GitHub counts them (see :mod:`mlobs.github.markdown`
and the constants below) and passes the run's redaction step first: :meth:`Reporter.publish`
redacts the whole report once, and :class:`~mlobs.github.actions.GithubActions` redacts every
workflow command, output and summary line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlobs.config import CommentMode
from mlobs.github import markdown as md
from mlobs.github import sticky
from mlobs.github import target as targets
from mlobs.github.actions import GithubActions
from mlobs.github.api import api_reason
from mlobs.github.context import GithubContext
from mlobs.redact import write_text
from mlobs.result import Annotation, Report

if TYPE_CHECKING:  # PyGithub is imported lazily: --help must not pay for it
    from github import Github
    from github.Repository import Repository

log = logging.getLogger(__name__)

ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit per check-run create/update
# Annotation message and raw_details: "The maximum size is 64 KB". Whether KB means 1000 or 1024,
# 64,000 bytes is within it.
ANNOTATION_TEXT_LIMIT_BYTES = 64_000
# A step shows at most 10 error and 10 warning annotations made by workflow commands: send the
# 10 that matter most and point to the job summary for the rest.
WORKFLOW_ANNOTATIONS_SHOWN = 10
WORKFLOW_ANNOTATION_LEVEL = {"failure": "error", "warning": "warning", "notice": "notice"}
IMPORTANCE = {"failure": 0, "warning": 1, "notice": 2}
VIEWER_QUERY = "query { viewer { login } }"


@dataclass(frozen=True)
class ReportSettings:
    token: str | None = field(default=None, repr=False)
    comment_mode: CommentMode = CommentMode.STICKY
    check_run: bool = True
    dry_run: bool = False
    dry_run_dir: Path = Path(".mlobs/dry-run")
    # PyGithub's pacing between write requests (GitHub asks for ~1 s to avoid secondary limits).
    write_interval: float = 1.0
    # Which commit to report on (mlobs.github.target): a given one, or the latest successful
    # deployment to an environment; and the alert issue while that environment fails.
    commit_sha: str | None = None
    deployment_environment: str | None = None
    alert_issue: bool = False


@dataclass
class Delivery:
    """What the reporter did, for logs and tests."""

    comment_url: str | None = None
    comment_action: str | None = None  # created | updated | None
    check_run_id: int | None = None
    refused: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    annotations_delivered: int = 0  # on the check run
    sha: str | None = None  # the commit reported on
    pull_request: int | None = None  # the PR commented on (open, or merged)
    deployment_id: int | None = None  # the deployment whose commit it is
    transition_url: str | None = None  # the new comment announcing a changed verdict
    alert: object | None = None  # mlobs.github.alerts.AlertOutcome
    production_line: str = ""  # a reviewer's line: the running version's latest verdict


class AnnotationsRefused(Exception):
    """The check run exists, but GitHub refused a follow-up batch of its annotations."""

    def __init__(self, check_run_id: int, delivered: int, error: Exception) -> None:
        super().__init__(str(error))
        self.check_run_id = check_run_id
        self.delivered = delivered
        self.error = error


def marker(mode: str, key: str = "", environment: str = "") -> str:
    """The hidden HTML marker of a sticky comment's thread, without its state (see
    :mod:`mlobs.github.sticky`): what the comments written before the state existed carry."""
    return sticky.render(sticky.Thread(mode, key, environment))


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
        self._viewer: str | None = None  # the token's login, "" when it could not be learned
        self.target = targets.initial(context, settings.commit_sha, settings.deployment_environment)
        self._state: sticky.State | None = None  # what this run's sticky comment records
        self._lines: list[str] = []  # Markdown lines above the body: what was reported on
        self._previous: sticky.State | None = None  # what the sticky comment showed before
        self._transition_url: str | None = None
        self._comment_url: str | None = None
        self._pull_refused: Exception | None = None  # the PR lookup failed: no comment
        self._note_refused: str | None = None  # GitHub refused the verdict-change comment

    # ---- orchestration -------------------------------------------------------------------

    def publish(self, report: Report) -> Delivery:
        report = self.actions.redactor.report(report)  # the one redaction step for API payloads
        published = Delivery()
        self.publish_outputs(report)
        if self.settings.dry_run:
            published.files = self.render_dry_run(report)
            self.actions.echo(
                f"dry-run: rendered comment, check run and summary to {self.settings.dry_run_dir}"
            )
            if self.target.needs_deployment:
                self.actions.echo(f"dry-run: the commit running in {self.target.environment!r} is "
                                  "looked up only when sending (the Deployments API).")
            return published

        api = self._api_usable() and self._resolve_target(published)
        published.sha = self.target.sha
        published.pull_request = self.target.pr_number
        published.deployment_id = self.target.deployment.id if self.target.deployment else None
        self._lines = [self.actions.redactor.text(line)
                       for line in (self._target_line(), published.production_line) if line]
        self.publish_summary(report)
        in_repo = [a for a in report.annotations if a.path]
        if api:
            if self.settings.check_run:
                published.annotations_delivered = len(in_repo)  # less when a batch is refused
                published.check_run_id = self._guard(published, "check run", self.publish_check, report)
                if published.check_run_id is None:
                    published.annotations_delivered = 0
            if self.settings.comment_mode is not CommentMode.OFF:
                result = self._guard(published, "comment", self.publish_comment, report)
                if result:
                    published.comment_action, published.comment_url = result
                    published.transition_url = self._transition_url
                if self._note_refused:
                    published.refused.append(f"verdict-change comment: {self._note_refused}")
                    self.actions.warning(f"The sticky comment is updated, but GitHub refused the "
                                         f"comment announcing the changed verdict ({self._note_refused}).")
            if self.settings.alert_issue:
                published.alert = self._guard(published, "alert issue", self.publish_alert, report)
        if published.check_run_id is None:
            self.publish_workflow_annotations(report.annotations)
        else:  # what the check run does not carry (outside the repository, refused) goes to the log
            rest = in_repo[published.annotations_delivered:]
            self.publish_workflow_annotations(rest + [a for a in report.annotations if not a.path])
        return published

    def _api_usable(self) -> bool:
        if not self.settings.token:
            self.actions.echo("No github-token: skipping the comment and check run.")
            return False
        if not self.context.repository or not (self.target.sha or self.target.needs_deployment):
            self.actions.echo(
                "GITHUB_REPOSITORY/GITHUB_SHA not set (not running in Actions?): "
                "skipping the comment and check run."
            )
            return False
        return (self.settings.check_run or self.settings.comment_mode is not CommentMode.OFF
                or self.settings.alert_issue)

    def _resolve_target(self, published: Delivery) -> bool:
        """Which commit and pull request (mlobs.github.target), and a reviewer's production line.
        False when there is no commit to report on: nothing is posted on a commit that is not
        the one running (the summary and annotations still carry every result)."""
        from github import GithubException

        repo = self._repo()
        if self.target.needs_deployment:
            try:
                self.target = targets.with_deployment(self.target, repo)
            except targets.NoDeployment as exc:
                reason, hint = str(exc), "check the deployment-environment input"
            except (GithubException, OSError) as exc:
                reason = _lookup_reason(exc)
                hint = "grant `permissions: deployments: read`, or pass commit-sha"
            else:
                reason = ""
            if reason:
                published.refused.append(f"deployment: {reason}")
                self._said_refused = True
                self.actions.warning(
                    f"Could not tell which commit runs in {self.target.environment!r} ({reason}): "
                    f"no comment, check run or alert issue is posted — {hint}. The results are in "
                    "the job summary and annotations.")
                return False
        if self.target.lookup_pull and (self.settings.comment_mode is not CommentMode.OFF
                                        or self.settings.alert_issue):
            try:
                self.target = targets.with_pull(self.target, repo)
            except (GithubException, OSError) as exc:
                # No comment rather than one on the commit when a PR may have shipped it.
                self._pull_refused = exc
        env = (self.settings.deployment_environment or "").strip()
        if env and self.target.from_event_pr and self.settings.comment_mode is not CommentMode.OFF:
            from mlobs.github.production import production_line

            published.production_line = production_line(
                repo, env, self._identity(), self.context.server_url, self.context.repository or "")
        return True

    def _guard(self, published: Delivery, what: str, send, report: Report):
        from github import GithubException

        try:
            return send(report)
        except AnnotationsRefused as exc:
            # The check run is there with the first batches; say exactly what GitHub refused.
            reason = _api_reason(exc.error)
            published.refused.append(f"annotations: {reason}")
            published.annotations_delivered = exc.delivered
            self.actions.warning(
                f"GitHub refused annotations of the check run after the first {exc.delivered} "
                f"({reason}). The most important are repeated below; every result is in the job "
                "summary."
            )
            return exc.check_run_id
        except GithubException as exc:
            reason = _api_reason(exc)
            status = exc.status
        except OSError as exc:  # connection refused, DNS, TLS: GitHub unreachable
            reason, status = f"GitHub API unreachable ({type(exc).__name__}: {exc})", None
        published.refused.append(f"{what}: {reason}")
        if not self._said_refused:
            self._said_refused = True
            self.actions.warning(f"Could not post the {what} ({reason}). {_refusal_hint(status, what)}")
        return None

    # ---- surfaces ------------------------------------------------------------------------

    def publish_outputs(self, report: Report) -> None:
        self.actions.set_output("result", report.verdict.value)
        for name, value in report.outputs.items():
            self.actions.set_output(name, value)

    def publish_summary(self, report: Report) -> bool:
        return self.actions.append_summary(self.summary_markdown(report))

    def publish_check(self, report: Report) -> int:
        from github import GithubException

        repo = self._repo()
        requests = self.check_run_requests(report)
        first = requests[0]["payload"]
        check = repo.create_check_run(**first)
        delivered = len(first["output"]["annotations"])
        for follow_up in requests[1:]:
            try:
                check.edit(**follow_up["payload"])
            except GithubException as exc:
                raise AnnotationsRefused(check.id, delivered, exc) from exc
            delivered += len(follow_up["payload"]["output"]["annotations"])
        return check.id

    def publish_comment(self, report: Report) -> tuple[str, str]:
        if self._pull_refused is not None:
            raise self._pull_refused
        repo = self._repo()
        body = self.actions.redactor.text(self.comment_markdown(report))
        sticky_mode = self.settings.comment_mode is CommentMode.STICKY
        thread = self._thread(report)
        owner = self._identity() if sticky_mode else None
        pr_number = self.target.pr_number
        target = repo.get_issue(pr_number) if pr_number else repo.get_commit(self.target.sha)
        existing = _first_with_marker(target.get_comments(), thread, owner) if owner else None
        if existing is None:
            created = target.create_comment(body)
            self._comment_url = created.html_url
            return "created", created.html_url
        marker_ = sticky.parse(existing.body)
        self._previous = marker_.state if marker_ else None
        existing.edit(body)
        self._comment_url = existing.html_url
        if sticky.changed(self._previous, report.verdict.value):
            # An edit notifies nobody: a change of verdict gets a short new comment.
            note = sticky.transition_comment(report.title, self._previous, report.verdict.value,
                                             existing.html_url, self.context.run_url,
                                             self._where())
            from github import GithubException

            try:
                self._transition_url = target.create_comment(self.actions.redactor.text(note)).html_url
            except GithubException as exc:  # the sticky comment is updated: say only what failed
                self._note_refused = api_reason(exc)
        return "updated", existing.html_url

    def publish_alert(self, report: Report):
        """``alert-issue``: one issue per environment while it fails (mlobs.github.alerts)."""
        from mlobs.github.alerts import AlertContext, AlertIssues

        if self.target.from_event_pr:
            self.actions.echo("alert-issue: not on pull requests (their verdict is the PR's own).")
            return None
        viewer = self._identity()
        if viewer is None:
            self.actions.echo("alert-issue: skipped, the token's account is unknown (it could "
                              "not tell its own alert issue from anyone else's).")
            return None
        context = AlertContext(title=report.title, summary=report.summary,
                               target_line=self._target_line(), results_url=self._comment_url,
                               run_url=self.context.run_url)
        state = self._run_state(report)
        new_incident = self._previous is not None and self._previous.verdict != "fail"
        outcome = AlertIssues(self._repo(), viewer, self.actions.redactor.text).sync(
            self._thread(report), state, context, new_incident=new_incident)
        if outcome.action in ("opened", "closed"):
            self.actions.echo(f"alert-issue: {outcome.action} #{outcome.number}")
        elif outcome.action == "muted":
            self.actions.echo("alert-issue: not reopened — a person closed this alert while the "
                              "same commit was failing.")
        return outcome

    def publish_workflow_annotations(self, annotations: list[Annotation]) -> None:
        """The most important annotations as workflow commands (a step shows only 10 of each
        level); the job summary has every result, and one notice says how many are not here."""
        ranked = sorted(annotations, key=lambda a: IMPORTANCE.get(a.level, 1))  # stable: file order
        for ann in ranked[:WORKFLOW_ANNOTATIONS_SHOWN]:
            self.actions.annotate(
                WORKFLOW_ANNOTATION_LEVEL.get(ann.level, "warning"),
                md.clip_bytes(ann.message, ANNOTATION_TEXT_LIMIT_BYTES),
                file=ann.path,
                line=ann.start_line if ann.path else None,
                end_line=ann.end_line if ann.path else None,
                title=md.clip(ann.title, md.TITLE_LIMIT) or None,
            )
        hidden = len(ranked) - WORKFLOW_ANNOTATIONS_SHOWN
        if hidden > 0:
            self.actions.annotate(
                "notice",
                f"{hidden} more result annotation{'s' if hidden > 1 else ''} not shown here "
                f"(GitHub shows {WORKFLOW_ANNOTATIONS_SHOWN} per step): every result is in the job "
                "summary.",
                title="More results in the job summary",
            )

    def render_dry_run(self, report: Report) -> list[Path]:
        out = self.settings.dry_run_dir
        files = {
            "comment.md": self.comment_markdown(report),
            "summary.md": self.summary_markdown(report),
            "check-run.json": json.dumps(self.check_run_requests(report), indent=2, default=str) + "\n",
            "outputs.json": json.dumps({"result": report.verdict.value, **report.outputs}, indent=2) + "\n",
        }
        # Already redacted (publish() redacted the report); written all or nothing, path in errors.
        return [write_text(out / name, content) for name, content in files.items()]

    # ---- rendering -----------------------------------------------------------------------

    def comment_markdown(self, report: Report) -> str:
        tag = sticky.render(self._thread(report), self._run_state(report))
        footer = self._footer()
        lines = "".join(f"{line}\n" for line in self._lines)
        head = f"{tag}\n## {md.text(md.clip(report.title, md.TITLE_LIMIT))}\n\n{lines}"
        room = md.COMMENT_LIMIT - md.utf16_size(head) - md.utf16_size(footer) - 2
        body = md.fit(report.body, room, md.utf16_size)
        return f"{head}{body}\n{footer}"

    def summary_markdown(self, report: Report) -> str:
        lines = "".join(f"{line}\n" for line in self._lines)
        return f"## {md.text(report.title)}\n\n{lines}{report.body}\n"

    def check_run_requests(self, report: Report) -> list[dict]:
        """The create request and its follow-up updates, each with at most 50 annotations, every
        field within GitHub's limits."""
        where = ", ".join(part for part in (self._environment(), report.key) if part)
        name = md.clip(f"mlobs {report.mode}" + (f" ({where})" if where else ""), md.TITLE_LIMIT)
        summary = self._target_line() + ("\n" if self._target_line() else "") + report.summary
        output_base = {
            "title": md.clip(report.title, md.TITLE_LIMIT),
            "summary": md.truncate_bytes(summary, md.CHECK_TEXT_LIMIT_BYTES, "the job summary"),
            "text": md.truncate_bytes(report.body, md.CHECK_TEXT_LIMIT_BYTES, "the job summary"),
        }
        requests = []
        # Only files in the repository can carry a check-run annotation.
        in_repo = [a for a in report.annotations if a.path]
        for i, batch in enumerate(annotation_batches(in_repo)):
            output = dict(output_base, annotations=[api_annotation(a) for a in batch])
            if i == 0:
                payload = {
                    "name": name,
                    "head_sha": self.target.sha,
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
        sha = f" on `{self.target.sha[:12]}`" if self.target.sha else ""
        return f"<sub>ml-observability-action · {run}{sha}</sub>\n"

    def _thread(self, report: Report) -> sticky.Thread:
        """One sticky comment per mode, comment-key and environment reported on."""
        return sticky.Thread(report.mode, report.key, self._environment())

    def _environment(self) -> str:
        """The environment as surfaces show it (and markers key it): redacted like the rest."""
        return self.actions.redactor.text(self.target.environment) if self.target.environment else ""

    def _run_state(self, report: Report) -> sticky.State:
        """The verdict this run records (one time for the comment and the alert issue)."""
        if self._state is None or self._state.verdict != report.verdict.value:
            deployment = self.target.deployment.id if self.target.deployment else None
            self._state = sticky.State.now(report.verdict.value, self.target.sha,
                                           self.context.run_id, deployment)
        return self._state

    def _target_line(self) -> str:
        return self.actions.redactor.text(
            targets.describe(self.target, self.context.server_url, self.context.repository))

    def _where(self) -> str:
        return f"in {md.code(self._environment(), table=False)}" if self.target.environment else ""

    # ---- API plumbing --------------------------------------------------------------------

    def _gh(self) -> Github:
        if self._github is None:
            from mlobs.github.api import github_client

            self._github = github_client(self.settings.token or "", self.context.api_url,
                                         write_interval=self.settings.write_interval)
        return self._github

    def _repo(self) -> Repository:
        return self._gh().get_repo(self.context.repository)

    def _identity(self) -> str | None:
        """The login the token acts as, whose comments alone a sticky update may edit.

        GraphQL's ``viewer`` answers every kind of token: ``github-actions[bot]`` for the job's
        GITHUB_TOKEN, ``<app-slug>[bot]`` for another GitHub App's installation token, the user for
        a personal access token — the very login REST shows as a comment's ``user.login``. (REST
        ``GET /user`` refuses installation tokens, and ``GET /app`` needs the app's JWT.)
        """
        if self._viewer is None:
            from github import GithubException

            try:
                _, data = self._gh().requester.graphql_query(VIEWER_QUERY, {})
                self._viewer = str(data["data"]["viewer"]["login"])
            except (GithubException, OSError, KeyError, TypeError) as exc:
                reason = _api_reason(exc) if isinstance(exc, GithubException) else type(exc).__name__
                self.actions.echo(
                    f"Could not learn which account the token acts as ({reason}): adding a new "
                    "comment rather than editing one that might be someone else's."
                )
                self._viewer = ""
        return self._viewer or None


def api_annotation(annotation: Annotation) -> dict:
    """An annotation as the Checks API takes it, within its limits (title 255 characters,
    message and raw_details 64 KB)."""
    data = annotation.to_api()
    data["message"] = md.clip_bytes(data["message"], ANNOTATION_TEXT_LIMIT_BYTES)
    if "title" in data:
        data["title"] = md.clip(data["title"], md.TITLE_LIMIT)
    if "raw_details" in data:
        data["raw_details"] = md.clip_bytes(data["raw_details"], ANNOTATION_TEXT_LIMIT_BYTES)
    return data


def _first_with_marker(comments, thread: sticky.Thread, owner: str):
    """Our sticky comment: its first line is the thread's marker AND the token's own account wrote
    it (anyone can start a comment with the marker; editing theirs would post over a human)."""
    for comment in comments:
        author = getattr(comment.user, "login", None) if comment.user else None
        if author != owner:
            continue
        found = sticky.parse(comment.body)
        if found is not None and sticky.same_thread(found.thread, thread):
            return comment
    return None


def _lookup_reason(exc: Exception) -> str:
    from github import GithubException

    if isinstance(exc, GithubException):
        return api_reason(exc)
    return f"GitHub API unreachable ({type(exc).__name__}: {exc})"


def _api_reason(exc) -> str:
    return api_reason(exc)


def _refusal_hint(status: int | None, what: str = "") -> str:
    """What to do about it — only a permission problem is blamed on permissions."""
    summary = "The results are in the job summary and annotations."
    if status in (401, 403, 404):
        grant = ("`permissions: issues: write`" if what == "alert issue"
                 else "`permissions: checks: write, pull-requests: write`")
        return (f"{summary} A read-only token is expected for pull requests from forks; otherwise "
                f"grant {grant}.")
    if status is None:
        return summary
    return f"{summary} GitHub refused the request as sent: please report it with this message."
