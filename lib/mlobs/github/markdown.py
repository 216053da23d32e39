"""Markdown for comments, check runs and job summaries: escaping, tables, size limits.

Everything user-controlled (scenario names, class labels, model versions, error text) goes through
:func:`text` or :func:`code` before it enters Markdown, so it renders as the literal text it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import quote

# GitHub's limits, counted the way GitHub counts them.
COMMENT_LIMIT = 65_536  # issue and commit comment bodies: characters ("maximum is 65536 characters")
# check-run output.summary and output.text: documented as "65535 characters", enforced in BYTES
# ("summary exceeds a maximum bytesize of 65535"; github/docs#35252) — ✅ ❌ — · ≥ are 3 bytes each.
CHECK_TEXT_LIMIT_BYTES = 65_535
TITLE_LIMIT = 255  # annotation titles (documented); also used for every other title we send

MENTION_BREAK = "@\u200b"  # "@" + ZERO WIDTH SPACE: shows as "@", mentions no one

# Inline punctuation that can start emphasis, code, links, tables or strike-through anywhere...
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# ...and what only matters at the start of a line (headings, lists, quotes, numbered lists).
_LINE_START = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)](?=\s|$)|(?<!\d)[#>+\-=])")


def text(value: object) -> str:
    """Escape a value for inline Markdown (safe inside a table cell, on one line).

    HTML is entity-escaped (so ``<script>`` or ``<!-- marker -->`` show as text), Markdown
    punctuation is backslash-escaped, newlines collapse to spaces, and ``@`` cannot mention anyone:
    GitHub finds mentions after rendering, so neither ``\\@`` nor ``&#64;`` stops one
    (github/markup#1168, cmark-gfm#181); a zero-width space after the ``@`` does.
    """
    s = html.escape(str(value), quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = s.replace("@", MENTION_BREAK)
    s = " ".join(s.split())
    return _LINE_START.sub(lambda m: m[1] + "\\" + m[2], s)


def code(value: object, table: bool = True) -> str:
    """An inline code span for a value (a query, a path): fence longer than any backtick run.

    Pipes are escaped as GitHub tables require even inside code (``table=False`` for a span
    outside any table, where the backslash would show); newlines become spaces.
    """
    s = " ".join(str(value).split())
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|') if table else s}{pad}{fence}"


# Characters a link target may keep as they are: none of them can end the link or start HTML.
_URL_SAFE = ":/?#@!$&*+,;=%-._~"


def url(value: object) -> str:
    """A URL as a Markdown link target ``[text](url)``: spaces, parentheses, brackets, quotes,
    ``<``, ``>``, backticks and pipes are percent-encoded, so a user's URL cannot close the link,
    start HTML or split a table cell. Existing ``%XX`` escapes are kept."""
    return quote(" ".join(str(value).split()), safe=_URL_SAFE)


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


def utf8_size(value: str) -> int:
    return len(value.encode("utf-8"))


def utf16_size(value: str) -> int:
    """UTF-16 code units: never fewer than code points, so a limit met here is met either way."""
    return len(value.encode("utf-16-le")) // 2


def fit(markdown: str, limit: int, measure: Callable[[str], int] = len,
        where_full: str = "the job summary") -> str:
    """Like :func:`truncate`, for a limit in any unit ``measure`` counts (bytes, UTF-16 units).

    A character is at most 4 units of any measure used here, so ``limit // 4`` characters always
    fit; a binary search then keeps as much as the limit allows.
    """
    if measure(markdown) <= limit:
        return markdown
    if limit <= 200:
        return ""
    lo, hi = limit // 4, min(len(markdown), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(truncate(markdown, mid, where_full)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return truncate(markdown, lo, where_full)


def truncate_bytes(markdown: str, limit_bytes: int, where_full: str = "the uploaded results") -> str:
    """Like :func:`truncate` for a byte budget (UTF-8): the job summary, check-run texts."""
    return fit(markdown, limit_bytes, utf8_size, where_full)


def clip(value: str, limit: int) -> str:
    """Plain one-line text (a title) of at most ``limit`` characters, ending in "…" when cut."""
    value = " ".join(str(value).split())
    return value if len(value) <= limit else value[: max(0, limit - 1)].rstrip() + "…"


def clip_bytes(value: str, limit_bytes: int) -> str:
    """Plain text of at most ``limit_bytes`` UTF-8 bytes, with a note when cut (never mid-character)."""
    if utf8_size(value) <= limit_bytes:
        return value
    note = "\n… (truncated to fit GitHub's limit)"
    head = value.encode("utf-8")[: max(0, limit_bytes - utf8_size(note))].decode("utf-8", "ignore")
    return head + note
