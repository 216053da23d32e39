"""evaluate's outcome → Markdown (comment, check run, summary) and the results JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlobs import modes
from mlobs.evaluate import compare, registry
from mlobs.evaluate.metrics import RunMetrics
from mlobs.evaluate.trust import ErrorSummary, percent
from mlobs.github import markdown as md
from mlobs.redact import Redactor, write_text
from mlobs.result import Annotation, Report, Verdict

WORST_SLICES = 5


@dataclass
class EvaluationResult:
    verdict: Verdict
    reason: str
    model_version: str
    run_id: str
    snapshot_id: int | None  # None: the run was not recorded (see `recorded`)
    table: str
    dataset: str
    dataset_hash: str
    commit_sha: str | None
    written: bool  # False: the run id was already committed; nothing new was written
    metrics: RunMetrics | None  # None: the run was refused; its numbers measure nothing
    baseline_version: str | None = None
    baseline_run_id: str | None = None
    baseline_snapshot_id: int | None = None
    baseline_metrics: RunMetrics | None = None
    gates: list[compare.GateResult] = field(default_factory=list)
    errors: ErrorSummary | None = None  # the failed samples by kind
    max_error_rate: float | None = None
    baseline_dataset_hash: str | None = None

    @property
    def recorded(self) -> bool:
        """Whether the run is in the table (committed now or by an earlier try)."""
        return self.snapshot_id is not None
    unlabeled: int = 0  # dataset rows without a usable label: not sent, not scored

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["schema"] = "mlobs.evaluate-results/1"
        data["recorded"] = self.recorded
        # every headline metric of the registry by name (metrics keeps the computed fields only)
        data["headline"] = _headline(self.metrics)
        data["baseline_headline"] = _headline(self.baseline_metrics)
        if self.errors is not None:
            data["errors"]["lines"] = self.errors.lines()
        return data


def _headline(metrics: RunMetrics | None) -> dict[str, float | None] | None:
    if metrics is None:
        return None
    return {m.name: m.of(metrics.overall) for m in registry.metrics()}


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def shown(metric: str, value: float | None) -> str:
    """A value as the registry says that metric is shown (3 digits for per-class metrics)."""
    entry = registry.get(metric)
    return entry.format(value) if entry is not None else fmt(value)


def signed(metric: str, change: float) -> str:
    entry = registry.get(metric)
    return entry.format_change(change) if entry is not None else f"{change:+.3f}"


def arrow(delta: compare.Delta) -> str:
    """A signed change with a shape and a word, so it reads without colour, in any theme."""
    change = delta.change
    if change is None:
        return "—"
    if delta.better is None:
        return signed(delta.metric, change)
    return (f"{'▲' if change > 0 else '▼'} {signed(delta.metric, change)} "
            f"({'better' if delta.better else 'worse'})")


def render(result: EvaluationResult, key: str = "") -> Report:
    if result.metrics is None:
        return _render_refused(result, key)
    m = result.metrics.overall
    base = result.baseline_metrics.overall if result.baseline_metrics else None
    failed = [g for g in result.gates if g.passed is False]
    primary = registry.primary()
    value = primary.of(m)
    title = f"{modes.TITLES[modes.EVALUATE]}: {result.model_version} — {primary.name} {primary.format(value)}"
    if base is not None:
        before = primary.of(base)
        change = "—" if value is None or before is None else primary.format_change(value - before)
        title += f" ({change} vs {result.baseline_version})"
    if failed:
        title += f" · {len(failed)} gate{'s' if len(failed) > 1 else ''} failed"

    head = (f"**{result.verdict.icon}** — model {md.code(result.model_version)} on "
            f"{md.code(result.dataset)}: {m.n} samples, {m.errors} errors. {md.text(result.reason)}")
    if not result.written:
        head += " (This run id was already committed: nothing new was written.)"
    if result.unlabeled:
        head += (f" {result.unlabeled:,} row{'s' if result.unlabeled != 1 else ''} without a label "
                 f"{'were' if result.unlabeled != 1 else 'was'} not scored.")

    cols = ["Metric", md.text(result.model_version)]
    if base is not None:
        cols += [md.text(result.baseline_version or "baseline"), "Δ"]
    rows = []
    for delta in compare.headline_deltas(m, base):
        row = [delta.metric, shown(delta.metric, delta.current)]
        if base is not None:
            row += [shown(delta.metric, delta.baseline), arrow(delta)]
        rows.append(row)
    parts = [head, md.table(cols, rows)]

    if result.gates:
        gate_rows = [[md.text(g.gate.describe()),
                      "—" if g.regression is None else (f"{g.regression * 100:.2f}% worse" if g.gate.relative
                                                       else f"{signed(g.gate.metric, g.regression)} worse"),
                      {True: Verdict.PASS.icon, False: Verdict.FAIL.icon,
                       None: Verdict.INCONCLUSIVE.icon}[g.passed]] for g in result.gates]
        parts.append("**Regression gates**\n\n" + md.table(["Gate", "Change", "Verdict"], gate_rows))

    parts.append(_error_kinds(result))
    parts.append(_worst_slices(result))
    parts.append(md.details("Per-class metrics and confusion matrix", _per_class(result)))
    ref = (f"Run {md.code(result.run_id)} · snapshot {md.code(result.snapshot_id)} · table "
           f"{md.code(result.table)} · dataset sha256 {md.code(result.dataset_hash[:16])}")
    if result.baseline_snapshot_id is not None:
        ref += f" · baseline snapshot {md.code(result.baseline_snapshot_id)}"
    parts.append(f"<sub>{ref}</sub>")
    body = "\n\n".join(p for p in parts if p) + "\n"
    return Report(mode=modes.EVALUATE, verdict=result.verdict, title=title,
                  summary=head + "\n\n" + md.table(cols, rows) + "\n", body=body, key=key)


def _render_refused(result: EvaluationResult, key: str) -> Report:
    """A run that did not become history: why, and its failures by kind — no metrics, which
    would measure the serving path rather than the model."""
    errors = result.errors or ErrorSummary(rows=0, errors=0)
    title = (f"{modes.TITLES[modes.EVALUATE]}: {result.model_version} — not recorded, "
             f"{errors.errors} of {errors.rows} samples failed")
    head = (f"**{result.verdict.icon}** — model {md.code(result.model_version)} on "
            f"{md.code(result.dataset)}: {errors.rows} samples, {errors.errors} errors. "
            f"{md.text(result.reason)}")
    ref = (f"Run {md.code(result.run_id)} · not committed to table {md.code(result.table)} · "
           f"dataset sha256 {md.code(result.dataset_hash[:16])}")
    body = "\n\n".join(p for p in (head, _error_kinds(result), f"<sub>{ref}</sub>") if p) + "\n"
    note = Annotation(path=None, start_line=1, level="failure", title="evaluate: run not recorded",
                      message=result.reason + "".join(f"\n{line}" for line in errors.lines()[:5]))
    return Report(mode=modes.EVALUATE, verdict=result.verdict, title=title,
                  summary=head + "\n\n" + _error_kinds(result) + "\n", body=body,
                  annotations=[note], key=key)


def _error_kinds(result: EvaluationResult) -> str:
    """``- 300 × `unreadable prediction [0.74, 0.25]` `` per kind of failure, largest first."""
    errors = result.errors
    if errors is None or not errors.errors:
        return ""
    limit = f", max-error-rate {percent(result.max_error_rate)}" if result.max_error_rate is not None else ""
    items = [f"- {k.count} × {md.code(k.example)}" for k in errors.kinds]
    if errors.more_kinds:
        items.append(f"- {errors.more_errors} × {errors.more_kinds} other kind(s) of error")
    return (f"**Failed samples**: {errors.errors} of {errors.rows} ({percent(errors.rate)}{limit}), "
            "by kind (the first message of each):\n\n" + "\n".join(items))


def _worst_slices(result: EvaluationResult) -> str:
    deltas = compare.slice_deltas(result.metrics, result.baseline_metrics)
    if not deltas:
        return ""
    by_slice = {(s.name, s.value): s.metrics for s in result.metrics.slices}
    # worst first: the biggest drop against the baseline, else the lowest accuracy
    deltas.sort(key=lambda d: (d[2].change if d[2].change is not None else 0.0,
                               by_slice[(d[0], d[1])].accuracy))
    rows = []
    for name, value, delta in deltas[:WORST_SLICES]:
        sm = by_slice[(name, value)]
        rows.append([f"{md.text(name)} = {md.text(value)}", str(sm.n), fmt(sm.accuracy),
                     fmt(sm.macro_f1), arrow(delta) if result.baseline_metrics else "—"])
    return (f"**Worst slices** ({min(WORST_SLICES, len(deltas))} of {len(deltas)})\n\n"
            + md.table(["Slice", "n", "accuracy", "macro F1", "Δ accuracy"], rows))


def _per_class(result: EvaluationResult) -> str:
    m = result.metrics.overall
    base = {c.label: c for c in result.baseline_metrics.overall.per_class} if result.baseline_metrics else {}
    rows = []
    for c in m.per_class:
        b = base.get(c.label)
        delta = compare.Delta("f1", c.f1, b.f1 if b else None)
        rows.append([md.text(c.label), fmt(c.precision), fmt(c.recall), fmt(c.f1), str(c.support),
                     arrow(delta) if b else "—"])
    classes = md.table(["Class", "Precision", "Recall", "F1", "Support", "Δ F1"], rows)
    labels = [md.text(label) for label in m.labels]
    matrix = md.table(["true ↓ / predicted →", *labels, "error"],
                      [[labels[i], *map(str, r)] for i, r in enumerate(m.confusion)])
    return f"{classes}\n\n{matrix}"


def write_json(result: EvaluationResult, path: Path, redactor: Redactor | None = None) -> Path:
    text = json.dumps(result.to_json(), indent=2, sort_keys=True, default=str) + "\n"
    return write_text(path, text, redactor)
