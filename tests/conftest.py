from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:  # tests import the doubles as `servers.<name>`
    sys.path.insert(0, str(TESTS))

from servers.github import GithubDouble  # noqa: E402


@pytest.fixture
def github():
    with GithubDouble() as double:
        yield double


@pytest.fixture
def gha_env(tmp_path, github):
    """A runner's environment for a pull_request event, with env files in tmp_path."""
    import json

    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 7, "pull_request": {"number": 7, "head": {"sha": "a" * 40}}}))
    output, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    output.touch()
    summary.touch()
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": github.repo,
        "GITHUB_SHA": "b" * 40,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_API_URL": github.url,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "MLOBS_GITHUB_WRITE_INTERVAL": "0",
    }


@pytest.fixture
def stream():
    return io.StringIO()


# Fixtures that train a model or start a model server (torch, BentoML): every test that needs one,
# directly or through another fixture, is `slow`, so `pytest -m "not slow"` stays a quick inner
# loop. Modules that are heavy throughout (Spark, the container) mark themselves.
HEAVY_FIXTURES = frozenset({"tiny_model", "bento_home"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser):
    # tests/test_golden.py: rewrite the golden files from what the code renders now (review the
    # diff with `git diff tests/golden`), instead of failing on a difference.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current rendering instead of comparing")
