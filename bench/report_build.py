"""publish-report costs: Hugo build for 1 version and for an index of 100 versions with history,
and report-data time (the version document) for 1M prediction rows with the pyiceberg engine.

Baselines in the same process: `hugo` on the bare site (no content) for the builds, and one plain
streamed pass over the run's columns (`iter_run`) for the report data.
Usage: python bench/report_build.py [rows]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic batches

from mlobs.lake.catalog import CatalogConfig  # noqa: E402
from mlobs.lake.engine import open_engine  # noqa: E402
from mlobs.report import data, publish  # noqa: E402
from mlobs.report.stores.local import LocalStore  # noqa: E402
from synthetic import synthetic_batches  # noqa: E402


def publish_docs(root: Path, docs: list[dict], baseline: str | None = None):
    by_version = {d["version"]: d for d in docs}
    sources = publish.Sources(lambda v: by_version[v], lambda v, run_id: None)
    return publish.publish(LocalStore(root), list(by_version), baseline, sources)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions", tmp / "lake"))
        t_write, (info, _) = timed(lambda: engine.write_run(
            synthetic_batches(rows, 8192), run_id="big", model_version="v-big", commit_sha="0" * 40,
            dataset_hash="d" * 64, evaluated_at=datetime(2026, 11, 24, tzinfo=UTC), action_version="bench"))
        t_scan, _ = timed(lambda: sum(b.num_rows for b in engine.iter_run(info, columns=["label", "prediction"])))
        t_doc, doc = timed(lambda: data.version_document(engine, info))
        small, _ = engine.write_run(synthetic_batches(2000, 2000, seed=3), run_id="small", model_version="v0",
                                    commit_sha="0" * 40, dataset_hash="d" * 64,
                                    evaluated_at=datetime(2026, 11, 24, tzinfo=UTC), action_version="bench")
        small_doc = data.version_document(engine, small)
        engine.close()

        t_empty, _ = timed(lambda: publish_docs(tmp / "empty", []))
        t_one, _ = timed(lambda: publish_docs(tmp / "one", [doc]))
        docs = []
        for i in range(100):
            d = dict(small_doc, version=f"v{i:03d}",
                     run=dict(small_doc["run"], committed_at=(datetime(2026, 1, 1, tzinfo=UTC)
                                                             + timedelta(days=i)).isoformat()))
            docs.append(d)
        t_hundred_all, _ = timed(lambda: publish_docs(tmp / "hundred", docs))
        extra = dict(small_doc, version="v100", run=dict(small_doc["run"], committed_at="2026-12-31T00:00:00+00:00"))
        t_add, _ = timed(lambda: publish_docs(tmp / "hundred", [extra], baseline=docs[-1]["version"]))

    print(f"rows: {rows:,} (write {t_write:.1f} s)")
    print("| measurement | seconds | × baseline |")
    print("|---|---|---|")
    print(f"| baseline: hugo on the bare site (index only, 0 versions) | {t_empty:.2f} | 1.0× |")
    print(f"| publish 1 version (page + index) | {t_one:.2f} | {t_one / t_empty:.1f}× |")
    print(f"| publish 100 versions at once (100 pages + index with history) | {t_hundred_all:.2f} | {t_hundred_all / t_empty:.1f}× |")
    print(f"| add 1 version to a 100-version site (+ comparison, index rebuilt) | {t_add:.2f} | {t_add / t_empty:.1f}× |")
    print(f"| baseline: one streamed pass over {rows:,} rows (2 columns) | {t_scan:.2f} | 1.0× |")
    print(f"| report data (version document) for {rows:,} rows | {t_doc:.2f} | {t_doc / t_scan:.1f}× |")


if __name__ == "__main__":
    main()
