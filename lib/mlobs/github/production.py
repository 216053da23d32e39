"""A reviewer's view: on a pull request, the latest verdict of the version running in an
environment, quoted next to the PR's own results.

The source is the sticky comment that the scheduled run keeps on the running commit's pull request
(or on the commit itself when no PR shipped it). Its marker carries the verdict, the commit, the
time and the run machine-readably (:mod:`mlobs.github.sticky`), and it is trusted only when the
token's own account wrote it — the same rule that decides which comment a run may edit. Why this
and not the scheduled run's results artifact: the comment is found with the permissions a pull
request's workflow already has (reading deployments and comments; downloading another run's
artifact needs ``actions: read``, the run's id and an unzip), it is exactly what the author of the
running change sees, it cannot be older than the last verdict shown to people, and it outlives the
artifact retention period.

Every outcome is said honestly: the verdict with its time and age; "no verdict yet" when the
running commit has none (or only one for another commit); "no successful deployment"; and
"could not look it up", quoting GitHub, when the token may not read deployments or comments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlobs.github import markdown as md
from mlobs.github import sticky
from mlobs.github.api import api_reason
from mlobs.github.target import NoDeployment, latest_successful_deployment, pull_request_for

if TYPE_CHECKING:
    from github.Repository import Repository


def production_line(repo: Repository, environment: str, viewer: str | None, server_url: str,
                    repository: str, now: datetime | None = None) -> str:
    """One Markdown paragraph for a pull request's comment."""
    from github import GithubException

    now = now or datetime.now(UTC)
    head = f"**Running in {md.code(environment, table=False)}:**"
    base = f"{server_url}/{repository}"
    try:
        deployment = latest_successful_deployment(repo, environment)
    except NoDeployment as exc:
        return f"{head} no production verdict — {md.text(str(exc))}.\n"
    except (GithubException, OSError) as exc:
        return f"{head} could not look up the running version ({md.text(_reason(exc))}).\n"
    commit = f"[`{deployment.sha[:12]}`]({md.url(f'{base}/commit/{deployment.sha}')})"
    running = f"deployment {deployment.id} of {commit}"
    if deployment.live_since:
        running += f", live since {sticky.human_time(deployment.live_since)}"
    if viewer is None:
        return (f"{head} {running}; its verdict is not shown: the token's account could not be "
                "learned, so who wrote the verdict cannot be checked.\n")
    try:
        pull = pull_request_for(repo, deployment.sha)
        if pull is not None:
            running += f" — shipped by [#{pull.number}]({md.url(f'{base}/pull/{pull.number}')})"
            comments = repo.get_issue(pull.number).get_comments()
        else:
            comments = repo.get_commit(deployment.sha).get_comments()
        found = _verdicts(comments, environment, viewer)
    except (GithubException, OSError) as exc:
        return (f"{head} {running}; could not read its verdict ({md.text(_reason(exc))}).\n")
    current = [(m, url) for m, url in found if m.state.sha == deployment.sha]
    if not current:
        older = [m for m, _ in found if m.state.sha]
        note = (f" (the last one there was for `{older[0].state.sha[:12]}`)" if older else "")
        return f"{head} {running}; no verdict yet for this version{note}.\n"
    parts = []
    for marker, url in sorted(current, key=lambda item: item[0].thread.name):
        state = marker.state
        age = _age(now, state.at)
        parts.append(f"{sticky.verdict_words(state.verdict)} ({md.text(marker.thread.name)}, "
                     f"{sticky.human_time(state.at)}{age}, [details]({md.url(url)}))")
    return f"{head} {'; '.join(parts)} — {running}.\n"


def _verdicts(comments, environment: str, viewer: str) -> list[tuple[sticky.Marker, str]]:
    """Sticky markers with a state for ``environment``, written by the token's own account."""
    found = []
    for comment in comments:
        author = getattr(comment.user, "login", None) if comment.user else None
        if author != viewer:
            continue
        marker = sticky.parse(comment.body)
        if marker and marker.state and marker.thread.environment == environment:
            found.append((marker, comment.html_url))
    found.sort(key=lambda item: item[0].state.at, reverse=True)
    return found


def _age(now: datetime, at: datetime) -> str:
    seconds = (now - at).total_seconds()
    if seconds < 0:
        return ""
    hours = seconds / 3600
    if hours < 1:
        return f", {int(seconds // 60)} min ago"
    if hours < 48:
        return f", {int(hours)} h ago"
    return f", {int(hours // 24)} days ago"


def _reason(exc: Exception) -> str:
    from github import GithubException

    if isinstance(exc, GithubException):
        return api_reason(exc)
    return f"GitHub API unreachable ({type(exc).__name__})"
