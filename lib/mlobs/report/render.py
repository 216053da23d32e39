"""publish-report's outcome → Markdown: headline metrics, deltas, links to the pages."""

from __future__ import annotations

from mlobs import modes
from mlobs.github import markdown as md
from mlobs.report.site import compare_name
from mlobs.result import Report, Verdict

METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece", "error_rate")


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def render(versions, docs, pairs, published, report_url: str | None, key: str = "") -> Report:
    """``docs`` are the documents the pages were built from: a published version's pinned data."""
    base = (report_url or "").rstrip("/")

    def link(text: str, path: str) -> str:
        return f"[{md.text(text)}]({md.url(f'{base}/{path}')})" if base else md.code(path)

    baseline_of = {b: a for a, b in pairs}
    rows = []
    for v in versions:
        h = docs[v]["headline"]
        other = baseline_of.get(v)
        cells = [link(v, f"{v}/index.html"), str(h["n"])]
        for name in METRICS:
            value = _num(h[name])
            if other:
                before = docs[other]["headline"][name]
                if before is not None and h[name] is not None:
                    value += f" ({h[name] - before:+.3f})"
            cells.append(value)
        cells.append(link(f"{other} → {v}", f"compare/{compare_name(other, v)}/index.html") if other else "—")
        rows.append(cells)
    table = md.table(["Version", "n", *METRICS, "Comparison"], rows)
    state = []
    if published.written:
        state.append("published " + ", ".join(md.code(v) for v in published.written))
    if published.forced:
        state.append("replaced (force) " + ", ".join(md.code(v) for v in published.forced))
    if published.verified:
        state.append("already published and byte-identical: " + ", ".join(md.code(v) for v in published.verified))
    if published.kept:
        state.append("already published with the same data, pages kept as first built: "
                     + ", ".join(md.code(v) for v in published.kept))
    head = f"**{Verdict.PASS.icon}** — {'; '.join(state) or 'nothing new'}."
    pinned = [a for a, _ in pairs if a in published.pinned and a not in versions]
    note = "Deltas are against the compared version"
    if pinned:
        note += ", as published (" + ", ".join(
            f"{md.code(a)} from run {md.code(published.pinned[a])}" for a in dict.fromkeys(pinned)) + ")"
    where = (f"Site: {md.url(f'{base}/index.html')}" if base else f"Site: {md.code(published.store)}")
    head = f"{head} {note}."
    body = f"{head}\n\n{table}\n\n{where}\n"
    title = f"{modes.TITLES[modes.PUBLISH_REPORT]}: {', '.join(versions)}"
    return Report(mode=modes.PUBLISH_REPORT, verdict=Verdict.PASS, title=title,
                  summary=head + "\n", body=body, key=key)
