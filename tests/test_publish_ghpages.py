"""publish-to gh-pages: this repository's branch over smart HTTP with the job token, the token
kept out of argv, files, logs and messages; GitHub Pages' URL pattern; the publish-to grammar."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lakegen
from mlobs.errors import ConfigError
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine
from mlobs.report.mode import pages_url
from mlobs.report.stores import parse_target, strip_userinfo
from servers.stores import GitHttpServer, bare_repo, git_dump, git_log
from test_actions import parse_output_file

BIN = Path(sys.executable).parent
TOKEN = "ghs_mlobsTestToken0123456789abcdef"


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "srv"
    repo = bare_repo(root / "acme" / "models.git")
    with GitHttpServer(root, TOKEN) as server:
        yield server, repo


@pytest.fixture
def lake(tmp_path):
    catalog = f"uri=sqlite:///{tmp_path / 'lake' / 'catalog.db'},warehouse={(tmp_path / 'lake' / 'wh').as_uri()}"
    engine = open_engine("pyiceberg", CatalogConfig.parse(catalog, "mlobs.predictions", tmp_path))
    lakegen.write(engine, "v1", accuracy=0.9)
    engine.close()
    return catalog


def git_shim(tmp_path: Path) -> tuple[Path, Path]:
    """A `git` first on PATH that logs its argv, then runs the real git."""
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    folder, log = tmp_path / "shim", tmp_path / "git-argv.log"
    folder.mkdir()
    shim = folder / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return folder, log


def run_action(tmp_path: Path, server_url: str, catalog: str, token: str, *extra: str):
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    output = tmp_path / "github_output"
    output.write_text("")
    shim, log = git_shim(tmp_path) if not (tmp_path / "shim").exists() else (tmp_path / "shim",
                                                                               tmp_path / "git-argv.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    env.update({"PATH": f"{shim}:{env['PATH']}", "GITHUB_SERVER_URL": server_url,
                "GITHUB_REPOSITORY": "acme/models", "GITHUB_OUTPUT": str(output),
                "MLOBS_GITHUB_TOKEN": token})  # as entrypoint.py passes secrets: by environment
    proc = subprocess.run([str(BIN / "mlobs"), "publish-report", f"--working-directory={workspace}",
                           f"--catalog={catalog}", "--versions=v1", "--publish-to=gh-pages", "--dry-run",
                           *extra], env=env, capture_output=True, text=True, timeout=300)
    return proc, parse_output_file(output.read_text()), log


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_gh_pages_push_with_the_job_token_and_pages_url(tmp_path, served, lake):
    server, repo = served
    proc, outputs, log = run_action(tmp_path, server.url, lake, TOKEN)
    assert proc.returncode == 0, proc.stderr
    site = git_dump(repo, "gh-pages")
    assert {"v1/index.html", "v1/report.json", "index.html", "versions.json", ".nojekyll"} <= set(site)
    # GitHub Enterprise Server's Pages address (subdomain isolation) for a non-github.com server
    assert outputs["report-url"] == "http://pages.127.0.0.1/acme/models/v1/index.html"
    comment = (tmp_path / "workspace" / ".mlobs" / "dry-run" / "publish-report" / "comment.md").read_text()
    assert "(http://pages.127.0.0.1/acme/models/v1/index.html)" in comment

    # the token went to the server as a header, and nowhere else
    expected = "Basic " + __import__("base64").b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert expected.lower() in {a.lower() for a in server.authorizations}
    assert any(r.startswith("POST /acme/models.git/git-receive-pack") for r in server.requests)
    argv = log.read_text()
    assert "push" in argv and TOKEN not in argv and "x-access-token" not in argv
    assert TOKEN not in proc.stdout + proc.stderr
    assert files_containing(tmp_path, TOKEN.encode()) == []
    import base64

    assert files_containing(tmp_path, base64.b64encode(f"x-access-token:{TOKEN}".encode())) == []


def test_a_wrong_token_is_one_line_exit_2_and_pushes_nothing(tmp_path, served, lake):
    server, repo = served
    proc, outputs, _ = run_action(tmp_path, server.url, lake, "ghs_wrong")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error: cannot fetch") and "ghs_wrong" not in lines[0]
    assert outputs["result"] == "error"
    assert git_log(repo, "gh-pages") == []


def test_credentials_in_a_git_url_become_a_header_and_are_never_shown(tmp_path, served, lake):
    server, repo = served
    url = server.url.replace("http://", f"http://x-access-token:{TOKEN}@") + "/acme/models.git"
    proc, outputs, log = run_action(tmp_path, server.url, lake, "", f"--publish-to=git+{url}#reports")
    assert proc.returncode == 0, proc.stderr
    assert set(git_dump(repo, "reports")) >= {"v1/index.html", "index.html"}
    assert TOKEN not in log.read_text() and TOKEN not in proc.stdout + proc.stderr
    assert files_containing(tmp_path / "workspace", TOKEN.encode()) == []
    summary = json.loads((tmp_path / "workspace" / ".mlobs" / "publish-results.json").read_text())
    assert summary["store"] == f"{server.url}/acme/models.git#reports"
    assert outputs["report-url"] == ""  # no report-url and not GitHub Pages: no public address


@pytest.mark.parametrize(("server", "repository", "expected"), [
    ("https://github.com", "acme/models", "https://acme.github.io/models/"),
    ("https://github.com", "Acme/Models", "https://acme.github.io/Models/"),
    ("https://github.com", "acme/acme.github.io", "https://acme.github.io/"),
    ("https://github.com", "Acme/acme.GitHub.io", "https://acme.github.io/"),
    ("", "octo-org/reports", "https://octo-org.github.io/reports/"),
    ("https://ghe.example.com", "team/models", "https://pages.ghe.example.com/team/models/"),
])
def test_github_pages_url_pattern(server, repository, expected):
    env = {"GITHUB_REPOSITORY": repository, **({"GITHUB_SERVER_URL": server} if server else {})}
    assert pages_url(env) == expected


def test_report_url_input_wins_over_the_pages_pattern(tmp_path, served, lake):
    server, _ = served
    proc, outputs, _ = run_action(tmp_path, server.url, lake, TOKEN, "--report-url=https://models.acme.dev/")
    assert proc.returncode == 0, proc.stderr
    assert outputs["report-url"] == "https://models.acme.dev/v1/index.html"


@pytest.mark.parametrize(("text", "message"), [
    ("ftp://host/x", "not a known target"),
    ("git+https://host/x.git", "name the branch"),
    ("git+https://user:hunter2@host/x.git", "name the branch"),
    ("git+https://host/x.git#-rf", "name the branch"),
    ("git+#main", "expected git+<url>#<branch>"),
    ("s3://A_Bucket/x", "not a valid bucket name"),
    ("s3://bucket/../x", "plain path"),
])
def test_bad_publish_to_is_a_clear_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse_target(text, Path("public"), {"GITHUB_REPOSITORY": "acme/models"})
    assert message in str(info.value) and "hunter2" not in str(info.value)


def test_publish_to_forms():
    env = {"GITHUB_REPOSITORY": "acme/models", "GITHUB_SERVER_URL": "https://github.com"}
    assert parse_target("gh-pages", Path("p"), env).display == "https://github.com/acme/models.git#gh-pages"
    s3 = parse_target("s3://reports/ml/models/", Path("p"), env)
    assert (s3.location, s3.prefix, s3.display) == ("reports", "ml/models", "s3://reports/ml/models")
    git = parse_target("git+https://u:p@git.example/r.git#pages", Path("p"), env)
    assert git.display == "https://git.example/r.git#pages" and git.branch == "pages"
    assert strip_userinfo("https://u:p@h:8443/x?y#z") == "https://h:8443/x?y#z"
    with pytest.raises(ConfigError):
        parse_target("gh-pages", Path("p"), {})


def test_gh_pages_without_a_token_is_refused_before_anything(tmp_path, served, lake):
    server, repo = served
    proc, outputs, _ = run_action(tmp_path, server.url, lake, "")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlobs: error: publish-to: gh-pages pushes with github-token: pass the job's token (the "
        "default) and grant the job `permissions: contents: write`"]
    assert server.requests == [] and git_log(repo, "gh-pages") == []
