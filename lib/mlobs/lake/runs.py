"""Engine-independent run bookkeeping: what may become a run, run identity, and which run a
reference means.

A run *is* a snapshot whose summary carries ``mlobs.run-id``; both engines list snapshots in
metadata order (= commit order) and hand them to these functions, so both answer `runs`,
`resolve` and the checks below the same way:

- :func:`admit` decides, after a run's batches are written and before anything is committed,
  whether the run may become history (never a run in which every sample failed; the caller's
  own check, e.g. evaluate's `max-error-rate`). A refused run leaves nothing in the table.
- :func:`check_identity`: a run id names one evaluation (model version, dataset, commit); a
  second, different run under the same id is refused instead of being answered by the first.
- :func:`resolve_run`: THE way a reference (a model version, run id, tag or snapshot id) becomes a
  run, for evaluate's baseline and publish-report's pages alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlobs.errors import ConfigError, MlobsError
from mlobs.lake import schema
from mlobs.lake.engine import RunInfo

if TYPE_CHECKING:
    from mlobs.lake.engine import Engine

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
    errors: int,
) -> dict[str, str]:
    return {
        schema.PROP_RUN_ID: run_id,
        schema.PROP_MODEL_VERSION: model_version,
        schema.PROP_COMMIT_SHA: commit_sha or "",
        schema.PROP_DATASET_HASH: dataset_hash or "",
        schema.PROP_ACTION_VERSION: action_version or "",
        schema.PROP_ROWS: str(rows),
        schema.PROP_ERRORS: str(errors),
    }


def run_from_summary(
    summary: Mapping[str, str], *, snapshot_id: int, timestamp_ms: int, table: str
) -> RunInfo | None:
    """The run a snapshot records, or None for snapshots not written by mlobs."""
    run_id = summary.get(schema.PROP_RUN_ID)
    if not run_id:
        return None
    rows = _int(summary.get(schema.PROP_ROWS) or summary.get("added-records")) or 0
    return RunInfo(
        run_id=run_id,
        snapshot_id=int(snapshot_id),
        model_version=summary.get(schema.PROP_MODEL_VERSION, ""),
        commit_sha=summary.get(schema.PROP_COMMIT_SHA, ""),
        dataset_hash=summary.get(schema.PROP_DATASET_HASH, ""),
        committed_at=datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC),
        rows=rows,
        table=table,
        errors=_int(summary.get(schema.PROP_ERRORS)),
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def find_run(runs: Iterable[RunInfo], run_id: str) -> RunInfo | None:
    # The first commit of a run id wins: a duplicate can only come from a race the retry loop lost.
    return next((run for run in runs if run.run_id == run_id), None)


def latest_run(runs: Sequence[RunInfo], model_version: str) -> RunInfo | None:
    matching = [run for run in runs if run.model_version == model_version]
    return matching[-1] if matching else None


# -- what may become a run --------------------------------------------------------------------


@dataclass(frozen=True)
class RunCounts:
    """What a run's batches held, counted while they were written and before the commit."""

    rows: int
    errors: int  # rows whose prediction failed (a non-null `error`)


# The caller's own check: called with the counts after the last batch is written and before the
# commit; raising refuses the run (nothing is committed and the written files are deleted).
Admission = Callable[[RunCounts], None]


class RunRefused(MlobsError):
    """A run that must not become history. Nothing of it was committed, so a retry with the same
    run id starts afresh."""


def admit(run_id: str, counts: RunCounts, accept: Admission | None = None) -> None:
    """Raise unless the written run may be committed (see the module docstring)."""
    if counts.rows == 0:
        raise ConfigError(f"run {run_id} has no rows to write")
    if counts.errors >= counts.rows:
        raise RunRefused(
            f"run {run_id}: every one of its {counts.rows} samples failed, so it was not "
            "committed (a run without a single prediction is no measurement)"
        )
    if accept is not None:
        accept(counts)


# -- run identity -----------------------------------------------------------------------------


class RunIdConflict(ConfigError):
    """A run id already names a run of another model version, dataset or commit."""


