"""Production verdicts reach the pull request that shipped the running version (issue 12).

Against the loopback GitHub, through PyGithub and real HTTP: deployments and their statuses for
two environments, the merged pull request of the deployed commit, and a later, unrelated commit
on main (GITHUB_SHA of a scheduled run). Which deployment runs is computed again here, in a few
plain lines over the seeded data, not with the action's code.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli
from mlobs.github.actions import GithubActions
from mlobs.github.alerts import LABEL
from mlobs.github.context import GithubContext
from mlobs.github.reporter import Reporter, ReportSettings
from mlobs.github.sticky import Thread
from mlobs.github.sticky import parse as parse_marker
from mlobs.result import Report, Verdict

DEPLOYED = "d" * 40  # what runs in production: merged by PR #12
OLDER = "0a" * 20  # production before it
LATER = "e" * 40  # a later commit on main (PR #13): deployed to staging, failed in production
PR_DEPLOYED, PR_LATER = 12, 13


@pytest.fixture
def loop(github):
    """Two environments' deployments, newest last; see the module docstring."""
    github.add_pull(DEPLOYED, PR_DEPLOYED, state="closed", merged_at="2025-05-30T09:00:00Z",
                    merge_commit_sha=DEPLOYED, title="Faster resize")
    github.add_pull(LATER, PR_LATER, state="closed", merged_at="2025-05-31T09:00:00Z",
                    merge_commit_sha=LATER, title="Unrelated docs")
    github.add_deployment(OLDER, "production", "2025-05-20T10:00:00Z", [
        ("in_progress", "2025-05-20T10:00:30Z"), ("success", "2025-05-20T10:05:00Z"),
        ("inactive", "2025-05-30T10:06:00Z")])
    github.add_deployment(DEPLOYED, "staging", "2025-05-30T09:30:00Z", [
        ("success", "2025-05-30T09:35:00Z"), ("inactive", "2025-05-31T09:35:00Z")])
    github.add_deployment(DEPLOYED, "production", "2025-05-30T10:00:00Z", [
        ("queued", "2025-05-30T10:00:00Z"), ("in_progress", "2025-05-30T10:01:00Z"),
        ("success", "2025-05-30T10:06:00Z")])
    github.add_deployment(LATER, "staging", "2025-05-31T09:30:00Z", [
        ("success", "2025-05-31T09:35:00Z")])
    github.add_deployment(LATER, "production", "2025-05-31T10:00:00Z", [
        ("in_progress", "2025-05-31T10:01:00Z"), ("failure", "2025-05-31T10:09:00Z")])
    return github


def running(github, environment: str) -> tuple[dict, str]:
    """Independently: the newest deployment of the environment whose latest status is success,
    and the time of its success."""
    candidates = sorted((d for d in github.state.deployments if d["environment"] == environment),
                        key=lambda d: d["created_at"], reverse=True)
    for deployment in candidates:
        statuses = github.state.deployment_statuses[deployment["id"]]
        if statuses and statuses[-1]["state"] == "success":
            return deployment, statuses[-1]["created_at"]
    raise AssertionError("nothing runs")


def scheduled_env(gha_env, tmp_path, run_id="5001"):
    event = tmp_path / "schedule.json"
    event.write_text(json.dumps({"schedule": "17 * * * *"}))
    return dict(gha_env, GITHUB_EVENT_NAME="schedule", GITHUB_SHA=LATER, GITHUB_EVENT_PATH=str(event),
                GITHUB_RUN_ID=run_id)


def report(verdict=Verdict.PASS, body="results table", key="") -> Report:
    words = {Verdict.PASS: "2 passed", Verdict.FAIL: "1 failed, 1 passed",
             Verdict.INCONCLUSIVE: "2 inconclusive", Verdict.ERROR: "could not evaluate"}[verdict]
    return Report(mode="slo-validate", verdict=verdict, title=f"SLO validation: {words}",
                  summary=f"**{verdict.value}** — {words}", body=body, key=key)


def publish(env, stream, verdict=Verdict.PASS, environment="production", **settings):
    settings.setdefault("write_interval", 0)
    settings.setdefault("alert_issue", False)
    reporter = Reporter(ReportSettings(token="t0ken", deployment_environment=environment, **settings),
                        GithubContext.from_env(env), GithubActions(stream=stream, env=env))
    return reporter.publish(report(verdict))


def writes(github):
    return [r for r in github.requests if r.method in ("POST", "PATCH") and r.path != "/graphql"]


# ---- item 1, 2, 4: which commit, which pull request, where the check run goes -----------------

