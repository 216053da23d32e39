"""Typed, validated settings: read once from the CLI (which reads flags, env and action inputs).

Nothing below the CLI reads ``os.environ`` for configuration; settings objects are passed down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError
from mlobs.github.reporter import CommentMode, ReportSettings
from mlobs.redact import Redactor
from mlobs.result import FailOn


@dataclass(frozen=True)
class CommonSettings:
    mode: str
    github_token: str | None = field(default=None, repr=False)
    comment_mode: CommentMode = CommentMode.STICKY
    comment_key: str = ""
    check_run: bool = True
    fail_on: FailOn = FailOn.VIOLATION
    dry_run: bool = False
    working_directory: Path = Path(".")
    output_dir: Path = Path(".mlobs")
    model_version: str | None = None
    baseline_version: str | None = None
    commit_sha: str | None = None
    deployment_environment: str | None = None
    alert_issue: bool = False
    # The run's one redaction step (every results file a mode writes passes it).
    redactor: Redactor = field(default_factory=Redactor, repr=False, compare=False)

    @classmethod
    def build(cls, mode: str, params: Mapping[str, object],
              redactor: Redactor | None = None) -> CommonSettings:
        workdir = Path(str(params.get("working_directory") or ".")).expanduser()
        if not workdir.is_dir():
            raise ConfigError(f"working-directory {str(workdir)!r} is not a directory")
        workdir = workdir.resolve()
        output_dir = resolve(workdir, str(params.get("output_dir") or ".mlobs"))
        return cls(
            mode=mode,
            github_token=_blank_to_none(params.get("github_token")),
            comment_mode=CommentMode(params.get("comment_mode") or "sticky"),
            comment_key=str(params.get("comment_key") or ""),
            check_run=bool(params.get("check_run", True)),
            fail_on=FailOn(params.get("fail_on") or "violation"),
            dry_run=bool(params.get("dry_run", False)),
            working_directory=workdir,
            output_dir=output_dir,
            model_version=_blank_to_none(params.get("model_version")),
            baseline_version=_blank_to_none(params.get("baseline_version")),
            commit_sha=_commit_sha(params.get("commit_sha")),
            deployment_environment=_environment(params.get("deployment_environment")),
            alert_issue=bool(params.get("alert_issue", False)),
            redactor=redactor if redactor is not None else Redactor.from_inputs(params, os.environ),
        )

    def report_settings(self, env: Mapping[str, str] | None = None) -> ReportSettings:
        env = os.environ if env is None else env
        try:
            interval = float(env.get("MLOBS_GITHUB_WRITE_INTERVAL", "1.0"))
        except ValueError as exc:
            raise ConfigError("MLOBS_GITHUB_WRITE_INTERVAL must be a number of seconds") from exc
        return ReportSettings(
            token=self.github_token,
            comment_mode=self.comment_mode,
            check_run=self.check_run,
            dry_run=self.dry_run,
            dry_run_dir=self.output_dir / "dry-run" / self.mode,
            write_interval=interval,
            commit_sha=self.commit_sha,
            deployment_environment=self.deployment_environment,
            alert_issue=self.alert_issue,
        )


def resolve(workdir: Path, value: str) -> Path:
    """A user path relative to the working directory (absolute paths are kept as given)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else workdir / path


def _commit_sha(value: object) -> str | None:
    """A full commit SHA (40 hex digits; 64 in SHA-256 repositories): check runs need one."""
    text = _blank_to_none(value)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", text):
        raise ConfigError(f"commit-sha must be a full commit SHA (40 hexadecimal digits), got {text!r}",
                          hint="e.g. ${{ github.event.workflow_run.head_sha }}")
    return text.lower()


def _environment(value: object) -> str | None:
    """A GitHub environment name: one line (it is sent as a query parameter and shown)."""
    text = _blank_to_none(value)
    if text is not None and ("\n" in text or "\r" in text or len(text) > 255):
        raise ConfigError(f"deployment-environment must be one environment name, got {text!r}")
    return text


def _blank_to_none(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
