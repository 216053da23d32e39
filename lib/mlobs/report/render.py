"""publish-report's outcome → Markdown: headline metrics, deltas, links to the pages."""

from __future__ import annotations

from mlobs import modes
from mlobs.evaluate import registry
from mlobs.github import markdown as md
from mlobs.report.site import compare_name
from mlobs.result import Report, Verdict


def render(versions, docs, pairs, published, report_url: str | None, key: str = "") -> Report:
    """``docs`` are the documents the pages were built from: a published version's pinned data."""
    base = (report_url or "").rstrip("/")

    def link(text: str, path: str) -> str:
        return f"[{md.text(text)}]({md.url(f'{base}/{path}')})" if base else md.code(path)

    baseline_of = {b: a for a, b in pairs}
    metrics = registry.metrics()
    rows = []
    for v in versions:
        h = docs[v]["headline"]
        other = baseline_of.get(v)
        cells = [link(v, f"{v}/index.html"), str(h["n"])]
        bounds_of = (docs[v].get("intervals") or {}).get("headline", {})
        for metric in metrics:  # a version published before a metric existed lacks it: —
            now = h.get(metric.name)
            value = metric.format(now)
            bounds = bounds_of.get(metric.name)
            if now is not None and bounds:  # a version published before intervals has none
                value += f" [{metric.format(bounds['low'])}, {metric.format(bounds['high'])}]"
            if other:
                before = docs[other]["headline"].get(metric.name)
                if before is not None and now is not None:
                    value += f" ({metric.format_change(now - before)})"
            cells.append(value)
        cells.append(link(f"{other} → {v}", f"compare/{compare_name(other, v)}/index.html") if other else "—")
        rows.append(cells)
    table = md.table(["Version", "n", *(m.name for m in metrics), "Comparison"], rows)
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
    note = "95 % intervals in brackets; deltas are against the compared version"
    if pinned:
        note += ", as published (" + ", ".join(
            f"{md.code(a)} from run {md.code(published.pinned[a])}" for a in dict.fromkeys(pinned)) + ")"
    where = (f"Site: {md.url(f'{base}/index.html')}" if base else f"Site: {md.code(published.store)}")
    head = f"{head} {note}."
    body = f"{head}\n\n{table}\n\n{where}\n"
    title = f"{modes.TITLES[modes.PUBLISH_REPORT]}: {', '.join(versions)}"
    return Report(mode=modes.PUBLISH_REPORT, verdict=Verdict.PASS, title=title,
                  summary=head + "\n", body=body, key=key)
