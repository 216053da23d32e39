"""evaluate's outcome → Markdown (comment, check run, summary) and the results JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlobs import modes
from mlobs.evaluate import compare, registry
from mlobs.evaluate.metrics import RunMetrics
from mlobs.evaluate.trust import ErrorSummary, percent
from mlobs.github import markdown as md
from mlobs.redact import Redactor, write_text
from mlobs.result import Annotation, Report, Verdict

WORST_SLICES = 5
# /2: "statistics" (intervals, deltas with their tests and p-values, paired or not and why),
# "significance", and each gate's verdict, p-value, method and samples that would settle it.
RESULTS_SCHEMA = "mlobs.evaluate-results/2"


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
    evidence: compare.Evidence | None = None  # intervals and deltas (None: not computed)
    significance: float | None = None  # the gates' level; None: point-estimate gates

    @property
    def recorded(self) -> bool:
        """Whether the run is in the table (committed now or by an earlier try)."""
        return self.snapshot_id is not None
    unlabeled: int = 0  # dataset rows without a usable label: not sent, not scored

    def to_json(self) -> dict:
        data = asdict(dataclasses.replace(self, evidence=None))
        data["verdict"] = self.verdict.value
        data["schema"] = RESULTS_SCHEMA
        # every interval, delta, test and p-value behind the verdict (None: the run was refused)
        data["statistics"] = self.evidence.to_json() if self.evidence is not None else None
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
    """``+0.011``, ``−0.012`` (U+2212, like every number of mlobs.stats.format), ``+1.1 pp``."""
    from mlobs.stats.format import format_signed

    entry = registry.get(metric)
    if entry is not None and entry.percent:
        return entry.format_change(change).replace("-", "−")
    return format_signed(change, entry.digits if entry is not None else 3).replace("±", "+")


def arrow(delta: compare.Delta) -> str:
    """A signed change with a shape and a word, so it reads without colour, in any theme."""
    change = delta.change
    if change is None:
        return "—"
    if delta.better is None:
        return signed(delta.metric, change)
    return (f"{'▲' if change > 0 else '▼'} {signed(delta.metric, change)} "
            f"({'better' if delta.better else 'worse'})")


def interval_text(metric: str, iv: Any) -> str:
    """``0.698 [0.655, 0.738]`` — as the registry shows that metric (``89.4% [85.1%, 92.3%]`` for
    a percentage); just the value without an interval; ``—`` without a value."""
    from mlobs.stats.format import format_interval

    if iv is None or iv.value is None or math.isnan(iv.value):
        return "—"
    entry = registry.get(metric)
    digits = entry.digits if entry is not None else 3
    if math.isnan(iv.low) or math.isnan(iv.high):
        return shown(metric, iv.value)
    if entry is not None and entry.percent:
        return f"{entry.format(iv.value)} [{entry.format(iv.low)}, {entry.format(iv.high)}]"
    return format_interval(iv, digits=digits)


def delta_text(delta: compare.Delta, interval: Any = None) -> str:
    """``▼ −0.012 [−0.025, +0.001] (worse), p=0.07 (McNemar, paired)``: the change with a shape
    and a word (readable without colour), its 95 % interval, the two-sided p-value and the test.
    Without an interval, :func:`arrow`."""
    from mlobs.stats.format import format_p, format_signed

    change = delta.change
    if interval is None or change is None or not interval.test:
        return arrow(delta)
    entry = registry.get(delta.metric)
    digits = entry.digits if entry is not None else 3
    scale, unit = (100, " pp") if entry is not None and entry.percent else (1, "")

    def number(x: float) -> str:
        return format_signed(x * scale, digits) + unit

    text = number(change)
    if delta.better is not None:
        text = f"{'▲' if change > 0 else '▼'} {text}"
    if not (math.isnan(interval.low) or math.isnan(interval.high)):
        text += f" [{number(interval.low)}, {number(interval.high)}]"
    if delta.better is not None:
        text += f" ({'better' if delta.better else 'worse'})"
    return f"{text}, {format_p(interval.p_value)} ({interval.label})"


def comparison_note(result: EvaluationResult) -> str:
    """What the intervals are, and whether the deltas are paired and why."""
    ev = result.evidence
    if ev is None:
        return ""
    note = f"{ev.confidence * 100:g} % intervals."
    if ev.paired is True:
        note += (f" Deltas are **paired**: {md.text(ev.why)} — McNemar's exact test for shares of "
                 "samples, a paired bootstrap over sample ids for the other metrics.")
    elif ev.paired is False:
        note += (f" Deltas are **unpaired**: {md.text(ev.why)} — Newcombe's interval and a "
                 "two-proportion z test for shares of samples, independent bootstraps for the "
                 "other metrics.")
    return note


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
        change = "—" if value is None or before is None else signed(primary.name, value - before)
        title += f" ({change} vs {result.baseline_version})"
    if failed:
        title += f" · {len(failed)} gate{'s' if len(failed) > 1 else ''} failed"
    unsettled = [g for g in result.gates if g.verdict == "inconclusive"]
    if unsettled:
        title += f" · {len(unsettled)} gate{'s' if len(unsettled) > 1 else ''} inconclusive"

    head = (f"**{result.verdict.icon}** — model {md.code(result.model_version)} on "
            f"{md.code(result.dataset)}: {m.n} samples, {m.errors} errors. {md.text(result.reason)}")
    if not result.written:
        head += " (This run id was already committed: nothing new was written.)"
    if result.unlabeled:
        head += (f" {result.unlabeled:,} row{'s' if result.unlabeled != 1 else ''} without a label "
                 f"{'were' if result.unlabeled != 1 else 'was'} not scored.")

    ev = result.evidence
    cols = ["Metric", md.text(result.model_version)]
    if base is not None:
        cols += [md.text(result.baseline_version or "baseline"), "Δ"]
    rows = []
    for delta in compare.headline_deltas(m, base):
        row = [delta.metric, _value(delta.metric, delta.current, ev and ev.current)]
        if base is not None:
            row += [_value(delta.metric, delta.baseline, ev and ev.baseline),
                    delta_text(delta, ev.deltas.get(delta.metric) if ev else None)]
        rows.append(row)
    note = comparison_note(result)
    table = md.table(cols, rows) + (f"\n\n<sub>{note}</sub>" if note else "")
    parts = [head, table]

    if result.gates:
        parts.append("**Regression gates**\n\n" + _gates(result))

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
                  summary=head + "\n\n" + table + "\n", body=body, key=key)


def _value(metric: str, value: float | None, intervals: Any) -> str:
    """A headline value with its interval when there is one."""
    iv = intervals.get(metric) if intervals is not None else None
    return interval_text(metric, iv) if iv is not None else shown(metric, value)


def _worse_by(g: compare.GateResult) -> str:
    """``0.011 worse``, ``15.32% worse`` (relative gates), ``0.024 better``, ``no change``."""
    amount = abs(g.regression)
    # three significant digits, as the gate's reason: 0.0104 must not read as the limit 0.010
    entry = registry.get(g.gate.metric)
    if g.gate.relative:
        text = f"{amount * 100:.2f}%"
    elif entry is not None and entry.percent:
        text = f"{amount * 100:.3g} pp"
    else:
        text = f"{amount:.3g}"
    if g.regression > 0:
        return f"{text} worse"
    return f"{text} better" if g.regression < 0 else "no change"


def _gates(result: EvaluationResult) -> str:
    rows = []
    for g in result.gates:
        change = "—" if g.regression is None else _worse_by(g)
        if g.significance is None:
            test = "point estimates (significance off)"
        elif g.p_value is None:
            test = md.text(g.method) if g.method else "—"
        else:
            from mlobs.stats.format import format_p

            test = f"one-sided {format_p(g.p_value)} ({md.text(g.method)}), α = {g.significance:g}"
        verdict = {"pass": Verdict.PASS.icon, "fail": Verdict.FAIL.icon}.get(
            g.verdict, Verdict.INCONCLUSIVE.icon) if g.verdict else {
            True: Verdict.PASS.icon, False: Verdict.FAIL.icon, None: Verdict.INCONCLUSIVE.icon}[g.passed]
        if g.verdict == "inconclusive" and g.samples_needed:
            verdict += f": within the noise; about {g.samples_needed:,} samples would settle it"
        elif g.verdict == "inconclusive" and g.regression is None:
            verdict += ": could not be compared"
        elif g.verdict == "inconclusive":
            verdict += ": within the noise"
        rows.append([md.text(g.gate.describe()), change, test, verdict])
    return md.table(["Gate", "Change", "Test", "Verdict"], rows)


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
    slices = result.evidence.slices if result.evidence is not None else {}
    for name, value, delta in deltas[:WORST_SLICES]:
        sm = by_slice[(name, value)]
        accuracy = slices.get((name, value))
        tested = result.evidence.slice_deltas.get((name, value)) if result.evidence else None
        rows.append([f"{md.text(name)} = {md.text(value)}", str(sm.n),
                     interval_text("accuracy", accuracy) if accuracy else fmt(sm.accuracy),
                     fmt(sm.macro_f1),
                     delta_text(delta, tested) if result.baseline_metrics else "—"])
    return (f"**Worst slices** ({min(WORST_SLICES, len(deltas))} of {len(deltas)})\n\n"
            + md.table(["Slice", "n", "accuracy", "macro F1", "Δ accuracy"], rows))


def _per_class(result: EvaluationResult) -> str:
    m = result.metrics.overall
    base = {c.label: c for c in result.baseline_metrics.overall.per_class} if result.baseline_metrics else {}
    ev = result.evidence
    intervals = {c.label: c for c in ev.current.per_class} if ev is not None else {}
    rows = []
    for c in m.per_class:
        b = base.get(c.label)
        delta = compare.Delta(f"f1[{c.label}]", c.f1, b.f1 if b else None)
        iv = intervals.get(c.label)

        def cell(kind: str, value: float, iv=iv) -> str:
            return interval_text(kind, getattr(iv, kind)) if iv is not None else fmt(value)

        rows.append([md.text(c.label), cell("precision", c.precision), cell("recall", c.recall),
                     cell("f1", c.f1), str(c.support),
                     delta_text(delta, ev.deltas.get(delta.metric) if ev else None) if b else "—"])
    classes = md.table(["Class", "Precision", "Recall", "F1", "Support", "Δ F1"], rows)
    labels = [md.text(label) for label in m.labels]
    matrix = md.table(["true ↓ / predicted →", *labels, "error"],
                      [[labels[i], *map(str, r)] for i, r in enumerate(m.confusion)])
    return f"{classes}\n\n{matrix}"


def write_json(result: EvaluationResult, path: Path, redactor: Redactor | None = None) -> Path:
    text = json.dumps(result.to_json(), indent=2, sort_keys=True, default=str) + "\n"
    return write_text(path, text, redactor)
