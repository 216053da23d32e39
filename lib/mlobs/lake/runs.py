"""Engine-independent run bookkeeping: snapshot properties, tags, run lookup and `resolve`.

A run *is* a snapshot whose summary carries ``mlobs.run-id``; both engines list snapshots in
metadata order (= commit order) and hand them to these functions, so both answer `runs`,
`latest_run` and `resolve` the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from mlobs.errors import ConfigError
from mlobs.lake import schema
from mlobs.lake.engine import RunInfo

TAG_PREFIX = "model-"
# Partitioning of the predictions table, applied by both engines: a run has one model version
# and one evaluated_at, so each run's files fall into exactly one partition.
PARTITION_SOURCE_COLUMNS = ("model_version", "evaluated_at")
MAX_ID_LENGTH = 256
_SAFE_TAG = re.compile(r"[^A-Za-z0-9._-]")
_RESOLVE_LIST_LIMIT = 10


def validate_run_args(run_id: str, model_version: str, evaluated_at: datetime) -> None:
    """Reject values that cannot identify a run (one-line ConfigErrors)."""
    for label, value in (("run id", run_id), ("model version", model_version)):
        if not value or not value.strip():
            raise ConfigError(f"{label} must not be empty")
        if len(value) > MAX_ID_LENGTH or any(ch in value for ch in "\r\n\0"):
            raise ConfigError(f"invalid {label} {value[:40]!r}: at most {MAX_ID_LENGTH} characters, one line")
    if evaluated_at.tzinfo is None or evaluated_at.utcoffset() is None:
        # A naive time would be stored as if it were UTC: refuse instead of guessing.
        raise ConfigError("evaluated_at must be timezone-aware (e.g. datetime.now(UTC))")


def tag_for_version(model_version: str) -> str:
    """The tag that points at a model version's latest run: ``model-<version>``.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; when that changed anything, a short hash
    of the real version is appended so two versions never share a tag.
    """
    safe = _SAFE_TAG.sub("_", model_version)
    if safe != model_version:
        digest = hashlib.sha256(model_version.encode()).hexdigest()[:8]
        safe = f"{safe[:200]}-{digest}"
    return f"{TAG_PREFIX}{safe}"


def snapshot_properties(
    *,
    run_id: str,
    model_version: str,
    commit_sha: str,
    dataset_hash: str,
    action_version: str,
    rows: int,
) -> dict[str, str]:
    return {
        schema.PROP_RUN_ID: run_id,
        schema.PROP_MODEL_VERSION: model_version,
        schema.PROP_COMMIT_SHA: commit_sha or "",
        schema.PROP_DATASET_HASH: dataset_hash or "",
        schema.PROP_ACTION_VERSION: action_version or "",
        schema.PROP_ROWS: str(rows),
    }


def run_from_summary(
    summary: Mapping[str, str], *, snapshot_id: int, timestamp_ms: int, table: str
) -> RunInfo | None:
    """The run a snapshot records, or None for snapshots not written by mlobs."""
    run_id = summary.get(schema.PROP_RUN_ID)
    if not run_id:
        return None
    rows_text = summary.get(schema.PROP_ROWS) or summary.get("added-records") or "0"
    try:
        rows = int(rows_text)
    except ValueError:
        rows = 0
    return RunInfo(
        run_id=run_id,
        snapshot_id=int(snapshot_id),
        model_version=summary.get(schema.PROP_MODEL_VERSION, ""),
        commit_sha=summary.get(schema.PROP_COMMIT_SHA, ""),
        dataset_hash=summary.get(schema.PROP_DATASET_HASH, ""),
        committed_at=datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC),
        rows=rows,
        table=table,
    )


def find_run(runs: Iterable[RunInfo], run_id: str) -> RunInfo | None:
    # The first commit of a run id wins: a duplicate can only come from a race the retry loop lost.
    return next((run for run in runs if run.run_id == run_id), None)


def latest_run(runs: Sequence[RunInfo], model_version: str) -> RunInfo | None:
    matching = [run for run in runs if run.model_version == model_version]
    return matching[-1] if matching else None


def resolve_ref(ref: str, runs: Sequence[RunInfo], tags: Mapping[str, int], table: str) -> RunInfo:
    """Resolve a snapshot id, a tag, a run id or a model version (its latest run), in that order."""
    ref = (ref or "").strip()
    by_snapshot = {run.snapshot_id: run for run in runs}
    if ref.lstrip("-").isdigit() and int(ref) in by_snapshot:
        return by_snapshot[int(ref)]
    if ref in tags and tags[ref] in by_snapshot:
        return by_snapshot[tags[ref]]
    found = find_run(runs, ref) or latest_run(runs, ref)
    if found is not None:
        return found
    if not runs:
        raise ConfigError(f"no runs in table {table}: cannot resolve {ref!r}")
    versions = list(dict.fromkeys(run.model_version for run in runs))
    run_tags = sorted(name for name, sid in tags.items() if sid in by_snapshot)
    raise ConfigError(
        f"unknown run reference {ref!r} in {table}; model versions: {_listing(versions)}; "
        f"tags: {_listing(run_tags)}; run ids: {_listing([run.run_id for run in runs])}"
    )


def _listing(items: Sequence[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[-_RESOLVE_LIST_LIMIT:])
    more = len(items) - _RESOLVE_LIST_LIMIT
    return f"{shown} (and {more} older)" if more > 0 else shown
