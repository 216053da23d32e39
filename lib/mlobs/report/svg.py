"""Charts as inline SVG, drawn at build time: no JavaScript, no CDN, open from any file system.

Every text that comes from data is XML-escaped here; numbers are formatted with fixed precision
so the same data always gives the same bytes. Each chart has a <title> and the page shows the
same numbers in a table beside it.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _t(x: float) -> str:
    return f"{x:.1f}"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {_t(width)} {_t(height)}" '
            f'width="{_t(width)}" height="{_t(height)}" {FONT}><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_t(x)}" y="{_t(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def _short(label: str, limit: int = 18) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def heatmap(labels: list[str], columns: list[str], matrix: list[list[float]], title: str,
            diverging: bool = False) -> str:
    """Confusion heat map (rows: true, columns: predicted), shaded by row share; or, diverging,
    a difference matrix shaded blue (up) / red (down) by magnitude."""
    cell, left, top = 34, 130, 80
    # room on the right for the last column's label, which is drawn rotated up and to the right
    width, height = left + cell * len(columns) + 90, top + cell * len(labels) + 10
    body = []
    peak = max((abs(v) for row in matrix for v in row), default=0) or 1
    for j, col in enumerate(columns):
        x = left + cell * j + cell / 2
        body.append(f'<g transform="translate({_t(x)},{top - 6}) rotate(-45)">{_text(0, 0, _short(col))}</g>')
    for i, (label, row) in enumerate(zip(labels, matrix, strict=True)):
        y = top + cell * i
        body.append(_text(left - 6, y + cell / 2 + 4, _short(label), "end"))
        total = sum(row) or 1
        for j, value in enumerate(row):
            if diverging:
                share = abs(value) / peak
                colour = f"rgba(33,102,172,{share:.3f})" if value > 0 else f"rgba(178,24,43,{share:.3f})"
            else:
                share = value / total
                colour = f"rgba(49,54,149,{share:.3f})"
            x = left + cell * j
            body.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}" stroke="#ccc"/>')
            ink = ' fill="#fff"' if share > 0.55 else ""
            shown = f"{value:+g}" if diverging and value else f"{value:g}"
            body.append(_text(x + cell / 2, y + cell / 2 + 4, shown, "middle", ink))
    body.append(_text(4, top - 6, "true ↓  predicted →"))
    return _svg(width, height, title, body)


def grouped_bars(categories: list[str], series: dict[str, list[float]], title: str) -> str:
    """Horizontal bars in [0, 1], one group per category (e.g. precision/recall/F1 per class)."""
    palette = ["#4575b4", "#91bfdb", "#fc8d59", "#d73027"]
    bar, gap, left, scale = 9, 8, 130, 300
    group = bar * len(series) + gap
    height = 30 + group * len(categories)
    body = []
    for k, name in enumerate(series):
        body.append(f'<rect x="{left + k * 90}" y="6" width="10" height="10" fill="{palette[k % 4]}"/>')
        body.append(_text(left + k * 90 + 14, 15, name))
    for i, category in enumerate(categories):
        y0 = 26 + i * group
        body.append(_text(left - 6, y0 + group / 2, _short(category), "end"))
        for k, values in enumerate(series.values()):
            value = max(0.0, min(1.0, values[i] or 0.0))
            y = y0 + k * bar
            body.append(f'<rect x="{left}" y="{y}" width="{_t(value * scale)}" height="{bar - 1}" '
                        f'fill="{palette[k % 4]}"><title>{escape(f"{category}: {value:.3f}")}</title></rect>')
    body.append(f'<line x1="{left}" y1="22" x2="{left}" y2="{height}" stroke="#999"/>')
    return _svg(left + scale + 50, height + 4, title, body)


def reliability(bins: list[dict], title: str) -> str:
    """Accuracy per confidence bin against the diagonal of perfect calibration."""
    size, pad = 220, 30
    body = [f'<rect x="{pad}" y="10" width="{size}" height="{size}" fill="none" stroke="#999"/>',
            f'<line x1="{pad}" y1="{10 + size}" x2="{pad + size}" y2="10" stroke="#999" stroke-dasharray="4 3"/>']
    width = size / max(1, len(bins))
    for i, b in enumerate(bins):
        if not b.get("n") or b.get("accuracy") is None:
            continue
        h = b["accuracy"] * size
        tip = f"{b['low']:.1f}–{b['high']:.1f}: accuracy {b['accuracy']:.3f}, n={b['n']}"
        body.append(f'<rect x="{_t(pad + i * width + 1)}" y="{_t(10 + size - h)}" width="{_t(width - 2)}" '
                    f'height="{_t(h)}" fill="#4575b4" fill-opacity="0.8"><title>{escape(tip)}</title></rect>')
    body.append(_text(pad + size / 2, 10 + size + 22, "confidence", "middle"))
    body.append(f'<g transform="translate(12,{10 + size / 2}) rotate(-90)">{_text(0, 0, "accuracy", "middle")}</g>')
    return _svg(size + pad + 10, size + 46, title, body)


def history(points: list[dict], metrics: list[str], title: str) -> str:
    """Lines of headline metrics across published versions, oldest first."""
    palette = ["#4575b4", "#d73027", "#1a9850", "#984ea3"]
    left, top, w, h = 40, 24, max(120, 70 * max(1, len(points) - 1)), 160
    body = [f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    for k, name in enumerate(metrics):
        body.append(f'<rect x="{left + k * 110}" y="4" width="10" height="10" fill="{palette[k % 4]}"/>')
        body.append(_text(left + k * 110 + 14, 13, name))
    step = w / max(1, len(points) - 1)
    for k, name in enumerate(metrics):
        coords = [(left + i * step, top + h - (p["headline"].get(name) or 0) * h)
                  for i, p in enumerate(points) if p["headline"].get(name) is not None]
        if len(coords) > 1:
            path = " ".join(f"{_t(x)},{_t(y)}" for x, y in coords)
            body.append(f'<polyline points="{path}" fill="none" stroke="{palette[k % 4]}" stroke-width="2"/>')
        for x, y in coords:
            body.append(f'<circle cx="{_t(x)}" cy="{_t(y)}" r="3" fill="{palette[k % 4]}"/>')
    for i, p in enumerate(points):
        x = left + i * step
        body.append(f'<g transform="translate({_t(x)},{top + h + 12}) rotate(30)">{_text(0, 0, _short(p["version"], 14))}</g>')
    return _svg(left + w + 40, top + h + 60, title, body)
