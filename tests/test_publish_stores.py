"""publish-report on every store — a local folder, a git branch (a bare repository over file://),
an S3 bucket (moto's S3 server on loopback) — with ONE behaviour suite.

Each runner is fresh (an empty report-dir and output-dir); only the lake and the store persist.
After every step the store itself is read back: files published earlier are byte-identical, the
index lists every version, refusals leave the store untouched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import lakegen
from mlobs.cli import cli
from mlobs.evaluate.metrics import from_aggregate
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine
from mlobs.report import data, publish
from mlobs.report.stores import (
    MANIFEST,
    Changes,
    StoreConflict,
    StoreRefused,
    open_store,
    parse_target,
)
from servers.stores import S3Server, bare_repo, git_dump, git_log
from test_publish_report import tables

BIN = Path(sys.executable).parent
SITE_FILES = {"index.html", "versions.json", ".nojekyll"}
DAY = [datetime(2026, 11, d, 12, tzinfo=UTC) for d in range(1, 31)]


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


class Case:
    """One store under test: what publish-to says, and how to read the store back."""

    def __init__(self, kind: str, tmp: Path, request) -> None:
        self.kind, self.tmp, self.env = kind, tmp, {}
        self.report_dir: Path | None = None  # None: a fresh one per runner
        if kind == "local":
            self.report_dir = tmp / "site"
            self.publish_to = ""
        elif kind == "git":
            self.repo = bare_repo(tmp / "reports.git")
            self.publish_to = f"git+{self.repo.as_uri()}#gh-pages"
        else:
            self.s3 = request.getfixturevalue("s3")
            self.bucket = self.s3.bucket(f"site-{uuid.uuid4().hex[:12]}")
            self.publish_to = f"s3://{self.bucket}/reports/models"
            self.env = dict(self.s3.env)

    def dump(self) -> dict[str, bytes]:
        if self.kind == "local":
            root = self.report_dir
            return {p.relative_to(root).as_posix(): p.read_bytes()
                    for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}
        if self.kind == "git":
            return git_dump(self.repo, "gh-pages")
        return self.s3.dump(self.bucket, "reports/models/")

    def store(self):
        target = parse_target(self.publish_to, self.report_dir or self.tmp / "unused", {})
        return open_store(target, env=self.env)


@pytest.fixture(params=["local", "git", "s3"])
def case(request, tmp_path):
    return Case(request.param, tmp_path, request)


@pytest.fixture
def lake(tmp_path):
    return f"uri=sqlite:///{tmp_path / 'lake' / 'catalog.db'},warehouse={(tmp_path / 'lake' / 'wh').as_uri()}"


@pytest.fixture
def engine(lake, tmp_path):
    eng = open_engine("pyiceberg", CatalogConfig.parse(lake, "mlobs.predictions", tmp_path))
    yield eng
    eng.close()


class Runner:
    """A fresh runner: its own empty workspace; the lake and the store are shared."""

    def __init__(self, case: Case, lake: str, tmp: Path) -> None:
        self.case, self.lake, self.tmp, self.count = case, lake, tmp, 0

    def args(self, *extra: str) -> tuple[Path, list[str]]:
        self.count += 1
        workspace = self.tmp / f"runner-{self.count}"
        workspace.mkdir()
        report_dir = self.case.report_dir or workspace / "public"
        return workspace, [f"--working-directory={workspace}", "--github-token=", f"--catalog={self.lake}",
                           f"--report-dir={report_dir}", f"--publish-to={self.case.publish_to}",
                           "--dry-run", *extra]

    def __call__(self, *extra: str):
        workspace, args = self.args(*extra)
        env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": "", **self.case.env}
        result = CliRunner().invoke(cli, ["publish-report", *args], env=env, catch_exceptions=False)
        result.workspace = workspace
        summary = workspace / ".mlobs" / "publish-results.json"
        result.summary = json.loads(summary.read_text()) if summary.is_file() else None
        comment = workspace / ".mlobs" / "dry-run" / "publish-report" / "comment.md"
        result.comment = comment.read_text() if comment.is_file() else ""
        return result


@pytest.fixture
def runner(case, lake, tmp_path):
    return Runner(case, lake, tmp_path)


def index_versions(store: dict[str, bytes], tmp: Path) -> list[str]:
    page = tmp / f"index-{uuid.uuid4().hex}.html"
    page.write_bytes(store["index.html"])
    return [row[0] for row in tables(page)[0][1:]]


def manifest(store: dict[str, bytes]) -> dict[str, dict]:
    return {e["version"]: e for e in json.loads(store[MANIFEST])["versions"]}


def page_table(store: dict[str, bytes], path: str, tmp: Path, first: str) -> list[list[str]]:
    page = tmp / f"page-{uuid.uuid4().hex}.html"
    page.write_bytes(store[path])
    return next(t for t in tables(page) if t and t[0] and t[0][0] == first)


def unchanged(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """Every file published before is still there, byte for byte (site files may grow)."""
    for path, body in before.items():
        if path not in SITE_FILES:
            assert after.get(path) == body, f"{path} changed"


def accuracy(engine, info) -> float:
    return from_aggregate(engine.aggregate(info).to_pylist()).overall.accuracy


def test_three_fresh_runners_then_a_refusal_then_force(case, runner, engine, tmp_path):
    v1 = lakegen.write(engine, "v1", accuracy=0.9, seed=1, when=DAY[1])
    first = runner("--versions=v1")
    assert first.exit_code == 0, first.output
    s1 = case.dump()
    assert {"v1/index.html", "v1/report.json", "index.html", MANIFEST} <= set(s1)
    assert index_versions(s1, tmp_path) == ["v1"]
    assert json.loads(s1["v1/report.json"])["run"]["run_id"] == v1.run_id
    if case.kind == "git":
        assert ".nojekyll" in s1 and len(git_log(case.repo, "gh-pages")) == 1

    v2 = lakegen.write(engine, "v2", accuracy=0.8, seed=2, when=DAY[2])
    second = runner("--versions=v2", "--baseline-version=v1")
    assert second.exit_code == 0, second.output
    s2 = case.dump()
    unchanged(s1, s2)
    assert index_versions(s2, tmp_path) == ["v1", "v2"]
    assert "compare/v1...v2/index.html" in s2

    # v1 is evaluated again and does worse; v3 is compared with v1 AS PUBLISHED.
    rerun = lakegen.write(engine, "v1", accuracy=0.55, seed=9, run_id="rerun-v1", when=DAY[3])
    v3 = lakegen.write(engine, "v3", accuracy=0.7, seed=3, when=DAY[4])
    third = runner("--versions=v3", "--baseline-version=v1")
    assert third.exit_code == 0, third.output
    s3 = case.dump()
    unchanged(s2, s3)
    assert index_versions(s3, tmp_path) == ["v1", "v2", "v3"]
    assert manifest(s3)["v1"]["run_id"] == v1.run_id and manifest(s3)["v3"]["run_id"] == v3.run_id
    pinned, newest, mine = accuracy(engine, v1), accuracy(engine, rerun), accuracy(engine, v3)
    assert abs(pinned - newest) > 0.2
    row = next(r for r in page_table(s3, "compare/v1...v3/index.html", tmp_path, "metric")
               if r[0] == "accuracy")
    assert [cell.split(" [")[0] for cell in row[1:3]] == [f"{pinned:.3f}", f"{mine:.3f}"]
    assert re.search(rf"{mine:.3f} \[[0-9.]+, [0-9.]+\] \({mine - pinned:+.3f}\)", third.comment)
    assert f"{mine - newest:+.3f}" not in third.comment
    assert third.summary["pinned_runs"]["v1"] == v1.run_id

    # Publishing v1 again: its newest run's data differs from what is published → refused.
    refused = runner("--versions=v1")
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "immutable" in lines[0] and "rerun-v1" in lines[0]
    assert case.dump() == s3

    forced = runner("--versions=v1", "--force")
    assert forced.exit_code == 0, forced.output
    s5 = case.dump()
    assert json.loads(s5["v1/report.json"])["run"]["run_id"] == "rerun-v1"
    assert s5["v1/index.html"] != s3["v1/index.html"]
    unchanged({k: v for k, v in s3.items() if not k.startswith("v1/")}, s5)
    # the index is ordered by each version's pinned run: v1's is now the re-run
    order = [r.model_version for r in sorted([v2, rerun, v3], key=lambda r: r.committed_at)]
    assert index_versions(s5, tmp_path) == order
    assert forced.summary["forced"] == ["v1"]


def test_same_results_from_a_new_run_verify_and_change_nothing(case, runner, engine):
    lakegen.write(engine, "v1", accuracy=0.9, seed=4, when=DAY[1])
    assert runner("--versions=v1").exit_code == 0
    before = case.dump()
    commits = git_log(case.repo, "gh-pages") if case.kind == "git" else None
    # the same model on the same data in another workflow run: a new run id, the same results
    lakegen.write(engine, "v1", accuracy=0.9, seed=4, run_id="again", when=DAY[2])
    again = runner("--versions=v1")
    assert again.exit_code == 0, again.output
    assert again.summary["verified"] == ["v1"] and again.summary["written"] == []
    assert again.summary["pinned_runs"] == {"v1": "run-v1-4"}
    assert case.dump() == before
    if case.kind == "git":
        assert git_log(case.repo, "gh-pages") == commits  # nothing to push
    if case.kind != "local":  # the fresh runner's report-dir has a copy of the published pages
        copy = again.workspace / "public"
        assert (copy / "v1" / "index.html").read_bytes() == before["v1/index.html"]


def test_a_commit_that_lost_a_race_is_planned_again_and_lands(case, runner, engine, tmp_path):
    lakegen.write(engine, "v1", accuracy=0.9, seed=1, when=DAY[1])
    assert runner("--versions=v1").exit_code == 0
    lakegen.write(engine, "v2", accuracy=0.8, seed=2, when=DAY[2])
    lakegen.write(engine, "v3", accuracy=0.7, seed=3, when=DAY[3])
    before = case.dump()
    interloper = []

    def before_commit(attempt: int) -> None:
        if attempt == 1:  # another job publishes v3 between our read and our commit
            interloper.append(runner("--versions=v3", "--baseline-version=v1"))

    sources = publish.Sources(lambda v: data.version_document(engine, engine.latest_run(v)),
                              lambda v, run_id: None)
    store = case.store()
    try:
        result = publish.publish(store, ["v2"], "v1", sources, before_commit=before_commit)
    finally:
        store.close()
    assert interloper[0].exit_code == 0, interloper[0].output
    assert result.attempts == 2 and result.written == ["v2"]
    after = case.dump()
    unchanged(before, after)
    assert index_versions(after, tmp_path) == ["v1", "v2", "v3"]
    assert set(manifest(after)) == {"v1", "v2", "v3"}
    assert {"compare/v1...v2/index.html", "compare/v1...v3/index.html"} <= set(after)


def test_two_jobs_publishing_at_the_same_time_both_land(case, runner, engine, tmp_path):
    lakegen.write(engine, "v1", accuracy=0.9, seed=1, when=DAY[1])
    assert runner("--versions=v1").exit_code == 0
    lakegen.write(engine, "v2", accuracy=0.8, seed=2, when=DAY[2])
    lakegen.write(engine, "v3", accuracy=0.7, seed=3, when=DAY[3])
    before = case.dump()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    env.update(case.env)
    procs = []
    for version in ("v2", "v3"):
        workspace, args = runner.args(f"--versions={version}", "--baseline-version=v1")
        procs.append((workspace, subprocess.Popen([str(BIN / "mlobs"), "publish-report", *args], env=env,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    attempts = []
    for workspace, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        attempts.append(json.loads((workspace / ".mlobs" / "publish-results.json").read_text())["attempts"])
    print(f"{case.kind}: attempts {attempts}")  # > 1 where the two commits raced
    after = case.dump()
    unchanged(before, after)
    assert index_versions(after, tmp_path) == ["v1", "v2", "v3"]
    assert {"v2/index.html", "v3/index.html", "compare/v1...v2/index.html",
            "compare/v1...v3/index.html"} <= set(after)


def test_the_store_itself_refuses_to_rewrite_a_published_file(case):
    store = case.store()
    try:
        first = Changes(create={"v1/index.html": b"<p>v1</p>\n"}, manifest=b'{"n": 1}\n')
        store.commit(store.open(), first)
        before = case.dump()
        with pytest.raises(StoreRefused):
            store.commit(store.open(), Changes(create={"v1/index.html": b"<p>other</p>\n"},
                                               manifest=b'{"n": 2}\n'))
        assert case.dump() == before
        # a commit planned on a snapshot that is no longer current is a conflict, and writes nothing
        stale = store.open()
        store.commit(store.open(), Changes(create={"v2/index.html": b"<p>v2</p>\n"}, manifest=b'{"n": 3}\n'))
        current = case.dump()
        with pytest.raises(StoreConflict):
            store.commit(stale, Changes(create={"v3/index.html": b"<p>v3</p>\n"}, manifest=b'{"n": 4}\n'))
        assert case.dump() == current and current[MANIFEST] == b'{"n": 3}\n'
    finally:
        store.close()


def test_a_store_holding_something_else_is_refused(case, runner, engine):
    store = case.store()
    try:
        store.commit(store.open(), Changes(site={"index.html": b"<h1>our docs</h1>\n"}, manifest=b"{}"))
    finally:
        store.close()
    if case.kind == "local":
        (case.report_dir / MANIFEST).unlink()
    elif case.kind == "s3":
        case.s3.client().delete_object(Bucket=case.bucket, Key=f"reports/models/{MANIFEST}")
    else:  # someone's own gh-pages site: a branch with an index.html and no manifest
        work = case.tmp / "their-site"
        work.mkdir()
        git = ["git", "-C", str(work), "-c", "user.name=them", "-c", "user.email=them@example.com"]
        subprocess.run([*git, "init", "-q"], check=True)
        (work / "index.html").write_text("<h1>our docs</h1>\n")
        subprocess.run([*git, "add", "index.html"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "docs"], check=True)
        subprocess.run([*git, "push", "-q", "--force", case.repo.as_uri(), "HEAD:refs/heads/gh-pages"],
                       check=True)
    before = case.dump()
    lakegen.write(engine, "v1", accuracy=0.9)
    result = runner("--versions=v1")
    assert result.exit_code == 2 and "not an mlobs report" in result.stderr
    assert case.dump() == before


def test_an_interrupted_publish_is_resumed_waited_for_or_forced(case, engine):
    info = lakegen.write(engine, "v1", accuracy=0.9)
    sources = publish.Sources(lambda v: data.version_document(engine, engine.latest_run(v)),
                              lambda v, run_id: None)
    empty = (json.dumps({"schema": "mlobs.site/1", "versions": []}) + "\n").encode()
    store = case.store()
    try:
        # A job died after writing v1's files, before its manifest entry: the same data resumes.
        publish.publish(store, ["v1"], None, sources)
        store.commit(store.open(), Changes(manifest=empty))
        resumed = publish.publish(store, ["v1"], None, sources)
        assert resumed.attempts == 1 and resumed.written == ["v1"]
        assert manifest(case.dump())["v1"]["run_id"] == info.run_id

        # Files of another run of v1 and no manifest entry: another job is publishing it, or died.
        other = dict(data.version_document(engine, info), headline={"accuracy": 0.5})
        store.commit(store.open(), Changes(manifest=empty))
        case_files = case.dump()
        if case.kind == "local":
            (case.report_dir / "v1" / "report.json").write_bytes(publish.data_bytes(other))
        elif case.kind == "s3":
            case.s3.client().put_object(Bucket=case.bucket, Key="reports/models/v1/report.json",
                                        Body=publish.data_bytes(other))
        else:
            store.commit(store.open(), Changes(replace={"v1/report.json": publish.data_bytes(other)},
                                               manifest=empty))
        before = case.dump()
        assert before != case_files
        with pytest.raises(publish.StoreUnavailable) as failure:
            publish.publish(store, ["v1"], None, sources, attempts=2)
        assert "interrupted" in str(failure.value)
        assert case.dump() == before
        forced = publish.publish(store, ["v1"], None, sources, force=True)
        assert forced.forced == ["v1"]
        after = case.dump()
        assert json.loads(after["v1/report.json"])["headline"] == data.version_document(engine, info)["headline"]
        assert set(manifest(after)) == {"v1"}
    finally:
        store.close()


def test_s3_index_never_goes_back_to_an_older_manifest(s3, monkeypatch):
    """S3 has no multi-object commit: the index follows the manifest with its own If-Match chain,
    and a job whose manifest was superseded before it wrote the index leaves the newer one."""
    from mlobs.report.stores.s3 import S3Store

    bucket = s3.bucket(f"site-{uuid.uuid4().hex[:12]}")
    first, second = S3Store(bucket, "p", env=s3.env), S3Store(bucket, "p", env=s3.env)
    original = S3Store._write_index
    calls = []

    def late_index(self, body, etag):
        if self is first and not calls:  # job B commits between A's manifest and A's index
            calls.append("B")
            second.commit(second.open(), Changes(site={"index.html": b"B\n"}, manifest=b"manifest B\n"))
        return original(self, body, etag)

    monkeypatch.setattr(S3Store, "_write_index", late_index)
    first.commit(first.open(), Changes(site={"index.html": b"A\n"}, manifest=b"manifest A\n"))
    stored = s3.dump(bucket, "p/")
    assert calls == ["B"]
    assert stored == {"index.html": b"B\n", "versions.json": b"manifest B\n"}
