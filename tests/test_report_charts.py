"""The report's charts: intervals drawn as error bars and bands, and the index's history chart
readable — a real width, a legend that is never clipped, labelled axes. Checked by parsing the SVG
the pages embed (coordinates, not pixels)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mlobs.report import svg

NS = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def width(root: ET.Element) -> float:
    return float(root.get("width"))


def texts(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(f"{NS}text"))


def point(version: str, accuracy: float, macro: float, bands: bool = True) -> dict:
    p = {"version": version, "headline": {"accuracy": accuracy, "macro_f1": macro}}
    if bands:
        p["intervals"] = {"accuracy": {"low": accuracy - 0.03, "high": accuracy + 0.025},
                          "macro_f1": {"low": macro - 0.04, "high": macro + 0.03}}
    return p


def test_the_history_chart_is_wide_labelled_and_its_legend_fits():
    """Two versions used to give an 80 px plot with the second legend entry cut off."""
    root = parse(svg.history([point("v1", 0.89, 0.88), point("v2", 0.70, 0.69)],
                             ["accuracy", "macro_f1"], "history",
                             labels={"accuracy": "accuracy", "macro_f1": "macro F1"}))
    assert width(root) >= 560
    legend = [t for t in texts(root) if t.text in ("accuracy", "macro F1", "95 % interval")]
    assert [t.text for t in legend] == ["accuracy", "macro F1", "95 % interval"]
    for t in legend:  # each entry ends inside the drawing
        assert float(t.get("x")) + svg._text_width(t.text) <= width(root)
    labels = [t.text for t in texts(root)]
    assert "value" in labels and "published version (oldest first)" in labels
    ticks = [float(x) for x in labels if x and x.replace(".", "", 1).isdigit()]
    assert min(ticks) <= 0.66 and max(ticks) >= 0.91  # the axis spans every band
    assert ticks == sorted(ticks) and len(ticks) >= 3
    assert "v1" in labels and "v2" in labels


def test_intervals_are_bands_and_a_version_without_them_leaves_a_gap():
    points = [point("v1", 0.80, 0.79, bands=False), point("v2", 0.82, 0.81),
              point("v3", 0.84, 0.83), point("v4", 0.85, 0.84, bands=False), point("v5", 0.86, 0.85)]
    root = parse(svg.history(points, ["accuracy", "macro_f1"], "history"))
    polygons = list(root.iter(f"{NS}polygon"))
    assert len(polygons) == 2  # v2–v3 for each metric; v5 alone gets an error bar
    assert all(len(p.get("points").split()) == 4 for p in polygons)
    bars = [p for p in root.iter(f"{NS}path") if p.get("stroke-opacity") == "0.6"]
    assert len(bars) == 2  # v5, one per metric
    assert len(list(root.iter(f"{NS}polyline"))) == 2
    titles = [c.find(f"{NS}title").text for c in root.iter(f"{NS}circle")]
    assert "v2: accuracy 0.820 [0.790, 0.845]" in titles and "v1: accuracy 0.800" in titles


def test_per_class_bars_carry_their_intervals_as_error_bars():
    root = parse(svg.grouped_bars(
        ["cat", "dog"], {"precision": [0.9, 0.5], "recall": [0.8, 0.6]}, "per class",
        errors={"precision": [(0.85, 0.95), None], "recall": [(0.7, 0.88), (0.5, 0.7)]}))
    whiskers = [p for p in root.iter(f"{NS}path") if p.get("stroke") == "#222"]
    assert len(whiskers) == 1 + 3  # the legend's sample and the three bars with an interval
    titles = [r.find(f"{NS}title").text for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert "cat: precision 0.900 [0.850, 0.950]" in titles and "dog: precision 0.500" in titles
    legend = next(t for t in texts(root) if t.text == "95 % interval")
    assert float(legend.get("x")) + svg._text_width(legend.text) <= width(root)


def test_headline_metrics_as_dots_with_error_bars():
    rows = [{"label": "accuracy", "value": 0.7, "low": 0.655, "high": 0.738,
             "text": "0.700 [0.655, 0.738]"},
            {"label": "ECE (lower is better)", "value": 0.12, "low": None, "high": None,
             "text": "0.120"},
            {"label": "balanced accuracy", "value": None, "low": None, "high": None, "text": "—"}]
    root = parse(svg.intervals(rows, "headline"))
    assert len(list(root.iter(f"{NS}circle"))) == 2  # no dot without a value
    whiskers = list(root.iter(f"{NS}path"))
    assert len(whiskers) == 1
    d = whiskers[0].get("d")  # from 0.655 to 0.738 on a 320 px axis starting at x=190
    assert f"M{190 + 0.655 * 320:.1f}," in d and f"H{190 + 0.738 * 320:.1f}" in d
    assert [t.text for t in texts(root)].count("0.700 [0.655, 0.738]") == 1
