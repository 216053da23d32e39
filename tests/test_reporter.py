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
from mlobs.github.sticky import Thread
from mlobs.github.sticky import parse as parse_marker
from mlobs.result import Annotation, Report, Verdict


def make_report(body: str = "all good", annotations=(), verdict=Verdict.PASS, key="") -> Report:
    return Report(mode="slo-validate", verdict=verdict, title="SLO validation: 2 passed",
                  summary="2 passed", body=body, annotations=list(annotations),
                  outputs={"violations": "0"}, key=key)


def sticky_thread(body: str) -> Thread | None:
    found = parse_marker(body)
    return found.thread if found else None


def reporter(env, stream, token="t0ken", **settings) -> Reporter:
    settings.setdefault("write_interval", 0)
    return Reporter(ReportSettings(token=token, **settings), GithubContext.from_env(env),
                    GithubActions(stream=stream, env=env))


def test_second_run_edits_the_same_sticky_comment(github, gha_env, stream):
    first = reporter(gha_env, stream).publish(make_report("first run"))
    second = reporter(gha_env, stream).publish(make_report("second run"))

    comments = github.state.issue_comments[7]
    assert len(comments) == 1
    assert sticky_thread(comments[0]["body"]) == Thread("slo-validate")
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
    assert len(run["output"]["text"].encode()) <= md.CHECK_TEXT_LIMIT_BYTES
    assert "Truncated:" in run["output"]["text"]
    # cut on a line boundary: no half row before the note
    kept_rows = [line for line in comment.splitlines() if line.startswith("| row")]
    assert all(line.endswith("|") for line in kept_rows)


def test_markdown_and_html_in_a_label_cannot_break_the_comment(github, gha_env, stream):
    hostile = '</details><!-- mlobs:sticky slo-validate --> | **bold** <script>alert(1)</script> @acme/sre\n# H'
    table = md.table(["scenario", "verdict"], [[md.text(hostile), "fail"]])
    reporter(gha_env, stream).publish(make_report(body=table))

    body = github.state.issue_comments[7][0]["body"]
    assert body.count("<!-- mlobs:sticky") == 1 and sticky_thread(body) == Thread("slo-validate")
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
        # REST under /api/v3, GraphQL (the token's identity) at /api/graphql, as on GHES
        assert {r.path for r in ghe.requests if not r.path.startswith("/api/v3/")} == {"/api/graphql"}
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
    assert sticky_thread((out / "comment.md").read_text()) == Thread("slo-validate")
    assert Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text() == ""  # nothing sent, summary included


def test_no_token_skips_the_api_but_keeps_summary_and_annotations(github, gha_env, stream):
    annotations = [Annotation(path="f.feature", start_line=3, message="m", level="warning")]
    reporter(gha_env, stream, token=None).publish(make_report(annotations=annotations))
    assert not github.requests
    assert "::warning file=f.feature,line=3::m" in stream.getvalue()
    assert Path(gha_env["GITHUB_STEP_SUMMARY"]).read_text()


# ---- GitHub's limits and headers, as GitHub enforces them (issue 10, item 2) ----------------

def test_every_request_carries_the_documented_media_type_and_api_version(github, gha_env, stream):
    sha = "e" * 40
    github.add_pull(sha, number=7)
    env = dict(gha_env, GITHUB_EVENT_NAME="push", GITHUB_SHA=sha, GITHUB_EVENT_PATH="")
    reporter(env, stream).publish(make_report(annotations=[
        Annotation(path="f.feature", start_line=i, message="m") for i in range(1, 61)]))
    reporter(env, stream).publish(make_report("again"))  # the sticky update: GET + PATCH too

    kinds = {(r.method, re.sub(r"\d+|[0-9a-f]{40}", "N", r.path)) for r in github.requests}
    assert {("GET", "/repos/acme/models/commits/N/pulls"),
            ("POST", "/repos/acme/models/check-runs"), ("PATCH", "/repos/acme/models/check-runs/N"),
            ("POST", "/graphql"), ("GET", "/repos/acme/models/issues/N/comments"),
            ("POST", "/repos/acme/models/issues/N/comments"),
            ("PATCH", "/repos/acme/models/issues/comments/N")} <= kinds
    for request in github.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["accept"] == "application/vnd.github+json", request.path
        assert headers["x-github-api-version"] == "2022-11-28", request.path
    assert len(github.state.issue_comments[7]) == 1 and "again" in github.state.issue_comments[7][0]["body"]


