"""Workflow commands and environment files, read back the way the runner reads them."""

from __future__ import annotations

import io
import re

from mlobs.github.actions import SUMMARY_LIMIT_BYTES, GithubActions


def parse_output_file(text: str) -> dict[str, str]:
    """The runner's parser for $GITHUB_OUTPUT: name=value lines and name<<DELIM heredocs."""
    values, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if line:
            name, value = line.split("=", 1)
            values[name] = value
        i += 1
    return values


def test_outputs_single_and_multi_line(tmp_path):
    path = tmp_path / "out"
    gha = GithubActions(stream=io.StringIO(), env={"GITHUB_OUTPUT": str(path)})
    gha.set_output("result", "fail")
    tricky = "line 1\nghadelimiter_x\nEOF\nname=value"
    gha.set_output("summary", tricky)
    assert parse_output_file(path.read_text()) == {"result": "fail", "summary": tricky}


def test_command_values_are_escaped():
    stream = io.StringIO()
    gha = GithubActions(stream=stream, env={})
    gha.error("50% of\nrequests", file="features/a,b:c.feature", line=7, title="p99, eu:west")
    line = stream.getvalue()
    assert line == "::error file=features/a%2Cb%3Ac.feature,line=7,title=p99%2C eu%3Awest::50%25 of%0Arequests\n"


def test_add_mask_and_group():
    stream = io.StringIO()
    gha = GithubActions(stream=stream, env={})
    gha.add_mask("s3cr3t")
    gha.add_mask("")
    with gha.group("Loki queries"):
        pass
    assert stream.getvalue().splitlines() == ["::add-mask::s3cr3t", "::group::Loki queries", "::endgroup::"]


def test_summary_stays_under_one_mebibyte_including_what_is_there(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("x" * 600_000)
    gha = GithubActions(stream=io.StringIO(), env={"GITHUB_STEP_SUMMARY": str(path)})
    gha.append_summary("## Big\n" + "\n".join("| é row |" * 10 for _ in range(10_000)))
    size = path.stat().st_size
    assert size <= SUMMARY_LIMIT_BYTES
    assert re.search(r"Truncated: \d+ characters omitted", path.read_text())


def test_no_env_files_outside_actions():
    gha = GithubActions(stream=io.StringIO(), env={})
    assert gha.set_output("a", "b") is False
    assert gha.append_summary("x") is False