def test_a_scheduled_run_reports_on_the_deployed_commit_and_its_merged_pr(loop, gha_env, stream, tmp_path):
    deployment, live = running(loop, "production")
    assert deployment["sha"] == DEPLOYED  # the fixture is what the test claims

    published = publish(scheduled_env(gha_env, tmp_path), stream)

    assert not published.refused, published.refused
    assert (published.sha, published.pull_request, published.deployment_id) == (
        DEPLOYED, PR_DEPLOYED, deployment["id"])
    # the comment goes on the merged PR that shipped it, not on main's head or its PR
    assert set(loop.state.issue_comments) == {PR_DEPLOYED}
    assert not loop.state.commit_comments
    body = loop.state.issue_comments[PR_DEPLOYED][0]["body"]
    marker = parse_marker(body)
    assert marker.thread == Thread("slo-validate", "", "production")
    assert (marker.state.verdict, marker.state.sha, marker.state.run, marker.state.deployment) == (
        "pass", DEPLOYED, "5001", deployment["id"])
    live_words = datetime.fromisoformat(live.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    assert (f"**Running in `production`:** deployment {deployment['id']} of "
            f"[`{DEPLOYED[:12]}`](https://github.example/acme/models/commit/{DEPLOYED}), live since "
            f"{live_words} — shipped by [#{PR_DEPLOYED}](https://github.example/acme/models/pull/"
            f"{PR_DEPLOYED}).") in body
    # the check run sits on the deployed commit, named for the environment
    (check,) = loop.state.check_runs.values()
    assert check["head_sha"] == DEPLOYED and check["name"] == "mlobs slo-validate (production)"
    assert f"deployment {deployment['id']}" in check["output"]["summary"]
    # nothing was written about the later commit
    assert all(LATER not in json.dumps(r.body) for r in writes(loop))
    summary = Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert f"deployment {deployment['id']}" in summary and live_words in summary
    # the lookups asked for exactly the environment, newest first, within GitHub's page size
    (listing,) = loop.calls("GET", r"/deployments$")
    assert listing.query == {"environment": ["production"], "per_page": ["100"]}


def test_the_other_environment_runs_the_later_commit(loop, gha_env, stream, tmp_path):
    deployment, _ = running(loop, "staging")
    assert deployment["sha"] == LATER
    published = publish(scheduled_env(gha_env, tmp_path), stream, environment="staging")
    assert (published.sha, published.pull_request) == (LATER, PR_LATER)
    (check,) = loop.state.check_runs.values()
    assert check["head_sha"] == LATER and check["name"] == "mlobs slo-validate (staging)"
    assert parse_marker(loop.state.issue_comments[PR_LATER][0]["body"]).thread.environment == "staging"


def test_a_deployment_status_event_uses_its_own_deployment(loop, gha_env, stream, tmp_path):
    deployment, live = running(loop, "production")
    event = tmp_path / "deployment_status.json"
    event.write_text(json.dumps({
        "deployment": {"id": deployment["id"], "sha": DEPLOYED, "ref": "main", "environment": "production"},
        "deployment_status": {"state": "success", "created_at": live, "environment": "production"}}))
    env = dict(gha_env, GITHUB_EVENT_NAME="deployment_status", GITHUB_SHA=DEPLOYED,
               GITHUB_EVENT_PATH=str(event))
    published = publish(env, stream)
    assert (published.sha, published.pull_request, published.deployment_id) == (
        DEPLOYED, PR_DEPLOYED, deployment["id"])
    assert not loop.calls("GET", r"/deployments")  # no lookup, no race with the API


def test_without_the_new_inputs_a_deployment_status_event_reports_its_commit_as_before(
        loop, gha_env, stream, tmp_path):
    event = tmp_path / "deployment_status.json"
    event.write_text(json.dumps({"deployment": {"id": 1, "sha": LATER, "environment": "staging"},
                                 "deployment_status": {"state": "success"}}))
    env = dict(gha_env, GITHUB_EVENT_NAME="deployment_status", GITHUB_SHA=LATER,
               GITHUB_EVENT_PATH=str(event))
    published = publish(env, stream, environment=None)
    assert (published.sha, published.pull_request) == (LATER, PR_LATER)
    # today's marker: no environment in it
    assert parse_marker(loop.state.issue_comments[PR_LATER][0]["body"]).thread == Thread("slo-validate")


def test_commit_sha_reports_on_that_commit(loop, gha_env, stream, tmp_path):
    published = publish(scheduled_env(gha_env, tmp_path), stream, environment=None, commit_sha=DEPLOYED)
    assert (published.sha, published.pull_request) == (DEPLOYED, PR_DEPLOYED)
    assert next(iter(loop.state.check_runs.values()))["head_sha"] == DEPLOYED
    assert not loop.calls("GET", r"/deployments")


def test_an_open_pr_whose_head_is_the_commit_wins_over_a_merged_one(github, gha_env, stream, tmp_path):
    sha = "f" * 40
    github.add_pull(sha, 30, state="closed", merged_at="2025-05-01T00:00:00Z", merge_commit_sha="1" * 40)
    github.add_pull(sha, 31, state="open")
    github.add_pull(sha, 32, state="open", head_sha="2" * 40)  # contains it, head moved on
    published = publish(scheduled_env(gha_env, tmp_path), stream, environment=None, commit_sha=sha)
    assert published.pull_request == 31


def test_a_commit_no_pr_shipped_gets_a_commit_comment(github, gha_env, stream, tmp_path):
    sha = "c" * 40
    github.add_pull(sha, 40, state="open", head_sha="3" * 40)  # an open PR whose head is not it
    github.add_deployment(sha, "production", "2025-06-01T00:00:00Z", [("success", "2025-06-01T00:02:00Z")])
    published = publish(scheduled_env(gha_env, tmp_path), stream)
    assert published.pull_request is None and published.sha == sha
    assert len(github.state.commit_comments[sha]) == 1 and not github.state.issue_comments


def test_no_successful_deployment_posts_nothing_on_a_wrong_commit(loop, gha_env, stream, tmp_path):
    published = publish(scheduled_env(gha_env, tmp_path), stream, environment="prodution")
    assert not loop.state.check_runs and not loop.state.issue_comments and not loop.state.commit_comments
    out = stream.getvalue()
    (warning,) = [line for line in out.splitlines() if line.startswith("::warning::")]
    assert "no deployment to environment 'prodution' found" in warning
    assert "environments with deployments: 'production', 'staging'" in warning
    assert published.refused and "SLO validation" in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "result=pass" in Path(gha_env["GITHUB_OUTPUT"]).read_text()  # the verdict still stands


def test_statuses_gone_after_90_days_are_said_not_guessed(github, gha_env, stream, tmp_path):
    github.add_deployment("9" * 40, "production", "2024-01-01T00:00:00Z", [])  # statuses expired
    github.add_deployment("8" * 40, "production", "2025-06-01T00:00:00Z", [("failure", "2025-06-01T00:03:00Z")])
    publish(scheduled_env(gha_env, tmp_path), stream)
    assert not github.state.check_runs
    assert "GitHub deletes deployment statuses after 90 days" in stream.getvalue()


def test_a_refused_deployments_lookup_names_the_permission(loop, gha_env, stream, tmp_path):
    loop.refuse("GET", r"/deployments$", 403)
    published = publish(scheduled_env(gha_env, tmp_path), stream)
    assert not loop.state.check_runs and not loop.state.issue_comments
    assert "HTTP 403: Resource not accessible by integration" in published.refused[0]
    assert "deployments: read" in stream.getvalue()


# ---- item 3: edited while the verdict stays, one new comment when it changes ------------------

def test_a_second_identical_run_only_edits(loop, gha_env, stream, tmp_path):
    publish(scheduled_env(gha_env, tmp_path, "5001"), stream)
    posts_before = len(loop.calls("POST", r"/issues/\d+/comments$"))
    second = publish(scheduled_env(gha_env, tmp_path, "5002"), stream)

    assert second.comment_action == "updated" and second.transition_url is None
    assert len(loop.calls("POST", r"/issues/\d+/comments$")) == posts_before == 1
    (only,) = loop.state.issue_comments[PR_DEPLOYED]
    assert parse_marker(only["body"]).state.run == "5002"
    assert len(loop.calls("PATCH", r"/issues/comments/\d+$")) == 1


@pytest.mark.parametrize("before,after", [(Verdict.PASS, Verdict.FAIL), (Verdict.FAIL, Verdict.PASS),
                                          (Verdict.PASS, Verdict.INCONCLUSIVE),
                                          (Verdict.FAIL, Verdict.INCONCLUSIVE)])
def test_a_verdict_change_adds_exactly_one_short_comment(loop, gha_env, stream, tmp_path, before, after):
    first = publish(scheduled_env(gha_env, tmp_path, "5001"), stream, before)
    publish(scheduled_env(gha_env, tmp_path, "5002"), stream, before)  # unchanged: edit only
    changed = publish(scheduled_env(gha_env, tmp_path, "5003"), stream, after)
    publish(scheduled_env(gha_env, tmp_path, "5004"), stream, after)  # unchanged again

    comments = loop.state.issue_comments[PR_DEPLOYED]
    assert len(comments) == 2  # the sticky one, and one note for the one change
    sticky, note = comments
    assert parse_marker(sticky["body"]).state.verdict == after.value
    assert changed.transition_url == note["html_url"]
    assert parse_marker(note["body"]) is None  # never mistaken for the sticky comment
    words = {Verdict.PASS: "✅ pass", Verdict.FAIL: "❌ fail", Verdict.INCONCLUSIVE: "⚠️ inconclusive"}
    assert f"**Verdict changed in `production`: {words[before]} → {words[after]}**" in note["body"]
    assert f"[the full results]({first.comment_url})" in note["body"]
    assert "[workflow run](https://github.example/acme/models/actions/runs/5003)" in note["body"]
    assert len(note["body"]) < 600


def test_a_refused_verdict_change_note_is_said_and_the_sticky_still_updated(loop, gha_env, stream, tmp_path):
    loop.refuse("POST", rf"/issues/{PR_DEPLOYED}/comments$", 403, skip=1)  # the sticky one passes
    publish(scheduled_env(gha_env, tmp_path, "5001"), stream, Verdict.PASS)
    changed = publish(scheduled_env(gha_env, tmp_path, "5002"), stream, Verdict.FAIL)
    assert changed.comment_action == "updated" and changed.transition_url is None
    assert changed.refused == ["verdict-change comment: HTTP 403: Resource not accessible by integration"]
    assert parse_marker(loop.state.issue_comments[PR_DEPLOYED][0]["body"]).state.verdict == "fail"
    assert "GitHub refused the comment announcing the changed verdict" in stream.getvalue()


def test_environments_and_keys_have_their_own_sticky_comments(loop, gha_env, stream, tmp_path):
    env = scheduled_env(gha_env, tmp_path)
    publish(env, stream, environment="production")
    reporter = Reporter(ReportSettings(token="t0ken", write_interval=0, commit_sha=DEPLOYED),
                        GithubContext.from_env(env), GithubActions(stream=stream, env=env))
    reporter.publish(report(Verdict.FAIL))  # the same commit, no environment: another thread
    threads = [parse_marker(c["body"]).thread for c in loop.state.issue_comments[PR_DEPLOYED]]
    assert threads == [Thread("slo-validate", "", "production"), Thread("slo-validate")]


# ---- item 3: the alert issue -----------------------------------------------------------------

def alert_issues(github):
    return [i for i in github.state.issues.values() if any(lb["name"] == LABEL for lb in i["labels"])
            and "pull_request" not in i]


def test_alert_issue_opened_once_updated_and_closed_on_recovery(loop, gha_env, stream, tmp_path):
    publish(scheduled_env(gha_env, tmp_path, "5001"), stream, alert_issue=True)  # pass: nothing
    assert not loop.state.issues and not loop.calls("GET", r"/labels")

    opened = publish(scheduled_env(gha_env, tmp_path, "5002"), stream, Verdict.FAIL, alert_issue=True)
    updated = publish(scheduled_env(gha_env, tmp_path, "5003"), stream, Verdict.FAIL, alert_issue=True)
    (issue,) = alert_issues(loop)
    assert (opened.alert.action, opened.alert.number) == ("opened", issue["number"])
    assert (updated.alert.action, updated.alert.number) == ("updated", issue["number"])
    assert len(loop.calls("POST", r"/issues$")) == 1
    assert issue["title"] == "mlobs slo-validate failing in production"
    assert loop.state.labels[LABEL]["color"] == "d73a4a"  # created with its colour and description
    marker = parse_marker(issue["body"], "alert")
    assert marker.thread == Thread("slo-validate", "", "production")
    assert (marker.state.verdict, marker.state.sha, marker.state.run) == ("fail", DEPLOYED, "5003")
    assert marker.state.since == parse_marker(  # failing since the first failing run
        loop.calls("POST", r"/issues$")[0].body["body"], "alert").state.at
    assert f"shipped by [#{PR_DEPLOYED}]" in issue["body"]
    assert issue["user"]["login"] == "github-actions[bot]"

    inconclusive = publish(scheduled_env(gha_env, tmp_path, "5004"), stream, Verdict.INCONCLUSIVE,
                           alert_issue=True)
    assert inconclusive.alert.action == "updated" and issue["state"] == "open"  # we do not know

    recovered = publish(scheduled_env(gha_env, tmp_path, "5005"), stream, Verdict.PASS, alert_issue=True)
    assert recovered.alert.action == "closed"
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    (note,) = loop.state.issue_comments[issue["number"]]
    assert note["body"].startswith("✅ **Recovered** in `production`")
    assert "actions/runs/5005" in note["body"]
    assert parse_marker(issue["body"], "alert").state.verdict == "pass"
    publish(scheduled_env(gha_env, tmp_path, "5006"), stream, Verdict.PASS, alert_issue=True)
    assert len(loop.calls("POST", r"/issues$")) == 1 and len(alert_issues(loop)) == 1


def test_the_alert_issue_is_found_among_many_runs_whatever_its_title(loop, gha_env, stream, tmp_path):
    thread_marker = "<!-- mlobs:alert slo-validate env=production verdict=fail at=2025-01-01T00:00:00Z -->"
    for i in range(130):  # past incidents, closed
        loop.seed_issue(f"old incident {i}", thread_marker, user="github-actions[bot]", labels=(LABEL,),
                        state="closed")
    loop.seed_issue("copied", thread_marker + "\nmine now", user="mallory", labels=(LABEL,))
    loop.seed_issue("a PR", thread_marker, user="github-actions[bot]", labels=(LABEL,), pull_request=True)
    loop.seed_issue("staging", thread_marker.replace("production", "staging"), user="github-actions[bot]",
                    labels=(LABEL,))
    for i in range(110):  # open issues with the label, someone else's
        loop.seed_issue(f"triage {i}", "please look", labels=(LABEL,))
    ours = loop.seed_issue("Prod is on fire (renamed by a human)", thread_marker,
                           user="github-actions[bot]", labels=(LABEL, "sev1"))
    before = len(loop.state.issues)

    published = publish(scheduled_env(gha_env, tmp_path), stream, Verdict.FAIL, alert_issue=True)

    assert published.alert.action == "updated" and published.alert.number == ours["number"]
    assert len(loop.state.issues) == before  # nothing new
    assert ours["title"] == "Prod is on fire (renamed by a human)"  # the human's title stays
    listings = loop.calls("GET", r"/issues$")
    assert len(listings) == 2  # 114 open labelled issues: two pages of 100; the closed never read
    assert [r.query.get("page") for r in listings] == [None, ["2"]]
    assert all(r.query["state"] == ["open"] and r.query["labels"] == [LABEL] for r in listings)


def test_two_open_alerts_after_a_race_become_one(loop, gha_env, stream, tmp_path):
    thread_marker = "<!-- mlobs:alert slo-validate env=production verdict=fail at=2025-01-01T00:00:00Z -->"
    first = loop.seed_issue("one", thread_marker, user="github-actions[bot]", labels=(LABEL,))
    second = loop.seed_issue("two", thread_marker, user="github-actions[bot]", labels=(LABEL,))
    published = publish(scheduled_env(gha_env, tmp_path), stream, Verdict.FAIL, alert_issue=True)
    assert published.alert.number == first["number"]
    assert published.alert.duplicates_closed == (second["number"],)
    assert (second["state"], second["state_reason"]) == ("closed", "duplicate")
    assert f"Duplicate of #{first['number']}" in loop.state.issue_comments[second["number"]][0]["body"]


def test_a_person_closing_the_alert_mutes_it_for_that_commit(loop, gha_env, stream, tmp_path):
    publish(scheduled_env(gha_env, tmp_path, "5001"), stream, Verdict.FAIL, alert_issue=True)
    (issue,) = alert_issues(loop)
    issue["state"], issue["state_reason"] = "closed", "not_planned"  # a person closes it
    issue["updated_at"] = "2025-07-01T00:00:00Z"

    muted = publish(scheduled_env(gha_env, tmp_path, "5002"), stream, Verdict.FAIL, alert_issue=True)
    assert muted.alert.action == "muted" and len(alert_issues(loop)) == 1

    # it passes, then fails again on the same commit: a new incident, a new alert
    publish(scheduled_env(gha_env, tmp_path, "5003"), stream, Verdict.PASS, alert_issue=True)
    again = publish(scheduled_env(gha_env, tmp_path, "5004"), stream, Verdict.FAIL, alert_issue=True)
    assert again.alert.action == "opened" and len(alert_issues(loop)) == 2
    again_issue = loop.state.issues[again.alert.number]
    again_issue["state"], again_issue["updated_at"] = "closed", "2025-08-01T00:00:00Z"

    # another commit goes live and fails: a new alert
    loop.add_deployment("4" * 40, "production", "2025-06-02T00:00:00Z", [("success", "2025-06-02T00:05:00Z")])
    fresh = publish(scheduled_env(gha_env, tmp_path, "5005"), stream, Verdict.FAIL, alert_issue=True)
    assert fresh.alert.action == "opened" and len(alert_issues(loop)) == 3


def test_a_refused_alert_issue_names_its_permission_and_keeps_the_rest(loop, gha_env, stream, tmp_path):
    loop.refuse("POST", r"/issues$", 403)
    published = publish(scheduled_env(gha_env, tmp_path), stream, Verdict.FAIL, alert_issue=True)
    assert published.alert is None and published.refused == [
        "alert issue: HTTP 403: Resource not accessible by integration"]
    assert "grant `permissions: issues: write`" in stream.getvalue()
    assert published.comment_action == "created" and published.check_run_id is not None


def test_alerts_need_the_tokens_identity_and_never_run_on_pull_requests(loop, gha_env, stream, tmp_path):
    loop.refuse("POST", r"/graphql$", 403)
    published = publish(scheduled_env(gha_env, tmp_path), stream, Verdict.FAIL, alert_issue=True)
    assert published.alert is None and not loop.state.issues
    assert "alert-issue: skipped, the token's account is unknown" in stream.getvalue()

    on_pr = publish(gha_env, stream, Verdict.FAIL, alert_issue=True)  # conftest: a pull_request event
    assert on_pr.alert is None and not loop.state.issues


# ---- item 5: the reviewer's view --------------------------------------------------------------

def test_a_pull_request_quotes_the_running_versions_latest_verdict(loop, gha_env, stream, tmp_path):
    deployment, _ = running(loop, "production")
    before = publish(gha_env, stream)  # no scheduled run yet
    line = before.production_line
    assert line.startswith("**Running in `production`:** deployment")
    assert "no verdict yet for this version" in line and f"#{PR_DEPLOYED}" in line

    publish(scheduled_env(gha_env, tmp_path, "5009"), stream, Verdict.FAIL)
    sticky = loop.state.issue_comments[PR_DEPLOYED][0]
    at = parse_marker(sticky["body"]).state.at
    on_pr = publish(gha_env, stream, Verdict.PASS)

    # the PR's own results, on its own head and its own sticky comment
    assert on_pr.sha == "a" * 40 and on_pr.pull_request == 7
    (own,) = loop.state.issue_comments[7]
    assert parse_marker(own["body"]).thread == Thread("slo-validate")  # not keyed by production
    assert "SLO validation: 2 passed" in own["body"]
    expected = re.compile(
        re.escape(f"**Running in `production`:** ❌ fail (slo-validate, {at.strftime('%Y-%m-%d %H:%M UTC')}")
        + r", \d+ min ago, " + re.escape(f"[details]({sticky['html_url']})) — deployment {deployment['id']} "
                                         f"of [`{DEPLOYED[:12]}`]"))
    found = expected.search(own["body"])
    assert found, own["body"]
    assert found.start() < own["body"].index("results table")  # beside the PR's own results
    assert "Running in `production`" in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
    checks = [c for c in loop.state.check_runs.values() if c["head_sha"] == "a" * 40]
    assert checks and all(c["name"] == "mlobs slo-validate" for c in checks)


def test_the_reviewer_line_ignores_verdicts_anyone_else_wrote(loop, gha_env, stream, tmp_path):
    forged = ("<!-- mlobs:sticky slo-validate env=production verdict=pass at=2030-01-01T00:00:00Z "
              f"sha={DEPLOYED} -->\nall good, trust me")
    loop.seed_issue_comment(PR_DEPLOYED, forged, user="mallory")
    line = publish(gha_env, stream).production_line
    assert "no verdict yet for this version" in line and "pass" not in line.split("—")[0]


def test_a_refused_lookup_is_said_on_the_pull_request(loop, gha_env, stream, tmp_path):
    loop.refuse("GET", r"/deployments$", 403)
    published = publish(gha_env, stream)
    body = loop.state.issue_comments[7][0]["body"]
    assert ("**Running in `production`:** could not look up the running version (HTTP 403: Resource "
            "not accessible by integration).") in body
    assert published.comment_action == "created" and not published.refused


def test_no_deployment_yet_is_said_on_the_pull_request(github, gha_env, stream):
    line = publish(gha_env, stream).production_line
    assert line == ("**Running in `production`:** no production verdict — no deployment to "
                    "environment 'production' found; this repository has no deployments.\n")


# ---- GitHub's documented request shapes and limits -------------------------------------------

def test_every_request_of_the_loop_is_one_github_documents(loop, gha_env, stream, tmp_path):
    for run_id, verdict in (("1", Verdict.PASS), ("2", Verdict.FAIL), ("3", Verdict.FAIL), ("4", Verdict.PASS)):
        published = publish(scheduled_env(gha_env, tmp_path, run_id), stream, verdict, alert_issue=True)
        assert not published.refused, published.refused
    publish(gha_env, stream)
    kinds = {(r.method, re.sub(r"/\d+|/[0-9a-f]{40}", "/N", r.path)) for r in loop.requests}
    assert kinds == {
        ("POST", "/graphql"),
        ("GET", "/repos/acme/models/deployments"), ("GET", "/repos/acme/models/deployments/N/statuses"),
        ("GET", "/repos/acme/models/commits/N/pulls"), ("POST", "/repos/acme/models/check-runs"),
        ("GET", "/repos/acme/models/issues/N/comments"), ("POST", "/repos/acme/models/issues/N/comments"),
        ("PATCH", "/repos/acme/models/issues/comments/N"), ("GET", "/repos/acme/models/issues"),
        ("POST", "/repos/acme/models/labels"), ("POST", "/repos/acme/models/issues"),
        ("PATCH", "/repos/acme/models/issues/N"),
    }, kinds
    for request in loop.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["accept"] == "application/vnd.github+json", request.path
        assert headers["x-github-api-version"] == "2022-11-28", request.path
    # the writes carry only documented fields, within GitHub's limits
    for r in loop.calls("POST", r"/issues$"):
        assert set(r.body) <= {"title", "body", "labels"} and len(r.body["title"]) <= 256
    for r in loop.calls("PATCH", r"/issues/\d+$"):
        assert set(r.body) <= {"body", "state", "state_reason"}
        assert r.body.get("state_reason") in (None, "completed", "duplicate")
    (label,) = [r.body for r in loop.calls("POST", r"/labels$")]
    assert len(label["name"]) <= 50 and len(label["description"]) <= 100
    assert re.fullmatch(r"[0-9a-f]{6}", label["color"])


def test_the_double_refuses_what_github_refuses_on_the_new_endpoints(github):
    import urllib.error
    import urllib.request

    def call(method, path, body=None):
        request = urllib.request.Request(
            github.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {github.token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    base = "/repos/acme/models"
    assert call("GET", f"{base}/deployments?env=production")[0] == 400  # misspelt: GitHub ignores it
    assert call("GET", f"{base}/deployments?per_page=101")[0] == 400
    assert call("GET", f"{base}/deployments/999/statuses")[0] == 404
    status, answer = call("POST", f"{base}/issues", {"title": "x" * 257})
    assert status == 422 and answer["errors"][0]["message"] == "title is too long (maximum is 256 characters)"
    assert call("POST", f"{base}/issues", {"body": "no title"})[0] == 422
    assert call("POST", f"{base}/issues", {"title": "t", "body": "x" * 65_537})[0] == 422
    assert call("POST", f"{base}/issues", {"title": "t", "assignee_login": "x"})[0] == 422
    number = call("POST", f"{base}/issues", {"title": "t", "labels": ["new-label"]})[1]["number"]
    assert github.state.labels["new-label"]["color"] == "ededed"  # created, as GitHub does
    assert call("PATCH", f"{base}/issues/{number}", {"state": "done"})[0] == 422
    assert call("PATCH", f"{base}/issues/{number}", {"state": "closed", "state_reason": "fixed"})[0] == 422
    assert call("PATCH", f"{base}/issues/{number}", {"state": "closed", "state_reason": "completed"})[0] == 200
    status, answer = call("POST", f"{base}/labels", {"name": "x" * 51, "color": "ffffff"})
    assert status == 422 and answer["errors"][0]["message"] == "name is too long (maximum is 50 characters)"
    assert call("POST", f"{base}/labels", {"name": "ok", "color": "#ffffff"})[0] == 422
    assert call("POST", f"{base}/labels", {"name": "ok", "description": "d" * 101})[0] == 422
    assert call("POST", f"{base}/labels", {"name": "ok", "color": "ABCDEF"})[0] == 201
    status, answer = call("POST", f"{base}/labels", {"name": "OK", "color": "ffffff"})
    assert status == 422 and answer["errors"][0]["code"] == "already_exists"
    assert call("GET", f"{base}/issues?state=opened")[0] == 422
    assert call("GET", f"{base}/issues?label=x")[0] == 400


# ---- end to end through the CLI -------------------------------------------------------------

CONTRACT = """
    Feature: pytorch-classifier in production
      Background:
        Given the logs of stream {namespace="openfaas-fn"}
        And the window is the last "1h"

      Scenario: latency
        Then the p99 latency is below 150 ms
"""


def test_hourly_runs_through_the_cli_close_the_loop(loop, gha_env, tmp_path):
    (tmp_path / "slo.feature").write_text(textwrap.dedent(CONTRACT).lstrip())
    healthy = loggen.requests(1200, latency_ms=(60, 10))
    slow = loggen.requests(1200, latency_ms=(220, 20), seed=2)
    # independently: which verdict each log deserves
    assert np.percentile([r["latency_ms"] for r in healthy], 99) < 150
    assert np.percentile([r["latency_ms"] for r in slow], 99) > 150
    deployment, _ = running(loop, "production")

    def hourly(lines, run_id):
        loggen.write(tmp_path / "logs.jsonl", lines)
        env = dict(scheduled_env(gha_env, tmp_path, run_id), MLOBS_GITHUB_TOKEN=loop.token,
                   MLOBS_DEPLOYMENT_ENVIRONMENT="production", MLOBS_ALERT_ISSUE="true")
        result = CliRunner().invoke(
            cli,
            ["slo-validate", f"--working-directory={tmp_path}", f"--window-end={loggen.END}",
             "--logs-file=logs.jsonl", "--features=slo.feature"], env=env, catch_exceptions=False)
        return result.exit_code

    assert hourly(healthy, "7001") == 0
    assert hourly(healthy, "7002") == 0
    assert hourly(slow, "7003") == 1
    assert hourly(slow, "7004") == 1
    assert hourly(healthy, "7005") == 0

    sticky, to_fail, to_pass = loop.state.issue_comments[PR_DEPLOYED]
    assert parse_marker(sticky["body"]).state.verdict == "pass"
    assert "✅ pass → ❌ fail" in to_fail["body"] and "actions/runs/7003" in to_fail["body"]
    assert "❌ fail → ✅ pass" in to_pass["body"] and "actions/runs/7005" in to_pass["body"]
    assert {c["head_sha"] for c in loop.state.check_runs.values()} == {DEPLOYED}
    assert [c["conclusion"] for c in loop.state.check_runs.values()] == [
        "success", "success", "failure", "failure", "success"]
    assert all(c["name"] == "mlobs slo-validate (production)" for c in loop.state.check_runs.values())
    (issue,) = alert_issues(loop)
    assert issue["state"] == "closed" and len(loop.calls("POST", r"/issues$")) == 1
    assert f"deployment {deployment['id']}" in issue["body"]
    assert not loop.state.commit_comments and set(loop.state.issue_comments) == {PR_DEPLOYED, issue["number"]}


def test_a_bad_commit_sha_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "logs.jsonl").write_text("")
    result = CliRunner().invoke(
        cli,
        ["slo-validate", f"--working-directory={tmp_path}", "--logs-file=logs.jsonl", "--github-token=",
         "--commit-sha=abc123"], env={"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""})
    assert result.exit_code == 2
    assert "commit-sha must be a full commit SHA (40 hexadecimal digits), got 'abc123'" in result.output



# ---- user-controlled names on the new surfaces ------------------------------------------------

HOSTILE_ENV = "prod <img src=x onerror=alert(1)> @acme/sre `tick` | cell --> <!-- [x](javascript:y)"


def test_a_hostile_environment_name_is_text_everywhere(github, gha_env, stream, tmp_path):
    from test_hostile_inputs import audit_markdown, shown

    github.add_pull(DEPLOYED, PR_DEPLOYED, state="closed", merged_at="2025-05-30T09:00:00Z",
                    merge_commit_sha=DEPLOYED)
    github.add_deployment(DEPLOYED, HOSTILE_ENV, "2025-05-30T10:00:00Z", [("success", "2025-05-30T10:06:00Z")])
    for run_id, verdict in (("1", Verdict.PASS), ("2", Verdict.FAIL)):
        published = publish(scheduled_env(gha_env, tmp_path, run_id), stream, verdict,
                            environment=HOSTILE_ENV, alert_issue=True)
        assert not published.refused, published.refused
    sticky, note = github.state.issue_comments[PR_DEPLOYED]
    assert parse_marker(sticky["body"]).thread.environment == HOSTILE_ENV  # round trip
    texts = [audit_markdown(sticky["body"], "sticky", marker_allowed=True),
             audit_markdown(note["body"], "verdict change")]
    (issue,) = alert_issues(github)
    assert parse_marker(issue["body"], "alert").thread.environment == HOSTILE_ENV
    first, rest = issue["body"].split("\n", 1)
    assert first.count("-->") == 1  # the marker holds: nothing in the name ends it
    texts.append(audit_markdown(rest, "alert issue"))
    assert "@acme" not in issue["title"] and len(issue["title"]) <= 256
    for text in texts:
        assert shown(HOSTILE_ENV) in text.replace("\u200b", "")
    on_pr = publish(gha_env, stream, environment=HOSTILE_ENV).production_line
    assert shown(HOSTILE_ENV) in audit_markdown(on_pr, "reviewer line").replace("\u200b", "")


def test_the_new_surfaces_pass_the_redaction_step(github, gha_env, stream, tmp_path):
    from mlobs.redact import Redactor

    secret = "hunter2-s3cr3t"
    environment = f"prod-{secret}"
    github.add_deployment(DEPLOYED, environment, "2025-05-30T10:00:00Z", [("success", "2025-05-30T10:06:00Z")])
    env = scheduled_env(gha_env, tmp_path)
    for verdict in (Verdict.PASS, Verdict.FAIL):
        Reporter(ReportSettings(token="t0ken", write_interval=0, deployment_environment=environment,
                                alert_issue=True),
                 GithubContext.from_env(env),
                 GithubActions(stream=stream, env=env, redactor=Redactor([secret]))).publish(report(verdict))
    sent = [json.dumps(r.body) for r in github.requests if r.body and r.path != "/graphql"]
    assert len(sent) >= 6  # check runs, comment, its edit, the change note, label, issue
    assert not [body for body in sent if secret in body]
    assert secret not in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text() + stream.getvalue()
