from __future__ import annotations

from mlobs.github import markdown as md


def test_text_escapes_html_markdown_and_mentions():
    out = md.text("<b>x</b> *y* [z](http://e) | @team\nnext")
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert "\\*y\\*" in out and "\\[z\\]" in out and "\\|" in out
    assert "@team" not in out and "@\u200bteam" in out and "\n" not in out


def test_code_span_survives_backticks_and_pipes():
    assert md.code("a|b") == "`a\\|b`"
    assert md.code("x ` y") == "``x ` y``"
    assert md.code("`start") == "`` `start ``"


def test_truncate_under_limit_is_identity_and_over_limit_fits():
    assert md.truncate("short", 100) == "short"
    text = "\n".join(f"line {i}" for i in range(10_000))
    cut = md.truncate(text, 1000)
    assert len(cut) <= 1000 and "Truncated:" in cut


def test_truncate_bytes_counts_utf8():
    text = "€" * 10_000  # 3 bytes each
    cut = md.truncate_bytes(text, 3000)
    assert len(cut.encode()) <= 3000 and "Truncated:" in cut


def test_table_shape():
    assert md.table(["a", "b"], [["1", "2"]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
