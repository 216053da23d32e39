"""``mlobs evaluate``: dataset → Bento → one Iceberg snapshot → metrics → baseline gates → Report."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlobs import __version__, modes
from mlobs.config import CommonSettings, resolve
from mlobs.errors import ConfigError
from mlobs.result import Report, Verdict

log = logging.getLogger(__name__)
RESULTS_JSON = modes.RESULTS_FILES[modes.EVALUATE]
SERVER_LOG = "bento-server.log"
_READ_ROWS = 4096  # rows per read from the dataset file when batches are sized automatically


@dataclass(frozen=True)
class EvaluateSettings:
    dataset: Path
    bento: str | None
    bento_url: str | None
    bento_api: str
    input_columns: list[str] | None
    label_column: str
    slice_columns: list[str]
    id_column: str | None
    batch_size: int | None  # None: sized by measurement
    concurrency: int
    catalog: str | None
    table: str
    engine: str
    spark_master: str
    gates: list
    run_id: str | None
    commit_sha: str | None
    max_error_rate: float
    class_names: object = None  # labels.ClassNames | None
    prediction_path: tuple[str, ...] | None = None
    input_format: tuple[str, str | None] | None = None
    bento_timeout: float = 60.0
    deadline: float | None = None  # seconds for the whole evaluation
    significance: float | None = 0.05  # gates' test level; None: point-estimate gates

    @classmethod
    def build(cls, common: CommonSettings, params: Mapping[str, object],
              env: Mapping[str, str]) -> EvaluateSettings:
        from mlobs.evaluate.compare import parse_gates
        from mlobs.evaluate.contract import parse_path
        from mlobs.evaluate.labels import ClassNames
        from mlobs.evaluate.runner import parse_batch_size, parse_duration
        from mlobs.evaluate.schema import parse_input_format
        from mlobs.evaluate.trust import parse_max_error_rate
        from mlobs.stats.gates import parse_significance

        if not common.model_version:
            raise ConfigError("evaluate needs model-version: it names the run in the Iceberg table")
        dataset = _text(params.get("dataset"))
        if not dataset:
            raise ConfigError("evaluate needs dataset: a Parquet, CSV or JSON-lines golden set")
        bento, bento_url = _text(params.get("bento")), _text(params.get("bento_url"))
        if bool(bento) == bool(bento_url):
            raise ConfigError("set exactly one of bento (a Bento to serve) or bento-url (a running one)")
        if bento_url and not bento_url.startswith(("http://", "https://")):
            raise ConfigError(f"bento-url must start with http:// or https://, got {bento_url!r}")
        return cls(
            dataset=resolve(common.working_directory, dataset),
            bento=bento, bento_url=bento_url,
            bento_api=_text(params.get("bento_api")) or "predict",
            input_columns=_columns(params.get("input_columns")) or None,
            label_column=_text(params.get("label_column")) or "label",
            slice_columns=_columns(params.get("slice_columns")),
            id_column=_text(params.get("id_column")),
            batch_size=parse_batch_size(_text(params.get("batch_size"))),
            concurrency=int(params.get("concurrency") or 4),
            catalog=_text(params.get("catalog")),
            table=_text(params.get("table")) or "mlobs.predictions",
            engine=_text(params.get("engine")) or "pyiceberg",
            spark_master=_text(params.get("spark_master")) or "local[*]",
            gates=parse_gates(_text(params.get("max_regression"))),
            run_id=_text(params.get("run_id")),
            commit_sha=env.get("GITHUB_SHA") or None,
            max_error_rate=parse_max_error_rate(params.get("max_error_rate")),
            class_names=ClassNames.parse(_text(params.get("class_names")), common.working_directory),
            prediction_path=parse_path(_text(params.get("prediction_path"))),
            input_format=parse_input_format(_text(params.get("input_format"))),
            bento_timeout=parse_duration(_text(params.get("bento_timeout")), "bento-timeout") or 60.0,
            deadline=parse_duration(_text(params.get("deadline")), "deadline"),
            significance=parse_significance(_text(params.get("significance"))),
        )


def default_run_id(env: Mapping[str, str], model_version: str, dataset_hash: str) -> str:
    """Stable across re-runs of the same workflow run (so a retry is idempotent); unique locally."""
    if env.get("GITHUB_RUN_ID"):
        return f"gh{env['GITHUB_RUN_ID']}-{model_version}-{dataset_hash[:8]}"
    return f"local-{uuid.uuid4().hex[:12]}"


def run(common: CommonSettings, params: Mapping[str, object], env: Mapping[str, str] | None = None) -> Report:
    from mlobs.evaluate import render
    from mlobs.evaluate.dataset import open_dataset
    from mlobs.evaluate.trust import TrustGate, tally_run
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.engine import open_engine
    from mlobs.lake.runs import RunRefused, check_identity

    env = os.environ if env is None else env
    settings = EvaluateSettings.build(common, params, env)
    deadline = time.monotonic() + settings.deadline if settings.deadline else None
    version = common.model_version
    assert version is not None
    # Validate everything cheap before starting a model server.
    dataset = open_dataset(settings.dataset, input_columns=settings.input_columns,
                           label_column=settings.label_column, slice_columns=settings.slice_columns,
                           id_column=settings.id_column,
                           batch_size=settings.batch_size or _READ_ROWS)
    check = dataset.check(settings.class_names)  # duplicate ids, labels: before anything is sent
    if check.unlabeled:
        log.warning("%d row(s) without a label will not be scored", check.unlabeled)
    dataset_hash = dataset.sha256()
    catalog = CatalogConfig.parse(settings.catalog, settings.table, common.output_dir / "lake")
    engine = open_engine(settings.engine, catalog, settings.spark_master)
    try:
        run_id = settings.run_id or default_run_id(env, version, dataset_hash)
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
                             log_path=common.output_dir / SERVER_LOG, keep_log=False)
    with server or nullcontext() as served:
        try:
            url = settings.bento_url or served.url
            with Progress(total=check.labeled, label=version) as progress:
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
    from mlobs.evaluate.metrics import from_aggregate
    from mlobs.lake.runs import resolve_run

    current_rows = engine.aggregate(info).to_pylist()
    # THE baseline resolver (publish-report's pages use it too), never the run being judged.
    baseline = resolve_run(engine, common.baseline_version, exclude_run_id=info.run_id,
                           required=False) if common.baseline_version else None
    baseline_rows = engine.aggregate(baseline).to_pylist() if baseline else []
    labels = sorted({r["label"] for r in current_rows + baseline_rows if r["label"] is not None}
                    | {r["prediction"] for r in current_rows + baseline_rows
                       if r["prediction"] is not None and not r["is_error"]})
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


def _columns(value: object) -> list[str]:
    return [c.strip() for c in str(value or "").split(",") if c.strip()]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