def check_identity(
    existing: RunInfo, *, model_version: str, dataset_hash: str, commit_sha: str | None
) -> None:
    """Refuse to treat `existing` as this run when it evaluated something else.

    A retry of the same run (same model version, dataset and commit) is answered by the committed
    run; anything else under the same id would report the old run's numbers as this one's.
    Commit shas are compared only when both are known (a local run may have none).
    """
    differences = []
    if existing.model_version != model_version:
        differences.append(("model version", existing.model_version, model_version))
    if (dataset_hash or "") != (existing.dataset_hash or ""):
        differences.append(("dataset sha256", existing.dataset_hash, dataset_hash))
    if commit_sha and existing.commit_sha and commit_sha != existing.commit_sha:
        differences.append(("commit", existing.commit_sha, commit_sha))
    if not differences:
        return
    committed = ", ".join(f"{name} {_shown(old, new)}" for name, old, new in differences)
    this = ", ".join(f"{name} {_shown(new, old)}" for name, old, new in differences)
    raise RunIdConflict(
        f"run id {existing.run_id!r} is already committed in {existing.table} (snapshot "
        f"{existing.snapshot_id}) for {committed}; this run has {this}",
        hint="give this run another run-id, or leave run-id empty for a fresh one",
    )


def _shown(value: str, other: str) -> str:
    """A value short enough for one line, yet long enough to tell it from `other`."""
    value, other = value or "", other or ""
    if len(value) <= 20:
        return repr(value)
    keep = 12
    while keep < len(value) and value[:keep] == other[:keep]:
        keep += 8
    return repr(value[:keep] + ("…" if keep < len(value) else ""))


# -- which run a reference means ----------------------------------------------------------------


def trusted(run: RunInfo) -> bool:
    """Whether a committed run may stand for its version: not one in which every sample failed.

    Runs are admitted before their commit (see `admit`), so only a run written by an older action
    can fail this; one that recorded no error count is taken as it is.
    """
    return run.rows > 0 and (run.errors is None or run.errors < run.rows)


def pick_run(
    ref: str,
    runs: Sequence[RunInfo],
    tags: Mapping[str, int],
    *,
    exclude_run_id: str | None = None,
) -> RunInfo | None:
    """The run `ref` means among `runs` (commit order), or None.

    Only trusted runs other than `exclude_run_id` (the run being judged) count. `ref` is, in this
    order: a model version (its latest run), a run id, a tag, a snapshot id. A version comes first
    because that is what `baseline-version` and `versions` name; the other forms pin one run.
    """
    ref = (ref or "").strip()
    candidates = [run for run in runs if trusted(run) and run.run_id != exclude_run_id]
    by_version = latest_run(candidates, ref)
    if by_version is not None:
        return by_version
    by_id = find_run(candidates, ref)
    if by_id is not None:
        return by_id
    by_snapshot = {run.snapshot_id: run for run in candidates}
    if ref in tags and tags[ref] in by_snapshot:
        return by_snapshot[tags[ref]]
    if ref.lstrip("-").isdigit() and int(ref) in by_snapshot:
        return by_snapshot[int(ref)]
    return None


def resolve_run(
    engine: Engine, ref: str, *, exclude_run_id: str | None = None, required: bool = True
) -> RunInfo | None:
    """THE resolver: which run `ref` means in the engine's table (see :func:`pick_run`).

    evaluate's baseline (its deltas and gates) and publish-report's pages all come through here,
    so they always show the same run. Not found: None, or a ConfigError listing what there is
    when `required`.
    """
    runs = engine.runs()
    tags = engine.tags()
    found = pick_run(ref, runs, tags, exclude_run_id=exclude_run_id)
    if found is not None or not required:
        return found
    if not runs:
        raise ConfigError(f"no runs in table {engine.table}: cannot resolve {ref!r}")
    versions = list(dict.fromkeys(run.model_version for run in runs))
    by_snapshot = {run.snapshot_id for run in runs}
    run_tags = sorted(name for name, sid in tags.items() if sid in by_snapshot)
    raise ConfigError(
        f"unknown run reference {ref!r} in {engine.table}; model versions: {_listing(versions)}; "
        f"tags: {_listing(run_tags)}; run ids: {_listing([run.run_id for run in runs])}"
    )


def _listing(items: Sequence[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[-_RESOLVE_LIST_LIMIT:])
    more = len(items) - _RESOLVE_LIST_LIMIT
    return f"{shown} (and {more} older)" if more > 0 else shown
