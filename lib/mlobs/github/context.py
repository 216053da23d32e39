"""Where the action runs: repository, commit and pull request, from ``GITHUB_*`` and the event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError

PR_EVENTS = ("pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment")


@dataclass(frozen=True)
class GithubContext:
    repository: str | None = None  # owner/name
    sha: str | None = None  # the commit to report on (a PR's head, not the merge commit)
    event_name: str | None = None
    pr_number: int | None = None
    api_url: str = "https://api.github.com"
    server_url: str = "https://github.com"
    run_id: str | None = None
    workflow: str | None = None
    event: Mapping = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GithubContext:
        event: dict = {}
        event_path = env.get("GITHUB_EVENT_PATH")
        if event_path and Path(event_path).is_file():
            try:
                event = json.loads(Path(event_path).read_text(encoding="utf-8") or "{}")
            except json.JSONDecodeError as exc:
                raise ConfigError(f"GITHUB_EVENT_PATH {event_path} is not valid JSON: {exc}") from exc
        event_name = env.get("GITHUB_EVENT_NAME") or None
        sha = env.get("GITHUB_SHA") or None
        pr_number = None
        pull = event.get("pull_request") if isinstance(event, dict) else None
        if event_name in PR_EVENTS and isinstance(pull, dict):
            pr_number = pull.get("number") or event.get("number")
            # GITHUB_SHA is the merge commit on pull_request; reviewers look at the head commit.
            sha = (pull.get("head") or {}).get("sha") or sha
        deployment = event.get("deployment") if isinstance(event, dict) else None
        if event_name == "deployment_status" and isinstance(deployment, dict):
            sha = deployment.get("sha") or sha  # the deployed commit (GITHUB_SHA says the same)
        return cls(
            repository=env.get("GITHUB_REPOSITORY") or None,
            sha=sha,
            event_name=event_name,
            pr_number=int(pr_number) if pr_number else None,
            api_url=(env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
            server_url=(env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
            run_id=env.get("GITHUB_RUN_ID") or None,
            workflow=env.get("GITHUB_WORKFLOW") or None,
            event=event,
        )

    @property
    def run_url(self) -> str | None:
        if self.repository and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None

    @property
    def can_call_api(self) -> bool:
        return bool(self.repository and self.sha)
