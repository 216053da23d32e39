"""``mlobs evaluate``: dataset → Bento → one Iceberg snapshot → metrics → baseline gates → Report."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from datetime import UTC, datetime

from mlobs import __version__, modes
from mlobs.config import EvaluateSettings
from mlobs.result import Report, Verdict

log = logging.getLogger(__name__)
RESULTS_JSON = modes.RESULTS_FILES[modes.EVALUATE]
SERVER_LOG = "bento-server.log"
_READ_ROWS = 4096  # rows per read from the dataset file when batches are sized automatically


def default_run_id(run_id: str | None, model_version: str, dataset_hash: str) -> str:
    """Stable across re-runs of the same workflow run (``GITHUB_RUN_ID``: a retry is idempotent);
    unique locally."""
    if run_id:
        return f"gh{run_id}-{model_version}-{dataset_hash[:8]}"
    return f"local-{uuid.uuid4().hex[:12]}"


def run(settings: EvaluateSettings) -> Report:
    from mlobs.evaluate import render
    from mlobs.evaluate.dataset import open_dataset
    from mlobs.evaluate.trust import TrustGate, tally_run
    from mlobs.lake.runs import RunRefused, check_identity

    common = settings.common
    deadline = time.monotonic() + settings.deadline if settings.deadline else None
    version = common.model_version
    assert version is not None
    # Validate everything cheap before starting a model server.
    dataset = open_dataset(settings.dataset, input_columns=list(settings.input_columns) or None,
                           label_column=settings.label_column,
                           slice_columns=list(settings.slice_columns), id_column=settings.id_column,
                           batch_size=settings.batch_size or _READ_ROWS)
    check = dataset.check(settings.class_names)  # duplicate ids, labels: before anything is sent
    if check.unlabeled:
        log.warning("%d row(s) without a label will not be scored", check.unlabeled)
    dataset_hash = dataset.sha256()
    catalog = settings.lake.catalog_config
    engine = settings.lake.open_engine()
    try:
        github_run = common.github.run_id if common.github is not None else None
        run_id = settings.run_id or default_run_id(github_run, version, dataset_hash)
        info, written = engine.find_run(run_id), False
        if info is not None:
            # A retry of this very run is answered by its commit; another run under its id is not.
            check_identity(info, model_version=version, dataset_hash=dataset_hash,
                           commit_sha=settings.commit_sha)
            log.info("run %s is already committed as snapshot %s: nothing to write", run_id, info.snapshot_id)
        gate = TrustGate(settings.max_error_rate)
        if info is None:
            try:
                info, written = _evaluate(settings, common, dataset, engine, run_id=run_id,
                                          version=version, dataset_hash=dataset_hash, gate=gate,
                                          check=check, deadline=deadline)
            except RunRefused as refused:
                result = _refused(refused, gate, settings, common, run_id=run_id,
                                  dataset_hash=dataset_hash, table=catalog.table)
        if info is not None:
            errors = gate.summary() if written else tally_run(engine, info)
            result = _judge(engine, info, settings, common, written, errors)
        result = dataclasses.replace(result, unlabeled=check.unlabeled)
    finally:
        engine.close()
    path = render.write_json(result, common.output_dir / RESULTS_JSON, common.redactor)
    report = render.render(result, key=common.comment_key)
    report.outputs = {"summary-json": str(path), "run-id": result.run_id,
                      "snapshot-id": "" if result.snapshot_id is None else str(result.snapshot_id),
                      "violations": str(sum(1 for g in result.gates if g.passed is False))}
    return report


def _evaluate(settings, common, dataset, engine, *, run_id, version, dataset_hash, gate, check,
              deadline=None):
    from contextlib import nullcontext

    from mlobs.errors import MlobsError
    from mlobs.evaluate.bento import BentoServer
    from mlobs.evaluate.progress import Progress
    from mlobs.evaluate.runner import BentoCall, predictions, server_side

    call = BentoCall(api=settings.bento_api, input_format=settings.input_format,
                     class_names=settings.class_names, prediction_path=settings.prediction_path,
                     batch_size=settings.batch_size, concurrency=settings.concurrency,
                     timeout=settings.bento_timeout)
    target = settings.bento
    if target and (common.working_directory / target).exists():
        target = str(common.working_directory / target)  # a Bento folder or file, relative to the workspace
    server = None
    if target:
        common.output_dir.mkdir(parents=True, exist_ok=True)
        ready = 120.0 if deadline is None else max(1.0, min(120.0, deadline - time.monotonic()))
        server = BentoServer(target, cwd=common.working_directory, ready_timeout=ready,
                             log_path=common.output_dir / SERVER_LOG, keep_log=False,
                             base_env=common.env)
    with server or nullcontext() as served:
        try:
            url = settings.bento_url or served.url
            with Progress(total=check.labeled, label=version, ci=common.in_ci) as progress:
                batches = predictions(url, dataset, check, call, progress=progress,
                                      deadline=deadline, alive=served.alive if served else None)
                written = engine.write_run(gate.watch(batches), run_id=run_id, model_version=version,
                                           commit_sha=settings.commit_sha, dataset_hash=dataset_hash,
                                           evaluated_at=datetime.now(UTC), action_version=__version__,
                                           accept=gate.accept)
            if served is not None and progress.errors:
                served.keep()  # samples failed on the server: its log says why
                log.warning("%d sample(s) failed; %s", progress.errors, served.failure_hint())
            return written
        except MlobsError as exc:
            if served is not None and server_side(exc):  # its own words, and where its log is
                exc.hint = "; ".join(h for h in (exc.hint, served.failure_hint()) if h)
            raise


def _judge(engine, info, settings, common, written, errors):
    from mlobs.evaluate import compare, render
    from mlobs.evaluate.metrics import from_aggregate, labels_of
    from mlobs.lake.runs import resolve_run

    current_rows = engine.aggregate(info).to_pylist()
    # THE baseline resolver (publish-report's pages use it too), never the run being judged.
    baseline = resolve_run(engine, common.baseline_version, exclude_run_id=info.run_id,
                           required=False) if common.baseline_version else None
    baseline_rows = engine.aggregate(baseline).to_pylist() if baseline else []
    labels = labels_of(current_rows, baseline_rows)
    metrics = from_aggregate(current_rows, labels=labels)
    baseline_metrics = from_aggregate(baseline_rows, labels=labels) if baseline else None
    other_dataset = bool(baseline and baseline.dataset_hash and info.dataset_hash
                         and baseline.dataset_hash != info.dataset_hash)
    m = metrics.overall
    evidence = compare.gather(engine, info, baseline, current_rows, baseline_rows, labels,
                              compare_runs=m.n > 0 and baseline_metrics is not None
                              and baseline_metrics.overall.n > 0)
    gates = compare.judge_gates(settings.gates, metrics.overall, baseline_metrics.overall,
                                evidence.deltas, settings.significance) \
        if baseline_metrics and not other_dataset else []

    if m.n == 0 or m.errors == m.n:  # only a run committed by an older action can get here
        verdict, reason = Verdict.ERROR, "Every sample failed: the model server answered no prediction."
    elif common.baseline_version and baseline is None:
        verdict, reason = Verdict.INCONCLUSIVE, (
            f"No run of baseline {common.baseline_version!r} in the table: nothing to compare with.")
    elif other_dataset:
        verdict, reason = Verdict.INCONCLUSIVE, (
            f"The baseline run {baseline.run_id} of {baseline.model_version} was evaluated on another "
            f"dataset (sha256 {baseline.dataset_hash[:16]}…, this run {info.dataset_hash[:16]}…): "
            "its numbers are not comparable, so no gate was checked.")
    elif any(g.verdict == "fail" for g in gates):
        failed = [g for g in gates if g.verdict == "fail"]
        verdict, reason = Verdict.FAIL, "Regressed: " + "; ".join(g.gate.describe() for g in failed) + "."
    elif any(g.verdict == "inconclusive" for g in gates):
        unsettled = [g for g in gates if g.verdict == "inconclusive"]
        verdict, reason = Verdict.INCONCLUSIVE, " ".join(g.reason for g in unsettled)
    elif gates:
        verdict, reason = Verdict.PASS, f"All {len(gates)} regression gates hold."
    else:
        verdict, reason = Verdict.PASS, "Evaluated; no regression gates were set."
    if m.errors and verdict is not Verdict.ERROR:
        reason += f" {m.errors} sample(s) failed and count as wrong predictions."
    return render.EvaluationResult(
        verdict=verdict, reason=reason, model_version=info.model_version, run_id=info.run_id,
        snapshot_id=info.snapshot_id, table=info.table, dataset=settings.dataset.name,
        dataset_hash=info.dataset_hash, commit_sha=info.commit_sha, written=written, metrics=metrics,
        baseline_version=common.baseline_version,
        baseline_run_id=baseline.run_id if baseline else None,
        baseline_snapshot_id=baseline.snapshot_id if baseline else None,
        baseline_metrics=baseline_metrics, gates=gates, errors=errors,
        max_error_rate=settings.max_error_rate,
        baseline_dataset_hash=baseline.dataset_hash if baseline else None,
        evidence=evidence, significance=settings.significance)


def _refused(refused, gate, settings, common, *, run_id, dataset_hash, table):
    """The result of a run that did not become history: why, and what its failures were."""
    from mlobs.evaluate import render
    from mlobs.evaluate.trust import percent

    errors = gate.summary()
    if errors.rows and errors.errors >= errors.rows:
        why = f"Every one of the {errors.rows} samples failed"
    else:
        why = (f"{errors.errors} of {errors.rows} samples failed ({percent(errors.rate)}, more than "
               f"max-error-rate {percent(settings.max_error_rate)})")
    reason = (f"{why}, so this run was not recorded: it is no baseline, and a retry with the same "
              f"run id evaluates afresh once the Bento is fixed.")
    top = "; ".join(errors.lines()[:3])
    log.error("run %s not recorded: %s%s", run_id, why, f"; top error kinds: {top}" if top else "")
    log.debug("refused: %s", refused.one_line())
    return render.EvaluationResult(
        verdict=Verdict.ERROR, reason=reason, model_version=common.model_version or "",
        run_id=run_id, snapshot_id=None, table=table, dataset=settings.dataset.name,
        dataset_hash=dataset_hash, commit_sha=settings.commit_sha, written=False, metrics=None,
        baseline_version=common.baseline_version, errors=errors,
        max_error_rate=settings.max_error_rate)
