"""The reporter against the loopback GitHub server, through PyGithub and real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlobs.github import markdown as md
from mlobs.github.actions import GithubActions
from mlobs.github.context import GithubContext
from mlobs.github.reporter import CommentMode, Reporter, ReportSettings, marker
from mlobs.result import Annotation, Report, Verdict


def make_report(body: str = "all good", annotations=(), verdict=Verdict.PASS, key="") -> Report:
    return Report(mode="slo-validate", verdict=verdict, title="SLO validation: 2 passed",
                  summary="2 passed", body=body, annotations=list(annotations),
                  outputs={"violations": "0"}, key=key)


def reporter(env, stream, token="t0ken", **settings) -> Reporter:
    settings.setdefault("write_interval", 0)
    return Reporter(ReportSettings(token=token, **settings), GithubContext.from_env(env),
                    GithubActions(stream=stream, env=env))


def test_second_run_edits_the_same_sticky_comment(github, gha_env, stream):
    first = reporter(gha_env, stream).publish(make_report("first run"))
    second = reporter(gha_env, stream).publish(make_report("second run"))

    comments = github.state.issue_comments[7]
    assert len(comments) == 1
    assert comments[0]["body"].startswith(marker("slo-validate"))
    assert "second run" in comments[0]["body"] and "first run" not in comments[0]["body"]
    assert (first.comment_action, second.comment_action) == ("created", "updated")
    assert len(github.calls("POST", r"/issues/7/comments$")) == 1
    assert len(github.calls("PATCH", r"/issues/comments/\d+$")) == 1


def test_sticky_ignores_other_comments_and_other_keys(github, gha_env, stream):
    github.seed_issue_comment(7, "LGTM " + marker("slo-validate"))  # marker not at the start
    reporter(gha_env, stream).publish(make_report("staging", key="staging"))
    reporter(gha_env, stream).publish(make_report("prod", key="prod"))
    reporter(gha_env, stream).publish(make_report("prod again", key="prod"))

    bodies = [c["body"] for c in github.state.issue_comments[7]]
    assert len(bodies) == 3
    assert bodies[0].startswith("LGTM")
    assert "staging" in bodies[1] and "prod again" in bodies[2]


def test_comment_mode_new_adds_a_comment_each_run(github, gha_env, stream):
    for _ in range(2):
        reporter(gha_env, stream, comment_mode=CommentMode.NEW).publish(make_report())
    assert len(github.state.issue_comments[7]) == 2


def test_comment_mode_off_posts_no_comment_but_still_a_check_run(github, gha_env, stream):
    reporter(gha_env, stream, comment_mode=CommentMode.OFF).publish(make_report())
    assert not github.calls("POST", r"/comments$")
    assert len(github.state.check_runs) == 1


def test_120_annotations_arrive_in_three_requests_of_at_most_50(github, gha_env, stream):
    annotations = [Annotation(path="features/slo.feature", start_line=i + 1, message=f"violation {i}")
                   for i in range(120)]
    published = reporter(gha_env, stream).publish(make_report(annotations=annotations, verdict=Verdict.FAIL))

    posts = github.calls("POST", r"/check-runs$")
    patches = github.calls("PATCH", r"/check-runs/\d+$")
    sizes = [len(r.body["output"]["annotations"]) for r in posts + patches]
    assert sizes == [50, 50, 20]
    run = github.state.check_runs[published.check_run_id]
    assert [a["start_line"] for a in run["output"]["annotations"]] == list(range(1, 121))
    assert run["conclusion"] == "failure" and run["status"] == "completed"
    # pull_request: the check run goes on the PR's head commit, not the merge commit in GITHUB_SHA
    assert run["head_sha"] == "a" * 40
    assert run["details_url"] == "https://github.example/acme/models/actions/runs/4242"
    # with a check run carrying them, no duplicate workflow-command annotations
    assert "::error" not in stream.getvalue()


@pytest.mark.parametrize("verdict,conclusion", [(Verdict.PASS, "success"), (Verdict.FAIL, "failure"),
                                                (Verdict.INCONCLUSIVE, "neutral")])
def test_check_run_conclusion_follows_the_verdict(github, gha_env, stream, verdict, conclusion):
    published = reporter(gha_env, stream).publish(make_report(verdict=verdict))
    assert github.state.check_runs[published.check_run_id]["conclusion"] == conclusion


def test_403_on_comments_and_checks_falls_back_to_summary_and_annotations(github, gha_env, stream):
    github.refuse("POST", r"/comments$", 403)
    github.refuse("POST", r"/check-runs$", 403)
    annotations = [Annotation(path="features/a.feature", start_line=12, message="p99 312 ms > 150 ms",
                              title="p99 latency")]
    published = reporter(gha_env, stream).publish(make_report(annotations=annotations, verdict=Verdict.FAIL))

    out = stream.getvalue()
    assert out.count("::warning::") == 1, out  # said once, not per surface
    assert "Resource not accessible by integration" in out
    assert "::error file=features/a.feature,line=12,title=p99 latency::p99 312 ms > 150 ms" in out
    assert "SLO validation: 2 passed" in Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert len(published.refused) == 2
    assert "result=fail" in Path(gha_env["GITHUB_OUTPUT"]).read_text()


def test_github_unreachable_does_not_raise(gha_env, stream):
    env = dict(gha_env, GITHUB_API_URL="http://127.0.0.1:9")  # discard port: nothing listens
    published = reporter(env, stream).publish(make_report())
    assert published.refused and published.check_run_id is None


def test_70000_character_body_is_truncated_with_a_note(github, gha_env, stream):
    body = "\n".join(f"| row {i} | {'x' * 60} |" for i in range(1100))
    assert len(body) > 70_000
    published = reporter(gha_env, stream).publish(make_report(body=body))

    comment = github.state.issue_comments[7][0]["body"]
    assert len(comment) <= md.COMMENT_LIMIT
    assert "Truncated:" in comment and "characters omitted" in comment
    run = github.state.check_runs[published.check_run_id]
    assert len(run["output"]["text"]) <= md.CHECK_TEXT_LIMIT
    assert "Truncated:" in run["output"]["text"]
    # cut on a line boundary: no half row before the note
    kept_rows = [line for line in comment.splitlines() if line.startswith("| row")]
    assert all(line.endswith("|") for line in kept_rows)


def test_markdown_and_html_in_a_label_cannot_break_the_comment(github, gha_env, stream):
    hostile = '</details><!-- mlobs:sticky slo-validate --> | **bold** <script>alert(1)</script> @acme/sre\n# H'
    table = md.table(["scenario", "verdict"], [[md.text(hostile), "fail"]])
    reporter(gha_env, stream).publish(make_report(body=table))

    body = github.state.issue_comments[7][0]["body"]
    assert body.count("<!-- mlobs:sticky") == 1 and body.startswith(marker("slo-validate"))
    assert "<script>" not in body and "</details>" not in body
    assert "@acme" not in body  # nobody gets mentioned
    row = next(line for line in body.splitlines() if "script" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 3  # still exactly two cells


def test_push_event_finds_the_pull_request_of_the_commit(github, gha_env, stream, tmp_path):
    sha = "c" * 40
    github.add_pull(sha, number=3, state="closed")
    github.add_pull(sha, number=9, state="open")
    env = dict(gha_env, GITHUB_EVENT_NAME="push", GITHUB_SHA=sha, GITHUB_EVENT_PATH="")
    reporter(env, stream).publish(make_report())
    assert 9 in github.state.issue_comments and 3 not in github.state.issue_comments


@pytest.mark.parametrize("event", ["schedule", "workflow_dispatch"])
def test_without_a_pull_request_a_sticky_commit_comment(github, gha_env, stream, event):
    sha = "d" * 40
    env = dict(gha_env, GITHUB_EVENT_NAME=event, GITHUB_SHA=sha, GITHUB_EVENT_PATH="")
    reporter(env, stream).publish(make_report("one"))
    reporter(env, stream).publish(make_report("two"))
    comments = github.state.commit_comments[sha]
    assert len(comments) == 1 and "two" in comments[0]["body"]
    assert not github.state.issue_comments


def test_enterprise_api_url_with_a_path_prefix(gha_env, stream):
    from servers.github import GithubDouble

    with GithubDouble(prefix="/api/v3") as ghe:
        env = dict(gha_env, GITHUB_API_URL=ghe.url)
        reporter(env, stream).publish(make_report())
        assert all(r.path.startswith("/api/v3/") for r in ghe.requests)
        assert len(ghe.state.issue_comments[7]) == 1


def test_dry_run_renders_files_and_sends_nothing(github, gha_env, stream, tmp_path):
    out = tmp_path / "dry"
    annotations = [Annotation(path="f.feature", start_line=i, message="m") for i in range(1, 61)]
    published = reporter(gha_env, stream, dry_run=True, dry_run_dir=out).publish(
        make_report(annotations=annotations))
    assert not github.requests
    assert {p.name for p in published.files} == {"comment.md", "summary.md", "check-run.json", "outputs.json"}
    requests = json.loads((out / "check-run.json").read_text())
    assert [r["method"] for r in requests] == ["POST", "PATCH"]
    assert (out / "comment.md").read_text().startswith(marker("slo-validate"))
    assert Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text() == ""  # nothing sent, summary included


def test_no_token_skips_the_api_but_keeps_summary_and_annotations(github, gha_env, stream):
    annotations = [Annotation(path="f.feature", start_line=3, message="m", level="warning")]
    reporter(gha_env, stream, token=None).publish(make_report(annotations=annotations))
    assert not github.requests
    assert "::warning file=f.feature,line=3::m" in stream.getvalue()
    assert Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()
