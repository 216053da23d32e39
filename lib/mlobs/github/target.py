"""Which commit a run reports on, and which pull request shipped it.

The commit:
- ``commit-sha`` given: that commit, whatever the event;
- ``deployment-environment`` given, on any event but a pull request: the commit of the latest
  successful GitHub deployment to that environment (Deployments API: the environment's
  deployments newest first, and each one's statuses newest first — the first deployment whose
  latest status is ``success`` is what runs; one whose latest status is ``inactive`` was replaced
  or torn down, one still ``in_progress`` or ``failure`` never replaced it). On a
  ``deployment_status`` event of that environment with state ``success`` the event's own
  deployment is used (no lookup, no race with the API);
- otherwise the event's commit: a pull request's head, the deployment's commit on
  ``deployment_status``, ``GITHUB_SHA`` on push, schedule and dispatch.

On a pull request the PR's own head is always reported (its own results); ``deployment-environment``
there names the environment whose latest verdict the comment quotes for reviewers
(:mod:`mlobs.github.production`). It keys the sticky comment, the check run's name and the alert
issue only when the run reports on that environment.

The pull request: an open PR whose head is the commit; else the merged PR that brought it in
(``GET /repos/{o}/{r}/commits/{sha}/pulls`` lists the merged one for a commit of the default
branch; the one whose merge commit it is wins, else the first merged); else none, and the
comment goes on the commit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlobs.github import markdown as md
from mlobs.github.api import json_pages
from mlobs.github.context import PR_EVENTS, GithubContext
from mlobs.github.sticky import human_time

if TYPE_CHECKING:
    from github.Repository import Repository

SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1, or SHA-256 repositories
# Deployments looked at before giving up (one page at GitHub's maximum page size).
DEPLOYMENTS_SCANNED = 100
STATUS_RETENTION_DAYS = 90  # GitHub deletes deployment statuses older than this


class NoDeployment(Exception):
    """No deployment of the environment is known to be live: nothing to report on."""


@dataclass(frozen=True)
class Deployment:
    id: int
    sha: str
    environment: str
    live_since: datetime | None = None  # the first of its latest run of `success` statuses
    ref: str = ""


@dataclass(frozen=True)
class PullRef:
    number: int
    merged: bool = False


@dataclass(frozen=True)
class Target:
    """What a run reports on."""

    sha: str | None
    environment: str = ""  # the environment reported on ("" when none): keys the sticky comment
    deployment: Deployment | None = None
    pull: PullRef | None = None
    from_event_pr: bool = False  # a pull_request event: the PR is the event's, no lookup
    lookup_pull: bool = False  # push/schedule/… or a given sha: find the PR through the API
    needs_deployment: bool = False  # the sha comes from the Deployments API

    @property
    def pr_number(self) -> int | None:
        return self.pull.number if self.pull else None


def initial(context: GithubContext, commit_sha: str | None, environment: str | None) -> Target:
    """What is known without asking GitHub."""
    environment = (environment or "").strip()
    on_pr = context.event_name in PR_EVENTS and context.pr_number is not None
    if commit_sha:
        return Target(commit_sha, environment, lookup_pull=True)
    if environment and not on_pr:
        event = event_deployment(context.event, environment)
        if event is not None:
            return Target(event.sha, environment, event, lookup_pull=True)
        return Target(None, environment, needs_deployment=True, lookup_pull=True)
    if on_pr:
        return Target(context.sha, "", pull=PullRef(context.pr_number), from_event_pr=True)
    return Target(context.sha, "", lookup_pull=True)


def with_deployment(target: Target, repo: Repository) -> Target:
    """The deployed commit, through the Deployments API (raises :class:`NoDeployment`)."""
    if not target.needs_deployment:
        return target
    deployment = latest_successful_deployment(repo, target.environment)
    return replace(target, sha=deployment.sha, deployment=deployment, needs_deployment=False)


def with_pull(target: Target, repo: Repository) -> Target:
    """The pull request of the commit, through the API (open head, else merged, else none)."""
    if not target.lookup_pull or not target.sha:
        return target
    return replace(target, pull=pull_request_for(repo, target.sha), lookup_pull=False)


def event_deployment(event: Mapping, environment: str) -> Deployment | None:
    """The deployment of a ``deployment_status`` event, when it is a success of ``environment``."""
    deployment = event.get("deployment") if isinstance(event, Mapping) else None
    status = event.get("deployment_status") if isinstance(event, Mapping) else None
    if not isinstance(deployment, Mapping) or not isinstance(status, Mapping):
        return None
    sha = str(deployment.get("sha") or "")
    if (status.get("state") != "success" or deployment.get("environment") != environment
            or not SHA.fullmatch(sha)):
        return None
    return Deployment(int(deployment.get("id") or 0), sha, environment,
                      _time(status.get("created_at")), str(deployment.get("ref") or ""))


def latest_successful_deployment(repo: Repository, environment: str) -> Deployment:
    """The newest deployment to ``environment`` whose latest status is ``success``."""
    scanned = expired = 0
    for deployment in json_pages(repo.requester, f"{repo.url}/deployments",
                                 {"environment": environment}, limit=DEPLOYMENTS_SCANNED):
        scanned += 1
        latest, live_since = None, None
        for status in json_pages(repo.requester, f"{repo.url}/deployments/{deployment['id']}/statuses"):
            latest = latest or status.get("state")  # newest first
            if status.get("state") != "success":
                break
            live_since = status.get("created_at")
        sha = str(deployment.get("sha") or "")
        if latest is None:
            expired += 1
        elif latest == "success" and SHA.fullmatch(sha):
            return Deployment(int(deployment["id"]), sha, environment, _time(live_since),
                              str(deployment.get("ref") or ""))
    if scanned == 0:
        seen = _environments(repo)
        others = (f"; environments with deployments: {', '.join(map(repr, seen))}" if seen
                  else "; this repository has no deployments")
        raise NoDeployment(f"no deployment to environment {environment!r} found{others}")
    message = (f"no successful deployment to environment {environment!r} among its {scanned} "
               "latest deployments")
    if expired:
        message += (f" ({expired} of them have no statuses left: GitHub deletes deployment statuses "
                    f"after {STATUS_RETENTION_DAYS} days; pass commit-sha to name the running commit)")
    raise NoDeployment(message)


def _environments(repo: Repository) -> list[str]:
    """The environments of the latest deployments (a typo in the input is the likely cause)."""
    return sorted({str(d["environment"]) for d in json_pages(repo.requester, f"{repo.url}/deployments",
                                                              limit=DEPLOYMENTS_SCANNED)
                   if d.get("environment")})


def pull_request_for(repo: Repository, sha: str) -> PullRef | None:
    """An open PR whose head is ``sha``; else the merged PR that brought it in; else None."""
    merged = []
    for pr in json_pages(repo.requester, f"{repo.url}/commits/{sha}/pulls"):
        if pr.get("state") == "open" and (pr.get("head") or {}).get("sha") == sha:
            return PullRef(int(pr["number"]))
        if pr.get("merged_at"):
            merged.append(pr)
    if not merged:
        return None
    exact = [pr for pr in merged if pr.get("merge_commit_sha") == sha]
    chosen = exact[0] if exact else min(merged, key=lambda pr: _time(pr["merged_at"]) or datetime.max.replace(tzinfo=UTC))
    return PullRef(int(chosen["number"]), merged=True)


def describe(target: Target, server_url: str, repository: str | None) -> str:
    """One Markdown line saying what was reported on (empty for a plain PR or commit run)."""
    if not target.environment or not target.sha:
        return ""
    base = f"{server_url}/{repository}" if repository else ""
    commit = f"[`{target.sha[:12]}`]({md.url(f'{base}/commit/{target.sha}')})" if base else \
        f"`{target.sha[:12]}`"
    env = md.code(target.environment, table=False)
    if target.deployment is not None:
        dep = target.deployment
        since = f", live since {human_time(dep.live_since)}" if dep.live_since else ""
        line = f"**Running in {env}:** deployment {dep.id} of {commit}{since}"
    else:
        line = f"**Reported for {env}:** commit {commit} (given as `commit-sha`)"
    if target.pull is not None and base:
        how = "shipped by" if target.pull.merged else "from"
        line += f" — {how} [#{target.pull.number}]({md.url(f'{base}/pull/{target.pull.number}')})"
    return line + ".\n"


def _time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
