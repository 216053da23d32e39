"""Classification metrics from the lake's aggregate counts — the same numbers whichever engine
counted them (pyiceberg over Arrow, or Spark SQL).

The aggregate has one row per (slice, label, prediction, confidence bin, error) with a count and a
confidence sum; scikit-learn computes every metric from it with the counts as sample weights, over
an explicit label list, so a class absent from a slice neither crashes nor shifts columns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from mlobs.evaluate import registry

ERROR_PREDICTION = "<error>"  # what an error row "predicted": wrong for every class
# The "label" of a row without one (tables written before unlabelled rows were refused hold
# them): never equal to a prediction, not a class of per-class metrics. It must differ from
# ERROR_PREDICTION, or an error row without a label would count as right.
NO_LABEL = "\x00no label"
WHOLE_RUN = ("", "")  # (slice_name, slice_value) of the run as a whole


@dataclass
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ReliabilityBin:
    low: float
    high: float
    n: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass
class Metrics:
    n: int
    errors: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    ece: float | None  # expected calibration error over rows with a confidence
    labels: list[str]
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: true label, columns: labels + [ERROR_PREDICTION]
    reliability: list[ReliabilityBin] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    def headline(self) -> dict[str, float | None]:
        """Every headline metric of the registry (mlobs.evaluate.registry), in its order."""
        return {m.name: m.value(self) for m in registry.metrics()}


@dataclass
class SliceMetrics:
    name: str
    value: str
    metrics: Metrics


@dataclass
class RunMetrics:
    overall: Metrics
    slices: list[SliceMetrics]


def labels_of(*runs: list[dict]) -> list[str]:
    """The classes of one or more runs' aggregate rows: every true label and every prediction that
    is not an error, sorted — the one label list a run and its baseline are scored over."""
    return sorted({r["label"] for rows in runs for r in rows if r["label"] is not None}
                  | {r["prediction"] for rows in runs for r in rows
                     if r["prediction"] is not None and not r["is_error"]})


def from_aggregate(rows: list[dict], bins: int = 10, labels: list[str] | None = None) -> RunMetrics:
    """Metrics for the run and each slice from ``engine.aggregate(...).to_pylist()``."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["slice_name"] or "", row["slice_value"] or "")].append(row)
    if labels is None:
        labels = labels_of(rows)
    overall = _metrics(groups.get(WHOLE_RUN, []), labels, bins)
    slices = [SliceMetrics(name, value, _metrics(group, labels, bins))
              for (name, value), group in sorted(groups.items()) if (name, value) != WHOLE_RUN]
    return RunMetrics(overall, slices)


def _metrics(rows: list[dict], labels: list[str], bins: int) -> Metrics:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred, weight = [], [], []
    for r in rows:
        if r["n"] <= 0:
            continue
        y_true.append(r["label"] if r["label"] is not None else NO_LABEL)
        y_pred.append(ERROR_PREDICTION if r["is_error"] or r["prediction"] is None else r["prediction"])
        weight.append(int(r["n"]))
    n = sum(weight)
    errors = sum(int(r["n"]) for r in rows if r["is_error"])
    if n == 0:
        return Metrics(0, 0, float("nan"), float("nan"), float("nan"), None, labels,
                       [ClassMetrics(label, 0.0, 0.0, 0.0, 0) for label in labels],
                       [[0] * (len(labels) + 1) for _ in labels], _reliability([], bins))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, sample_weight=weight, zero_division=0)
    per_class = [ClassMetrics(label, float(p), float(r), float(f), int(s))
                 for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)]
    _, _, macro, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, sample_weight=weight, average="macro", zero_division=0)
    _, _, weighted, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, sample_weight=weight, average="weighted", zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=[*labels, ERROR_PREDICTION], sample_weight=weight)
    reliability = _reliability(rows, bins)
    with_conf = sum(b.n for b in reliability)
    ece = (sum(b.n * abs(b.accuracy - b.mean_confidence) for b in reliability if b.n) / with_conf
           if with_conf else None)
    return Metrics(
        n=n, errors=errors,
        accuracy=float(accuracy_score(y_true, y_pred, sample_weight=weight)),
        macro_f1=float(macro), weighted_f1=float(weighted), ece=ece, labels=list(labels),
        per_class=per_class,
        confusion=[[int(v) for v in row] for row in matrix[: len(labels)]],
        reliability=reliability,
    )


def _reliability(rows: list[dict], bins: int) -> list[ReliabilityBin]:
    n = [0] * bins
    conf = [0.0] * bins
    correct = [0] * bins
    for r in rows:
        b = r["conf_bin"]
        if r["is_error"] or b is None or b < 0:
            continue
        n[b] += int(r["n"])
        conf[b] += float(r["conf_sum"])
        if r["prediction"] == r["label"]:
            correct[b] += int(r["n"])
    return [ReliabilityBin(low=i / bins, high=(i + 1) / bins, n=n[i],
                           mean_confidence=conf[i] / n[i] if n[i] else None,
                           accuracy=correct[i] / n[i] if n[i] else None) for i in range(bins)]
