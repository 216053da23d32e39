"""What reporting on the running version costs in GitHub API requests (and time) per hourly run.

GitHub's job token may send about 1,000 REST requests an hour per repository, shared by every
workflow; an hourly job should stay a handful. Baseline, in the same process: a scheduled run as
before issue 12 (no new inputs: check run and sticky comment on GITHUB_SHA). Every scenario runs the
real reporter through PyGithub over HTTP against the loopback GitHub (tests/servers/github.py),
after one warm-up run that creates the sticky comment (and alert issue) a steady state has.

Usage: python bench/github_requests.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mlobs.github.actions import GithubActions  # noqa: E402
from mlobs.github.context import GithubContext  # noqa: E402
from mlobs.github.reporter import Reporter, ReportSettings  # noqa: E402
from mlobs.result import Report, Verdict  # noqa: E402
from servers.github import GithubDouble  # noqa: E402

DEPLOYED, LATER = "d" * 40, "e" * 40


def seed(github: GithubDouble, failed_after: int) -> None:
    github.add_pull(DEPLOYED, 12, state="closed", merged_at="2025-05-30T09:00:00Z", merge_commit_sha=DEPLOYED)
    github.add_deployment(DEPLOYED, "production", "2025-05-30T10:00:00Z",
                          [("in_progress", "2025-05-30T10:01:00Z"), ("success", "2025-05-30T10:06:00Z")])
    for i in range(failed_after):  # later deployments that never went live
        github.add_deployment(LATER, "production", f"2025-06-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
                              [("in_progress", "2025-06-01T00:00:00Z"), ("failure", "2025-06-01T00:05:00Z")])


def env_for(github: GithubDouble, folder: Path, event: str) -> dict[str, str]:
    folder = folder / event  # one event file per event
    folder.mkdir(exist_ok=True)
    output, summary, path = folder / "out", folder / "summary", folder / "event.json"
    output.touch()
    summary.touch()
    payload = ({"number": 7, "pull_request": {"number": 7, "head": {"sha": "a" * 40}}}
               if event == "pull_request" else {"schedule": "17 * * * *"})
    path.write_text(json.dumps(payload))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": github.repo, "GITHUB_SHA": LATER,
            "GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": str(path), "GITHUB_API_URL": github.url,
            "GITHUB_SERVER_URL": "https://github.example", "GITHUB_RUN_ID": "1",
            "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}


def one_run(github, env, verdict, **settings) -> None:
    report = Report(mode="slo-validate", verdict=verdict, title="SLO validation", summary="s", body="b")
    Reporter(ReportSettings(token=github.token, write_interval=0, **settings),
             GithubContext.from_env(env), GithubActions(stream=io.StringIO(), env=env)).publish(report)


SCENARIOS = [
    # name, event, settings, warm-up verdict, measured verdict, later failed deployments
    ("before issue 12: scheduled run on GITHUB_SHA", "schedule", {}, Verdict.PASS, Verdict.PASS, 0),
    ("deployment-environment, verdict unchanged", "schedule",
     {"deployment_environment": "production"}, Verdict.PASS, Verdict.PASS, 0),
    ("… + alert-issue, passing (no issue open)", "schedule",
     {"deployment_environment": "production", "alert_issue": True}, Verdict.PASS, Verdict.PASS, 0),
    ("… + alert-issue, still failing (issue updated)", "schedule",
     {"deployment_environment": "production", "alert_issue": True}, Verdict.FAIL, Verdict.FAIL, 0),
    ("… + alert-issue, verdict changes to fail (note + issue opened)", "schedule",
     {"deployment_environment": "production", "alert_issue": True}, Verdict.PASS, Verdict.FAIL, 0),
    ("deployment-environment, 10 failed deployments since the live one", "schedule",
     {"deployment_environment": "production"}, Verdict.PASS, Verdict.PASS, 10),
    ("pull request with the reviewer's production line", "pull_request",
     {"deployment_environment": "production"}, Verdict.PASS, Verdict.PASS, 0),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows, baseline = [], None
    for name, event, settings, warm, measured, failed_after in SCENARIOS:
        counts, times = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp, GithubDouble() as github:
                seed(github, failed_after)
                env = env_for(github, Path(tmp), event)
                if event == "pull_request":  # the production verdict the PR quotes
                    one_run(github, env_for(github, Path(tmp), "schedule"), Verdict.FAIL,
                            deployment_environment="production")
                one_run(github, env, warm, **settings)
                before = len(github.requests)
                start = time.perf_counter()
                one_run(github, env, measured, **settings)
                times.append(time.perf_counter() - start)
                counts.append(len(github.requests) - before)
        assert len(set(counts)) == 1, counts  # the same run sends the same requests
        median = statistics.median(times)
        baseline = baseline or (counts[0], median)
        rows.append((name, counts[0], median))
    print("| hourly run | API requests | × baseline | median time | × baseline |")
    print("|---|---|---|---|---|")
    for name, count, median in rows:
        print(f"| {name} | {count} | {count / baseline[0]:.1f}× | {median * 1000:.0f} ms | "
              f"{median / baseline[1]:.1f}× |")


if __name__ == "__main__":
    main()