def test_annotation_titles_and_texts_are_cut_to_githubs_limits(github, gha_env, stream):
    long_name = "p99 latency of the image classifier for " + "golden retrievers " * 16  # 329 chars
    assert len(long_name) > 255
    details = "{namespace=\"openfaas-fn\"} |= \"é\"\n" * 3000  # ~100 KB of queries
    annotations = [Annotation(path="features/slo.feature", start_line=i + 1, level="failure",
                              title=f"SLO violated: {long_name}", message="❌ " + "x" * 70_000,
                              raw_details=details) for i in range(120)]
    published = reporter(gha_env, stream).publish(make_report(annotations=annotations, verdict=Verdict.FAIL))

    assert not published.refused, published.refused
    run = github.state.check_runs[published.check_run_id]
    assert len(run["output"]["annotations"]) == 120  # no batch lost
    for ann in run["output"]["annotations"]:
        assert len(ann["title"]) <= 255 and ann["title"].endswith("…")
        assert ann["title"].startswith("SLO violated: p99 latency of the image classifier")
        assert len(ann["message"].encode()) <= 64_000 and "truncated" in ann["message"]
        assert len(ann["raw_details"].encode()) <= 64_000
        assert ann["raw_details"].startswith('{namespace="openfaas-fn"}')


def test_check_run_texts_are_measured_in_bytes(github, gha_env, stream):
    # The issue's case: 65,459 characters but 67,062 bytes, because ✅ — ≥ are 3 bytes each.
    row = "| ✅ pass | scenario — p99 ≥ 150 ms | " + "a" * 20 + " |"
    body = "\n".join([row] * 1000)
    body = body[:65_459]
    assert len(body) <= 65_535 < len(body.encode())
    summary = "⚠️" * 30_000  # 60,000 characters, 180,000 bytes
    published = reporter(gha_env, stream).publish(
        Report(mode="slo-validate", verdict=Verdict.FAIL, title="❌ " * 300, summary=summary, body=body))

    assert not published.refused, published.refused
    output = github.state.check_runs[published.check_run_id]["output"]
    for key in ("summary", "text"):
        assert len(output[key].encode()) <= 65_535
        assert "Truncated:" in output[key] and "see the job summary" in output[key]
    # cut on a line boundary: whole rows only, then the note
    kept = [line for line in output["text"].splitlines() if line.startswith("| ✅")]
    assert kept and all(line == row for line in kept)
    assert len(output["title"]) <= 255
    assert len(github.state.issue_comments[7][0]["body"]) <= 65_536


