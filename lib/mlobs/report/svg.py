"""Charts as inline SVG, drawn at build time: no JavaScript, no CDN, open from any file system.

Every text that comes from data is XML-escaped here; numbers are formatted with fixed precision
so the same data always gives the same bytes. Each chart has a <title> and the page shows the
same numbers in a table beside it.
"""

from __future__ import annotations

import math
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


def _whisker(x1: float, x2: float, y: float, colour: str = "#222", cap: float = 3) -> str:
    """A horizontal interval from x1 to x2 at height y, with end caps."""
    return (f'<path d="M{_t(x1)},{_t(y - cap)}v{_t(2 * cap)}M{_t(x1)},{_t(y)}H{_t(x2)}'
            f'M{_t(x2)},{_t(y - cap)}v{_t(2 * cap)}" stroke="{colour}" stroke-width="1.2" fill="none"/>')


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def grouped_bars(categories: list[str], series: dict[str, list[float]], title: str,
                 errors: dict[str, list[tuple[float, float] | None]] | None = None) -> str:
    """Horizontal bars in [0, 1], one group per category (e.g. precision/recall/F1 per class),
    with each bar's 95 % interval as an error bar when ``errors`` gives it."""
    palette = ["#4575b4", "#91bfdb", "#fc8d59", "#d73027"]
    bar, gap, left, scale = 9, 8, 130, 300
    group = bar * len(series) + gap
    top = 26
    height = top + group * len(categories)
    body = []
    for k, name in enumerate(series):
        body.append(f'<rect x="{left + k * 90}" y="6" width="10" height="10" fill="{palette[k % 4]}"/>')
        body.append(_text(left + k * 90 + 14, 15, name))
    if errors:
        x = left + len(series) * 90
        body.append(_whisker(x, x + 16, 11))
        body.append(_text(x + 20, 15, "95 % interval"))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * scale
        body.append(f'<line x1="{_t(x)}" y1="{top - 4}" x2="{_t(x)}" y2="{height}" stroke="#eee"/>')
        body.append(_text(x, height + 14, f"{tick:g}", "middle", ' fill="#555"'))
    for i, category in enumerate(categories):
        y0 = top + i * group
        body.append(_text(left - 6, y0 + group / 2, _short(category), "end"))
        for k, (name, values) in enumerate(series.items()):
            value = _clamp(values[i] or 0.0)
            y = y0 + k * bar
            bounds = (errors or {}).get(name, [None] * len(categories))[i]
            tip = f"{category}: {name} {value:.3f}"
            if bounds is not None:
                tip += f" [{bounds[0]:.3f}, {bounds[1]:.3f}]"
            body.append(f'<rect x="{left}" y="{y}" width="{_t(value * scale)}" height="{bar - 1}" '
                        f'fill="{palette[k % 4]}"><title>{escape(tip)}</title></rect>')
            if bounds is not None:
                body.append(_whisker(left + _clamp(bounds[0]) * scale,
                                     left + _clamp(bounds[1]) * scale, y + (bar - 1) / 2, cap=2))
    body.append(f'<line x1="{left}" y1="22" x2="{left}" y2="{height}" stroke="#999"/>')
    legend_end = left + len(series) * 90 + (20 + _text_width("95 % interval") if errors else 0)
    return _svg(max(left + scale + 50, legend_end + 10), height + 22, title, body)


