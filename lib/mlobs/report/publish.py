"""Publish report pages to a store: read what is published, verify, add, regenerate, commit.

One attempt reads a snapshot of the store (the manifest ``versions.json`` and the pages of the
versions being published or compared), then plans:

- a version not published yet gets its page and its data (``<version>/report.json``, the report
  document the page was built from) — that run becomes the version's *pinned* run;
- a version already published is checked against its published data: the table's run must give
  byte-identical data (a re-evaluation with other results is refused, exit 2, unless ``force``),
  and its pages are rebuilt from the published data and compared byte for byte; a page built by an
  earlier layout is kept as published, never rewritten;
- a baseline that is already published is compared through its published (pinned) data, never a
  newer run of it;
- new comparison pages are added; the index and the manifest are regenerated from everything
  published.

The commit is conditional on the snapshot (see `mlobs.report.stores`): when another job published
in between, the attempt is planned again on a fresh snapshot and retried, so concurrent jobs
publishing different versions all land.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError
from mlobs.evaluate import registry
from mlobs.report import data
from mlobs.report.site import SITE_SCHEMA, Site, build, compare_name, to_json, tree_files
from mlobs.report.stores import (
    INDEX,
    MANIFEST,
    Changes,
    Snapshot,
    Store,
    StoreConflict,
    StoreUnavailable,
)
from mlobs.retry import Backoff

REPORT_JSON = "report.json"
ATTEMPTS = 10
# Each lost attempt means another job's commit landed: plan again on the new snapshot.
CONFLICT_RETRY = Backoff(base=0.1, cap=2.0, attempts=ATTEMPTS)
# Run identity: a re-evaluation of the same model on the same data differs only here.
RUN_IDENTITY = ("run_id", "snapshot_id", "committed_at", "commit_sha")


@dataclass
class Sources:
    """Report documents from the table, each computed at most once across attempts."""

    newest: Callable[[str], dict]                # a version's document from the run to publish
    pinned: Callable[[str, str], dict | None]    # (version, run id) → document, None if gone
    # (document a, document b) → b's deltas against a with intervals and tests, None if unknown
    statistics: Callable[[dict, dict], dict | None] = lambda a, b: None
    _cache: dict = field(default_factory=dict)

    def doc(self, version: str) -> dict:
        if version not in self._cache:
            self._cache[version] = self.newest(version)
        return self._cache[version]

    def comparison(self, a: dict, b: dict) -> dict | None:
        key = ("statistics", a["run"]["run_id"], b["run"]["run_id"])
        if key not in self._cache:
            self._cache[key] = self.statistics(a, b)
        return self._cache[key]

    def pinned_doc(self, version: str, run_id: str) -> dict | None:
        key = (version, run_id)
        if key not in self._cache:
            self._cache[key] = self.pinned(version, run_id)
        return self._cache[key]


@dataclass
class PublishOutcome:
    """What one publish did to the store, and the documents its pages were built from."""

    store: str
    written: list[str] = field(default_factory=list)    # first published now
    verified: list[str] = field(default_factory=list)   # published before, byte-identical
    kept: list[str] = field(default_factory=list)       # same data, page kept from an older layout
    forced: list[str] = field(default_factory=list)     # replaced with force
    comparisons: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    docs: dict[str, dict] = field(default_factory=dict)  # what pages, comparisons and deltas used
    pinned: dict[str, str] = field(default_factory=dict)  # version → run id its page is pinned to
    versions: list[dict] = field(default_factory=list)   # the manifest entries after publishing
    files: dict[str, bytes] = field(default_factory=dict)  # this run's files (for a local copy)
    attempts: int = 0


def publish(store: Store, versions: list[str], baseline: str | None, sources: Sources,
            site: Site | None = None, *, force: bool = False, attempts: int = ATTEMPTS,
            before_commit: Callable[[int], None] | None = None) -> PublishOutcome:
    """Plan on a fresh snapshot and commit; on a conflict plan again (up to ``attempts`` times)."""
    def attempt() -> PublishOutcome:
        snapshot = store.open()
        with tempfile.TemporaryDirectory(prefix="mlobs-site-") as tmp:
            changes, result = _plan(snapshot, store, versions, baseline, sources, force, Path(tmp),
                                    site)
        if before_commit is not None:
            before_commit(retrying.statistics.get("attempt_number", 1))
        store.commit(snapshot, changes)
        return result

    retrying = CONFLICT_RETRY.within(attempts=attempts).retrying(StoreConflict)
    try:
        result = retrying(attempt)
    except StoreConflict as last:
        raise StoreUnavailable(
            f"could not publish to {store.display} after {attempts} attempts: {last} (another "
            "publish keeps changing it, or one was interrupted half-way — its files are there but "
            "not its manifest entry)") from None
    result.attempts = retrying.statistics.get("attempt_number", 1)
    return result


def read_manifest(snapshot: Snapshot, where: str) -> dict[str, dict]:
    raw = snapshot.read(MANIFEST)
    if raw is None:
        if snapshot.read(INDEX) is not None:
            raise ConfigError(f"{where} already holds a site that is not an mlobs report (an "
                              f"index.html but no {MANIFEST}): publish to an empty branch, bucket "
                              "prefix or folder")
        return {}
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("schema") != SITE_SCHEMA:
        raise ConfigError(f"{where}/{MANIFEST} is not an mlobs site manifest")
    return {e["version"]: e for e in manifest["versions"]}


def same_data(a: dict, b: dict) -> bool:
    """Same report data, whichever run produced it (a re-evaluation with identical results).

    A headline metric registered after one of them was published (mlobs.evaluate.registry) is
    in the other only: it is derived from the data compared here, so it is left out. Likewise
    what a later schema added (``mlobs.report/2``'s intervals, computed from the same counts): a
    document published by an earlier action is compared on the parts it has, so re-publishing
    it verifies instead of being refused.
    """
    shared = set(a.get("headline", {})) & set(b.get("headline", {}))
    keys = (set(a) & set(b)) - {"schema"}

    def strip(doc: dict) -> str:
        copy = {k: v for k, v in doc.items() if k in keys}
        copy["run"] = {k: v for k, v in doc.get("run", {}).items() if k not in RUN_IDENTITY}
        if "headline" in doc:
            copy["headline"] = {k: v for k, v in doc["headline"].items() if k in shared}
        if isinstance(copy.get("intervals"), dict) and "headline" in copy["intervals"]:
            copy["intervals"] = {**copy["intervals"], "headline": {
                k: v for k, v in copy["intervals"]["headline"].items() if k in shared}}
        return to_json(copy)

    return (a.get("schema") in data.REPORT_SCHEMAS and b.get("schema") in data.REPORT_SCHEMAS
            and strip(a) == strip(b))


def data_bytes(doc: dict) -> bytes:
    return (to_json(doc) + "\n").encode()


def _plan(snapshot: Snapshot, store: Store, versions: list[str], baseline: str | None,
          sources: Sources, force: bool, tmp: Path,
          site: Site | None = None) -> tuple[Changes, PublishOutcome]:
    entries = read_manifest(snapshot, store.display)
    result = PublishOutcome(store=store.display)
    docs: dict[str, dict] = {}
    status: dict[str, str] = {}  # version → new, forced, verified, legacy, baseline

    for version in versions:
        new = sources.doc(version)
        published = snapshot.read(f"{version}/{REPORT_JSON}")
        if version in entries and published is not None:
            pinned = json.loads(published)
            if same_data(new, pinned):
                docs[version], status[version] = pinned, "verified"
            elif force:
                docs[version], status[version] = new, "forced"
            else:
                raise ConfigError(_refusal(version, pinned, new))
        elif version in entries:  # published by an mlobs that kept no data: compare pages only
            docs[version], status[version] = new, "legacy"
        else:
            if published is not None and published != data_bytes(new):
                # Files without a manifest entry: another job is publishing this version now, or
                # one was interrupted. Wait for its manifest (retry) rather than mix the two —
                # unless forced, which replaces what the interrupted publish left.
                if not force:
                    raise StoreConflict(f"{store.display}/{version}/ exists but is not in {MANIFEST} yet")
                docs[version], status[version] = new, "forced"
            else:
                docs[version], status[version] = new, "new"

    pairs: list[tuple[str, str]] = []
    for version in versions:
        other = baseline or _previous(entries, version, docs[version])
        if other and other != version:
            pairs.append((other, version))
    for other, _ in pairs:
        if other in docs:
            continue
        if other in entries:
            docs[other] = _pinned(snapshot, entries[other], sources, store.display)
            status[other] = "baseline"
        else:  # a baseline not published yet gets its page too, so the comparison's links work
            docs[other], status[other] = sources.doc(other), "new"

    comparisons = {compare_name(a, b): data.compare_documents(
        docs[a], docs[b], sources.comparison(docs[a], docs[b])) for a, b in pairs}
    for version, state in status.items():
        if state in ("new", "forced"):
            doc = docs[version]
            entries[version] = {"version": version, "compare": entries.get(version, {}).get("compare", []),
                                "committed_at": doc["run"]["committed_at"], "run_id": doc["run"]["run_id"],
                                "snapshot_id": doc["run"]["snapshot_id"], "headline": doc["headline"],
                                "intervals": (doc.get("intervals") or {}).get("headline")}
    for name, comp in comparisons.items():
        entry = entries[comp["b"]]
        if name not in entry["compare"]:
            entry["compare"] = sorted([*entry["compare"], name])
    ordered = sorted(entries.values(), key=lambda e: (e["committed_at"], e["version"]))

    built_docs = [docs[v] for v, s in status.items() if s != "baseline"]
    public = build(tmp, built_docs, list(comparisons.values()), ordered, site)
    changes = Changes(message=_message(status, docs))
    for version, state in status.items():
        if state == "baseline":
            continue
        pages = tree_files(public, f"{version}/")
        if state != "legacy":
            pages[f"{version}/{REPORT_JSON}"] = data_bytes(docs[version])
        current = {path: snapshot.read(path) for path in snapshot.list(f"{version}/")}
        if state == "forced":
            changes.replace.update(pages)
            changes.delete += sorted(set(current) - set(pages))
            result.forced.append(version)
        elif state == "new":
            changes.create.update(pages)
            result.written.append(version)
        elif current == pages:
            result.verified.append(version)
        elif state == "legacy":
            if not force:
                raise ConfigError(_refusal(version, None, docs[version]))
            changes.replace.update(pages)
            changes.delete += sorted(set(current) - set(pages))
            result.forced.append(version)
        else:  # same data, other bytes: an older layout built it; the published page stands
            result.kept.append(version)
        result.files.update(current if version in result.kept or version in result.verified else pages)
    forced = set(result.forced)
    for name, comp in comparisons.items():
        path = f"compare/{name}/index.html"
        page = (public / path).read_bytes()
        current = snapshot.read(path)
        if current is None:
            changes.create[path] = page
        elif current != page and {comp["a"], comp["b"]} & forced:
            changes.replace[path] = page
        result.files[path] = changes.create.get(path) or changes.replace.get(path) or current
    changes.site[INDEX] = (public / INDEX).read_bytes()
    if store.kind == "git":
        changes.site[".nojekyll"] = b""  # GitHub Pages: serve the files as they are, no Jekyll
    changes.manifest = (to_json({"schema": SITE_SCHEMA, "versions": ordered}) + "\n").encode()
    result.files[INDEX], result.files[MANIFEST] = changes.site[INDEX], changes.manifest

    result.comparisons = list(comparisons)
    result.pairs = pairs
    result.docs = docs
    result.pinned = {e["version"]: e["run_id"] for e in ordered}
    result.versions = ordered
    return changes, result


def _pinned(snapshot: Snapshot, entry: dict, sources: Sources, where: str) -> dict:
    """A published version's data: its report.json, else (older sites) its pinned run's data."""
    version = entry["version"]
    raw = snapshot.read(f"{version}/{REPORT_JSON}")
    if raw is not None:
        return json.loads(raw)
    doc = sources.pinned_doc(version, entry["run_id"])
    if doc is None:
        raise ConfigError(f"{version!r} is published in {where} from run {entry['run_id']!r}, which "
                          "is no longer in the table; compare with another version")
    return doc


def _previous(entries: dict[str, dict], version: str, doc: dict) -> str | None:
    committed = doc["run"]["committed_at"]
    earlier = sorted((e for e in entries.values() if e["version"] != version and e["committed_at"] <= committed),
                     key=lambda e: (e["committed_at"], e["version"]))
    return earlier[-1]["version"] if earlier else None


def _refusal(version: str, published: dict | None, new: dict) -> str:
    primary = registry.primary()

    def shown(doc: dict) -> str:
        value = doc["headline"].get(primary.name)
        return f"run {doc['run']['run_id']!r}" + (f", {primary.name} {primary.format(value)}"
                                                  if value is not None else "")

    was = f" from {shown(published)}" if published else ""
    return (f"version {version!r} is already published{was}; its {shown(new)} gives different report "
            "data — published versions are immutable: publish it under a new version name, or pass "
            "force to replace it")


def _message(status: dict[str, str], docs: dict[str, dict]) -> str:
    new = [f"{v} (run {docs[v]['run']['run_id']})" for v, s in status.items() if s in ("new", "forced")]
    return "mlobs: publish " + (", ".join(new) if new else "the index") + "\n"