def test_the_double_refuses_what_github_refuses(github):
    """The double itself: the limits above are enforced there, in GitHub's units and words."""
    import json as json_
    import urllib.request

    def post(path, body, accept="application/vnd.github+json", version="2022-11-28"):
        request = urllib.request.Request(github.url + path, data=json_.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"token {github.token}",
                                                  "Accept": accept, "X-GitHub-Api-Version": version,
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json_.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json_.loads(error.read())

    base = "/repos/acme/models/check-runs"
    output = {"title": "t", "summary": "✅" * 21_846}  # 65,538 bytes, 21,846 characters
    status, answer = post(base, {"name": "n", "head_sha": "a" * 40, "output": output})
    assert status == 422 and answer["errors"][0]["message"] == "summary exceeds a maximum bytesize of 65535"
    ann = {"path": "f", "start_line": 1, "end_line": 1, "annotation_level": "failure", "message": "m"}
    status, _ = post(base, {"name": "n", "head_sha": "a" * 40,
                            "output": {"title": "t", "summary": "s", "annotations": [dict(ann, title="x" * 256)]}})
    assert status == 422
    status, _ = post(base, {"name": "n", "head_sha": "a" * 40,
                            "output": {"title": "t", "summary": "s", "annotations": [dict(ann, message="é" * 40_000)]}})
    assert status == 422
    assert post(base, {"name": "n", "head_sha": "a" * 40}, accept="application/vnd.github.groot-preview+json")[0] == 415
    assert post(base, {"name": "n", "head_sha": "a" * 40}, version="")[0] == 400
    assert post("/repos/acme/models/issues/7/comments", {"body": "x" * 65_537})[0] == 422
    assert post(base, {"name": "n", "head_sha": "a" * 40, "output": dict(output, summary="✅" * 21_845)})[0] == 201


def test_a_refused_annotation_batch_is_quoted_and_the_ten_most_important_are_logged(github, gha_env, stream):
    github.refuse("PATCH", r"/check-runs/\d+$", 422, "Validation Failed", skip=1)  # the third request
    annotations = [Annotation(path="features/slo.feature", start_line=i + 1,
                              level="failure" if i % 7 == 0 else "warning", message=f"result {i}")
                   for i in range(130)]
    published = reporter(gha_env, stream).publish(make_report(annotations=annotations, verdict=Verdict.FAIL))

    run = github.state.check_runs[published.check_run_id]
    assert [a["start_line"] for a in run["output"]["annotations"]] == list(range(1, 101))
    assert published.annotations_delivered == 100
    out = stream.getvalue()
    warnings = [line for line in out.splitlines() if line.startswith("::warning::")]
    assert len(warnings) == 1
    assert "HTTP 422: Validation Failed" in warnings[0]
    assert "fork" not in warnings[0] and "permission" not in warnings[0]
    commands = [line for line in out.splitlines() if line.startswith(("::error ", "::warning "))]
    undelivered = annotations[100:]
    failures = [a for a in undelivered if a.level == "failure"]  # lines 106, 113, 120, 127
    assert len(commands) == 10
    # the most important first: every failure, then warnings in file order
    expected = failures + [a for a in undelivered if a.level == "warning"][: 10 - len(failures)]
    assert [int(re.search(r"line=(\d+)", c)[1]) for c in commands] == [a.start_line for a in expected]
    notice = [line for line in out.splitlines() if line.startswith("::notice ")]
    assert len(notice) == 1 and "job summary" in notice[0]
    assert f"{len(undelivered) - 10} more" in notice[0]


def test_contracts_outside_the_workspace_log_only_the_ten_most_important(github, gha_env, stream):
    annotations = [Annotation(path=None, start_line=i + 1, level="warning" if i < 20 else "failure",
                              message=f"bundled contract result {i}") for i in range(25)]
    published = reporter(gha_env, stream).publish(make_report(annotations=annotations, verdict=Verdict.FAIL))

    assert published.check_run_id is not None
    assert github.state.check_runs[published.check_run_id]["output"]["annotations"] == []
    out = stream.getvalue().splitlines()
    commands = [line for line in out if line.startswith(("::error", "::warning"))]
    assert [c.split("::")[1] for c in commands[:5]] == ["error"] * 5  # failures first
    assert len(commands) == 10
    assert sum(line.startswith("::notice ") and "15 more" in line for line in out) == 1


# ---- the sticky comment belongs to the token's own account (issue 10, item 2) ----------------

def test_a_humans_comment_starting_with_the_marker_is_never_edited(github, gha_env, stream):
    human = github.seed_issue_comment(7, marker("slo-validate") + "\nI pasted your marker", user="mallory")
    first = reporter(gha_env, stream).publish(make_report("first run"))
    second = reporter(gha_env, stream).publish(make_report("second run"))

    comments = github.state.issue_comments[7]
    assert comments[0] is human and comments[0]["body"].endswith("I pasted your marker")
    assert len(comments) == 2 and comments[1]["user"]["login"] == "github-actions[bot]"
    assert "second run" in comments[1]["body"]
    assert (first.comment_action, second.comment_action) == ("created", "updated")
    assert not github.calls("PATCH", rf"/issues/comments/{human['id']}$")


def test_a_personal_token_edits_only_its_own_users_comments(gha_env, stream):
    from servers.github import GithubDouble

    with GithubDouble(viewer="octocat") as double:
        env = dict(gha_env, GITHUB_API_URL=double.url)
        bots = double.seed_issue_comment(7, marker("slo-validate") + "\nby the job token",
                                         user="github-actions[bot]")
        reporter(env, stream).publish(make_report("one"))
        reporter(env, stream).publish(make_report("two"))
        comments = double.state.issue_comments[7]
        assert comments[0] is bots and comments[0]["body"].endswith("by the job token")
        assert [c["user"]["login"] for c in comments] == ["github-actions[bot]", "octocat"]
        assert "two" in comments[1]["body"]


def test_commit_comments_follow_the_same_rule(github, gha_env, stream):
    sha = "d" * 40
    env = dict(gha_env, GITHUB_EVENT_NAME="schedule", GITHUB_SHA=sha, GITHUB_EVENT_PATH="")
    github.state.commit_comments[sha] = [{"id": 1, "body": marker("slo-validate") + " hi",
                                          "user": {"login": "mallory", "type": "User"},
                                          "commit_id": sha, "url": f"{github.url}/repos/acme/models/comments/1",
                                          "html_url": "https://github.example/c/1"}]
    reporter(env, stream).publish(make_report("one"))
    reporter(env, stream).publish(make_report("two"))
    comments = github.state.commit_comments[sha]
    assert comments[0]["body"].endswith(" hi") and len(comments) == 2 and "two" in comments[1]["body"]


def test_when_the_identity_cannot_be_learned_a_new_comment_is_added(github, gha_env, stream):
    github.refuse("POST", r"/graphql$", 403)
    reporter(gha_env, stream).publish(make_report("one"))
    reporter(gha_env, stream).publish(make_report("two"))
    assert len(github.state.issue_comments[7]) == 2
    assert not github.calls("PATCH", r"/issues/comments/\d+$")
    assert "Could not learn which account the token acts as (HTTP 403" in stream.getvalue()


# ---- the marker carries the verdict (issue 12) --------------------------------------------

def test_a_sticky_comment_from_before_the_verdict_marker_is_still_edited(github, gha_env, stream):
    old = github.seed_issue_comment(7, marker("slo-validate") + "\n## SLO validation\nold body",
                                    user="github-actions[bot]")
    published = reporter(gha_env, stream).publish(make_report("new body", verdict=Verdict.FAIL))
    assert published.comment_action == "updated" and published.transition_url is None  # unknown before
    (only,) = github.state.issue_comments[7]
    assert only is old and "new body" in only["body"]
    assert parse_marker(only["body"]).state.verdict == "fail"