def intervals(rows: list[dict], title: str) -> str:
    """One row per metric on a 0–1 axis: the value as a dot, its 95 % interval as an error bar,
    the formatted value (and interval) as text on the right. ``rows``: {label, value, low, high,
    text}; a row without bounds shows the dot alone, one without a value only its label."""
    left, scale, right, row, top = 190, 320, 210, 26, 10
    height = top + row * len(rows)
    body = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * scale
        body.append(f'<line x1="{_t(x)}" y1="{top}" x2="{_t(x)}" y2="{height}" stroke="#eee"/>')
        body.append(_text(x, height + 14, f"{tick:g}", "middle", ' fill="#555"'))
    for i, r in enumerate(rows):
        y = top + i * row + row / 2
        body.append(_text(left - 8, y + 4, _short(r["label"], 30), "end"))
        body.append(_text(left + scale + 12, y + 4, r.get("text") or "—"))
        if r.get("value") is None:
            continue
        if r.get("low") is not None and r.get("high") is not None:
            body.append(_whisker(left + _clamp(r["low"]) * scale, left + _clamp(r["high"]) * scale,
                                 y, "#4575b4", 5))
        tip = f"{r['label']}: {r.get('text') or r['value']}"
        body.append(f'<circle cx="{_t(left + _clamp(r["value"]) * scale)}" cy="{_t(y)}" r="4" '
                    f'fill="#d73027"><title>{escape(tip)}</title></circle>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height}" stroke="#999"/>')
    body.append(_text(left + scale / 2, height + 30, "value, with its 95 % interval", "middle"))
    return _svg(left + scale + right, height + 38, title, body)


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


def _text_width(text: str) -> float:
    """Roughly how wide 11 px system-ui text is (for laying out a legend that never clips)."""
    return 6.2 * len(text) + 4


def _nice_range(values: list[float]) -> tuple[float, float]:
    """A y-range within [0, 1] that holds every value, on steps of 0.05, at least 0.1 tall."""
    if not values:
        return 0.0, 1.0
    low = max(0.0, math.floor(round(min(values) / 0.05, 9)) * 0.05)
    high = min(1.0, math.ceil(round(max(values) / 0.05, 9)) * 0.05)
    if high - low < 0.1:
        if high >= 1.0:
            low = 0.9
        else:
            high = min(1.0, low + 0.1)
            low = high - 0.1
    return round(low, 2), round(high, 2)


