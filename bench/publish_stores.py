"""publish-report per store: what reading the published site first, and committing to git or S3,
costs over the local folder (the baseline, measured in the same process).

For each store, a site of N versions is published, then a fresh runner (nothing on disk) adds one
version with its comparison, verifies an already-published version (no change), and adds one more
version after losing one race (the commit is planned again on a fresh snapshot). Stores: a local
folder, a bare git repository over file://, and moto's S3 server on loopback.
Usage: python bench/publish_stores.py [versions]   (needs the dev extra: moto)
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mlobs.lake.catalog import CatalogConfig  # noqa: E402
from mlobs.lake.engine import open_engine  # noqa: E402
from mlobs.report import data, publish  # noqa: E402
from mlobs.report.stores import open_store, parse_target  # noqa: E402
from servers.stores import S3Server, bare_repo  # noqa: E402
from synthetic import synthetic_batches  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def documents(tmp: Path, n: int) -> list[dict]:
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions", tmp / "lake"))
    info, _ = engine.write_run(synthetic_batches(2000, 2000, seed=3), run_id="small", model_version="v0",
                               commit_sha="0" * 40, dataset_hash="d" * 64,
                               evaluated_at=datetime(2026, 11, 24, tzinfo=UTC), action_version="bench")
    doc = data.version_document(engine, info)
    engine.close()
    out = []
    for i in range(n + 3):
        when = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=i)).isoformat()
        out.append(dict(doc, version=f"v{i:03d}", run=dict(doc["run"], run_id=f"run-{i}", committed_at=when)))
    return out


def run(store_factory, docs: list[dict], n: int) -> dict[str, float]:
    by_version = {d["version"]: d for d in docs}
    sources = publish.Sources(lambda v: by_version[v], lambda v, run_id: None)

    def go(versions, baseline=None, before_commit=None):
        store = store_factory()
        try:
            return publish.publish(store, versions, baseline, sources, before_commit=before_commit)
        finally:
            store.close()

    go([d["version"] for d in docs[:n]])
    times = {}
    times["add"], _ = timed(lambda: go([docs[n]["version"]], docs[n - 1]["version"]))
    times["verify"], _ = timed(lambda: go([docs[n]["version"]]))

    nested = []

    def interloper(attempt):
        if attempt == 1:  # another job's whole publish lands between our read and our commit
            nested.append(timed(lambda: go([docs[n + 2]["version"]]))[0])

    start = time.perf_counter()
    result = go([docs[n + 1]["version"]], before_commit=interloper)
    times["race"] = time.perf_counter() - start - nested[0]  # ours alone: 2 plans, 2 commits
    assert result.attempts == 2
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory() as tmp, S3Server() as s3:
        tmp = Path(tmp)
        docs = documents(tmp, n)
        repo = bare_repo(tmp / "site.git")
        s3.bucket("bench")
        stores = {
            "local folder (baseline)": lambda: open_store(parse_target("", tmp / "local", {})),
            "git (bare repo, file://)": lambda: open_store(parse_target(f"git+{repo.as_uri()}#gh-pages",
                                                                        tmp, {})),
            "S3 (moto on loopback)": lambda: open_store(parse_target("s3://bench/site", tmp, {}), env=s3.env),
        }
        results = {name: run(factory, docs, n) for name, factory in stores.items()}
    base = results["local folder (baseline)"]
    print(f"site of {n} versions; seconds per publish, × the local folder")
    print("| store | add 1 version + comparison | verify a published version | add 1 after losing a race |")
    print("|---|---|---|---|")
    for name, t in results.items():
        cells = [f"{t[k]:.2f} s ({t[k] / base[k]:.1f}×)" for k in ("add", "verify", "race")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
