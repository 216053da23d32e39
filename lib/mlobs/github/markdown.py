"""Markdown for comments, check runs and job summaries: escaping, tables, size limits.

Everything user-controlled (scenario names, class labels, model versions, error text) goes through
:func:`text` or :func:`code` before it enters Markdown, so it renders as the literal text it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

COMMENT_LIMIT = 65_536  # characters, issue and commit comment bodies
CHECK_TEXT_LIMIT = 65_535  # characters, check-run output.summary and output.text

# Inline punctuation that can start emphasis, code, links, tables or strike-through anywhere...
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# ...and what only matters at the start of a line (headings, lists, quotes, numbered lists).
_LINE_START = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)](?=\s|$)|(?<!\d)[#>+\-=])")


def text(value: object) -> str:
    """Escape a value for inline Markdown (safe inside a table cell, on one line).

    HTML is entity-escaped (so ``<script>`` or ``<!-- marker -->`` show as text), Markdown
    punctuation is backslash-escaped, newlines collapse to spaces, and ``@`` cannot mention anyone.
    """
    s = html.escape(str(value), quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = s.replace("@", "&#64;")
    s = " ".join(s.split())
    return _LINE_START.sub(lambda m: m[1] + "\\" + m[2], s)


def code(value: object) -> str:
    """An inline code span for a value (a query, a path): fence longer than any backtick run.

    Pipes are escaped as GitHub tables require even inside code; newlines become spaces.
    """
    s = " ".join(str(value).split())
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def code_block(value: str, lang: str = "") -> str:
    """A fenced block whose fence is longer than any backtick run inside (nothing escapes it)."""
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{value}\n{fence}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub table. Cells must already be escaped (use :func:`text` / :func:`code`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def truncate(markdown: str, limit: int, where_full: str = "the job summary") -> str:
    """Trim to ``limit`` characters with a visible note; cut on a line boundary when possible."""
    if len(markdown) <= limit:
        return markdown
    note_template = "\n\n> [!NOTE]\n> Truncated: {n} characters omitted to fit GitHub's limit; see {where}.\n"
    note = note_template.format(n=len(markdown), where=where_full)  # upper bound on the note's size
    keep = max(0, limit - len(note))
    cut = markdown.rfind("\n", 0, keep)
    head = markdown[: cut if cut > keep // 2 else keep]
    return head + note_template.format(n=len(markdown) - len(head), where=where_full)


def truncate_bytes(markdown: str, limit_bytes: int) -> str:
    """Like :func:`truncate` for a byte budget (UTF-8), for the 1 MiB job summary."""
    if len(markdown.encode("utf-8")) <= limit_bytes:
        return markdown
    if limit_bytes <= 200:
        return ""
    # Characters are at most 4 bytes: a char limit of budget/4 is always safe, then grow towards it.
    lo, hi = limit_bytes // 4, min(len(markdown), limit_bytes)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(truncate(markdown, mid, "the uploaded results").encode("utf-8")) <= limit_bytes:
            lo = mid
        else:
            hi = mid - 1
    return truncate(markdown, lo, "the uploaded results")