def history(points: list[dict], metrics: list[str], title: str,
            labels: dict[str, str] | None = None) -> str:
    """Lines of headline metrics across published versions, oldest first, each over a band of
    its 95 % intervals (where a version's data has them: ``point["intervals"][metric]`` with
    low/high; a version published before intervals existed leaves a gap in the band)."""
    palette = ["#4575b4", "#d73027", "#1a9850", "#984ea3"]
    labels = labels or {}
    left, right, plot_h = 56, 90, 220  # room on the right for the last version's slanted name
    step = 96
    w = max(560.0, step * max(1, len(points) - 1))
    # legend: entries laid out left to right, wrapped so that none is clipped
    legend, x, y = [], 0.0, 0
    entries = [(k, labels.get(name, name)) for k, name in enumerate(metrics)]
    entries.append((-1, "95 % interval"))
    for k, text in entries:
        width = 18 + _text_width(text) + 12
        if x and x + width > w:
            x, y = 0.0, y + 18
        legend.append((k, text, x, y))
        x += width
    top = 16 + y + 18
    values = []
    for p in points:
        for name in metrics:
            value = p["headline"].get(name)
            if value is not None:
                values.append(value)
            bounds = (p.get("intervals") or {}).get(name)
            if bounds:
                values += [bounds["low"], bounds["high"]]
    y_min, y_max = _nice_range(values)

    def ypos(value: float) -> float:
        return top + plot_h - (value - y_min) / (y_max - y_min) * plot_h

    step_x = w / max(1, len(points) - 1)

    def xpos(i: int) -> float:
        return left + (i * step_x if len(points) > 1 else w / 2)

    body = []
    for k, text, lx, ly in legend:
        colour = "#999" if k < 0 else palette[k % 4]
        if k < 0:
            body.append(f'<rect x="{_t(left + lx)}" y="{_t(4 + ly)}" width="14" height="10" '
                        f'fill="{colour}" fill-opacity="0.25"/>')
        else:
            body.append(f'<rect x="{_t(left + lx)}" y="{_t(4 + ly)}" width="14" height="10" '
                        f'fill="{colour}"/>')
        body.append(_text(left + lx + 18, 13 + ly, text))
    body.append(f'<rect x="{left}" y="{_t(top)}" width="{_t(w)}" height="{plot_h}" fill="none" '
                f'stroke="#ccc"/>')
    span = y_max - y_min
    tick = next(t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25) if span / t <= 8)
    first = math.ceil(round(y_min / tick, 9))
    for t in range(first, math.floor(round(y_max / tick, 9)) + 1):
        value = t * tick
        y = ypos(value)
        if y_min < value < y_max:
            body.append(f'<line x1="{left}" y1="{_t(y)}" x2="{_t(left + w)}" y2="{_t(y)}" '
                        f'stroke="#eee"/>')
        body.append(_text(left - 6, y + 4, f"{value:.2f}", "end", ' fill="#555"'))
    body.append(f'<g transform="translate(14,{_t(top + plot_h / 2)}) rotate(-90)">'
                f'{_text(0, 0, "value", "middle")}</g>')
    for k, name in enumerate(metrics):
        colour = palette[k % 4]
        # bands over each run of consecutive versions that have this metric's interval
        run: list[tuple[float, float, float]] = []
        spans: list[list[tuple[float, float, float]]] = []
        for i, p in enumerate(points):
            bounds = (p.get("intervals") or {}).get(name)
            if bounds and bounds.get("low") is not None and bounds.get("high") is not None:
                run.append((xpos(i), ypos(bounds["low"]), ypos(bounds["high"])))
            elif run:
                spans.append(run)
                run = []
        if run:
            spans.append(run)
        for span in spans:
            if len(span) == 1:
                x0, y_low, y_high = span[0]
                body.append(f'<path d="M{_t(x0 - 4)},{_t(y_low)}H{_t(x0 + 4)}M{_t(x0)},{_t(y_low)}'
                            f'V{_t(y_high)}M{_t(x0 - 4)},{_t(y_high)}H{_t(x0 + 4)}" '
                            f'stroke="{colour}" stroke-opacity="0.6" fill="none"/>')
                continue
            outline = [(x0, y_high) for x0, _, y_high in span]
            outline += [(x0, y_low) for x0, y_low, _ in reversed(span)]
            path = " ".join(f"{_t(x0)},{_t(y0)}" for x0, y0 in outline)
            body.append(f'<polygon points="{path}" fill="{colour}" fill-opacity="0.15" '
                        f'stroke="none"/>')
        coords = [(xpos(i), ypos(p["headline"][name]), p)
                  for i, p in enumerate(points) if p["headline"].get(name) is not None]
        if len(coords) > 1:
            path = " ".join(f"{_t(x0)},{_t(y0)}" for x0, y0, _ in coords)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x0, y0, p in coords:
            tip = f"{p['version']}: {labels.get(name, name)} {p['headline'][name]:.3f}"
            bounds = (p.get("intervals") or {}).get(name)
            if bounds:
                tip += f" [{bounds['low']:.3f}, {bounds['high']:.3f}]"
            body.append(f'<circle cx="{_t(x0)}" cy="{_t(y0)}" r="3.5" fill="{colour}">'
                        f'<title>{escape(tip)}</title></circle>')
    for i, p in enumerate(points):
        x0 = xpos(i)
        body.append(f'<line x1="{_t(x0)}" y1="{_t(top + plot_h)}" x2="{_t(x0)}" '
                    f'y2="{_t(top + plot_h + 4)}" stroke="#999"/>')
        body.append(f'<g transform="translate({_t(x0 - 3)},{_t(top + plot_h + 14)}) rotate(30)">'
                    f'{_text(0, 0, _short(p["version"], 16))}</g>')
    body.append(_text(left + w / 2, top + plot_h + 72, "published version (oldest first)",
                      "middle"))
    return _svg(left + w + right, top + plot_h + 80, title, body)
