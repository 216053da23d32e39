"""evaluate's outcome → Markdown (comment, check run, summary) and the results JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlobs import modes
from mlobs.evaluate import compare
from mlobs.evaluate.metrics import RunMetrics
from mlobs.github import markdown as md
from mlobs.result import Report, Verdict

WORST_SLICES = 5


@dataclass
class EvaluationResult:
    verdict: Verdict
    reason: str
    model_version: str
    run_id: str
    snapshot_id: int
    table: str
    dataset: str
    dataset_hash: str
    commit_sha: str | None
    written: bool  # False: the run id was already committed; nothing new was written
    metrics: RunMetrics
    baseline_version: str | None = None
    baseline_run_id: str | None = None
    baseline_snapshot_id: int | None = None
    baseline_metrics: RunMetrics | None = None
    gates: list[compare.GateResult] = field(default_factory=list)
    unlabeled: int = 0  # dataset rows without a usable label: not sent, not scored

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["schema"] = "mlobs.evaluate-results/1"
        return data


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def arrow(delta: compare.Delta) -> str:
    """A signed change with a shape and a word, so it reads without colour, in any theme."""
    change = delta.change
    if change is None:
        return "—"
    if delta.better is None:
        return f"{change:+.3f}"
    return f"{'▲' if change > 0 else '▼'} {change:+.3f} ({'better' if delta.better else 'worse'})"


def render(result: EvaluationResult, key: str = "") -> Report:
    m = result.metrics.overall
    base = result.baseline_metrics.overall if result.baseline_metrics else None
    failed = [g for g in result.gates if g.passed is False]
    title = f"{modes.TITLES[modes.EVALUATE]}: {result.model_version} — accuracy {fmt(m.accuracy)}"
    if base is not None:
        title += f" ({m.accuracy - base.accuracy:+.3f} vs {result.baseline_version})"
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
        row = [delta.metric, fmt(delta.current)]
        if base is not None:
            row += [fmt(delta.baseline), arrow(delta)]
        rows.append(row)
    parts = [head, md.table(cols, rows)]

    if result.gates:
        gate_rows = [[md.text(g.gate.describe()),
                      "—" if g.regression is None else (f"{g.regression * 100:.2f}% worse" if g.gate.relative
                                                       else f"{g.regression:+.3f} worse"),
                      {True: Verdict.PASS.icon, False: Verdict.FAIL.icon,
                       None: Verdict.INCONCLUSIVE.icon}[g.passed]] for g in result.gates]
        parts.append("**Regression gates**\n\n" + md.table(["Gate", "Change", "Verdict"], gate_rows))

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


def write_json(result: EvaluationResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str) + "\n",
                    encoding="utf-8")
    return path
