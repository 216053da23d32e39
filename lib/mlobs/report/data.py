"""Report documents (JSON, versioned schema) from the Iceberg table, through the lake engines.

``mlobs.report/2`` — one model version's run:
  version, run {run_id, snapshot_id, commit_sha, dataset_hash, committed_at, rows, table},
  headline {n, errors, and each headline metric of mlobs.evaluate.registry by name},
  labels [..], per_class [{label, precision, recall, f1, support}],
  confusion {labels, columns (labels + "<error>"), matrix},
  slices [{name, value, n, errors, accuracy, macro_f1}],
  calibration {ece, bins [{low, high, n, mean_confidence, accuracy}]},
  prediction_share [{label, share}], worst_samples [{sample_id, label, prediction, confidence, error}],
  slo null | {verdict, window, source, scenarios [{name, verdict, measured, threshold, n}]},
  intervals {confidence, resamples, headline {metric: null | {low, high, method}},
             per_class [{label, precision, recall, f1: {low, high}}],
             slices [{name, value, accuracy: {low, high}}]}            (new in /2)
``mlobs.compare/2`` — two versions: a, b, metrics [{metric, a, b, delta, better, and how the
  registry shows it: label, digits, percent; a_low, a_high, b_low, b_high (each version's
  interval, null from a /1 document); low, high, p_value, method (the delta's interval and test,
  null when not computed)}], comparison null | {paired, why},
  slices [{name, value, a, b, delta}], confusion_diff {labels, columns, matrix (b − a)},
  share_moves [{label, a, b, delta}] (largest move first).
Maps keyed by data (class labels, slice values) are lists of objects: Hugo lower-cases map keys.

/2 only adds: a /1 document (published by an earlier action) is the /2 document without its
intervals, so it still verifies against a re-evaluation (``mlobs.report.publish.same_data``) and
its pages, comparisons and history are still built from it.
"""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path

from mlobs.errors import ConfigError
from mlobs.evaluate import registry
from mlobs.evaluate.metrics import ERROR_PREDICTION, Metrics, from_aggregate

REPORT_SCHEMA = "mlobs.report/2"
COMPARE_SCHEMA = "mlobs.compare/2"
REPORT_SCHEMAS = ("mlobs.report/1", REPORT_SCHEMA)  # what a published report.json may hold
WORST_SAMPLES = 20


def _num(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return None
    return round(float(value), 6)  # fixed precision: identical input, identical bytes


def headline(m: Metrics) -> dict:
    return {"n": m.n, "errors": m.errors, **{k: _num(v) for k, v in m.headline().items()}}


def _bounds(iv) -> dict | None:
    if iv is None or iv.value is None or math.isnan(iv.low) or math.isnan(iv.high):
        return None
    return {"low": _num(iv.low), "high": _num(iv.high)}


def intervals(rows: list[dict], labels: list[str], slices: list[tuple[str, str]]) -> dict:
    """The 95 % intervals of a run's headline and per-class metrics and of each slice's accuracy
    (mlobs.stats: seeded by the counts, so the same run gives the same bytes)."""
    from mlobs.evaluate.compare import CONFIDENCE
    from mlobs.stats.intervals import metric_intervals

    iv = metric_intervals(rows, labels=labels, confidence=CONFIDENCE)
    headline = {}
    for name, interval in iv.headline().items():
        bounds = _bounds(interval)
        headline[name] = None if bounds is None else {**bounds, "method": interval.method}
    return {
        "confidence": CONFIDENCE, "resamples": iv.resamples, "headline": headline,
        "per_class": [{"label": c.label, **{kind: _bounds(getattr(c, kind))
                                            for kind in ("precision", "recall", "f1")}}
                      for c in iv.per_class],
        "slices": [{"name": name, "value": value, "accuracy": _bounds(metric_intervals(
            rows, labels=labels, slice_key=(name, value), confidence=CONFIDENCE,
            metrics=["accuracy"], per_class=False).accuracy)} for name, value in slices],
    }


def version_document(engine, info, labels: list[str] | None = None, slo: dict | None = None) -> dict:
    rows = engine.aggregate(info).to_pylist()
    run = from_aggregate(rows, labels=labels)
    m = run.overall
    predicted = {}
    for r in rows:
        if (r["slice_name"] or "") == "" and not r["is_error"] and r["prediction"] is not None:
            predicted[r["prediction"]] = predicted.get(r["prediction"], 0) + int(r["n"])
    valid = sum(predicted.values()) or 1
    return {
        "schema": REPORT_SCHEMA,
        "version": info.model_version,
        "run": {"run_id": info.run_id, "snapshot_id": str(info.snapshot_id), "commit_sha": info.commit_sha,
                "dataset_hash": info.dataset_hash,
                "committed_at": info.committed_at.isoformat().replace("+00:00", "Z"),
                "rows": info.rows, "table": info.table},
        "headline": headline(m),
        "labels": list(m.labels),
        "per_class": [{"label": c.label, "precision": _num(c.precision), "recall": _num(c.recall),
                       "f1": _num(c.f1), "support": c.support} for c in m.per_class],
        "confusion": {"labels": list(m.labels), "columns": [*m.labels, ERROR_PREDICTION],
                      "matrix": m.confusion},
        "slices": [{"name": s.name, "value": s.value, "n": s.metrics.n, "errors": s.metrics.errors,
                    "accuracy": _num(s.metrics.accuracy), "macro_f1": _num(s.metrics.macro_f1)}
                   for s in run.slices],
        "calibration": {"ece": _num(m.ece),
                        "bins": [{"low": _num(b.low), "high": _num(b.high), "n": b.n,
                                  "mean_confidence": _num(b.mean_confidence),
                                  "accuracy": _num(b.accuracy)} for b in m.reliability]},
        "prediction_share": [{"label": label, "share": _num(predicted.get(label, 0) / valid)}
                             for label in m.labels],
        "worst_samples": worst_samples(engine, info),
        "slo": slo,
        "intervals": intervals(rows, list(m.labels), [(sl.name, sl.value) for sl in run.slices]),
    }


def worst_samples(engine, info, k: int = WORST_SAMPLES) -> list[dict]:
    """The most confident wrong answers, then errors; ties by sample id.

    Streamed: each batch is filtered and ranked in Arrow and gives at most k candidates, so only
    a few rows per batch ever become Python objects and memory stays bounded by k × batches.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = ["sample_id", "label", "prediction", "confidence", "error"]
    candidates: list[dict] = []
    for batch in engine.iter_run(info, columns=columns):
        table = pa.Table.from_batches([batch])
        wrong = pc.or_(pc.is_valid(table["error"]),
                       pc.fill_null(pc.not_equal(table["prediction"], table["label"]), True))
        table = table.filter(wrong)
        if table.num_rows == 0:
            continue
        rank = pc.if_else(pc.is_valid(table["error"]), -1.0, pc.fill_null(table["confidence"], 0.0))
        table = table.append_column("rank", rank)
        order = pc.sort_indices(table, sort_keys=[("rank", "descending"), ("sample_id", "ascending")])
        candidates += table.take(order[:k]).to_pylist()
        candidates = heapq.nsmallest(k, candidates, key=lambda r: (-r["rank"], str(r["sample_id"])))
    return [{"sample_id": r["sample_id"], "label": r["label"], "prediction": r["prediction"],
             "confidence": _num(r["confidence"]), "error": r["error"]} for r in candidates]


def _interval_of(doc: dict, metric: str) -> tuple[float | None, float | None]:
    bounds = (doc.get("intervals") or {}).get("headline", {}).get(metric)
    return (bounds["low"], bounds["high"]) if bounds else (None, None)


def compare_documents(a: dict, b: dict, statistics: dict | None = None) -> dict:
    """The comparison of version ``b`` against ``a``. ``statistics`` (from
    :func:`comparison_statistics`) adds each delta's interval and test; a delta whose test
    measured other numbers than the documents show (the two documents counted different class
    lists) is shown without them."""
    metrics = []
    tests = (statistics or {}).get("deltas", {})
    for m in registry.metrics():  # a document published before a metric existed lacks it: None
        va, vb = a["headline"].get(m.name), b["headline"].get(m.name)
        delta = None if va is None or vb is None else _num(vb - va)
        better = None if not delta else (delta > 0) == m.higher_is_better
        a_low, a_high = _interval_of(a, m.name)
        b_low, b_high = _interval_of(b, m.name)
        entry = {"metric": m.name, "a": va, "b": vb, "delta": delta, "better": better,
                 "label": m.label, "digits": m.digits, "percent": m.percent,
                 "a_low": a_low, "a_high": a_high, "b_low": b_low, "b_high": b_high,
                 "low": None, "high": None, "p_value": None, "method": None}
        test = tests.get(m.name)
        if test is not None and delta is not None and _agrees(test, va, vb):
            entry.update(low=test["low"], high=test["high"], p_value=test["p_value"],
                         method=test["method"])
        metrics.append(entry)
    slices_a = {(s["name"], s["value"]): s for s in a["slices"]}
    slices = []
    for s in b["slices"]:
        other = slices_a.get((s["name"], s["value"]))
        va = other["accuracy"] if other else None
        slices.append({"name": s["name"], "value": s["value"], "a": va, "b": s["accuracy"],
                       "delta": None if va is None or s["accuracy"] is None else _num(s["accuracy"] - va)})
    labels = sorted(set(a["labels"]) | set(b["labels"]))
    columns = [*labels, ERROR_PREDICTION]
    ma, mb = _matrix(a, labels, columns), _matrix(b, labels, columns)
    share_a = {s["label"]: s["share"] or 0.0 for s in a["prediction_share"]}
    share_b = {s["label"]: s["share"] or 0.0 for s in b["prediction_share"]}
    moves = [{"label": label, "a": _num(share_a.get(label, 0.0)), "b": _num(share_b.get(label, 0.0)),
              "delta": _num(share_b.get(label, 0.0) - share_a.get(label, 0.0))} for label in labels]
    moves.sort(key=lambda m: (-abs(m["delta"] or 0.0), m["label"]))
    comparison = None if statistics is None else {"paired": statistics["paired"],
                                                   "why": statistics["why"]}
    return {"schema": COMPARE_SCHEMA, "a": a["version"], "b": b["version"], "metrics": metrics,
            "comparison": comparison, "slices": slices, "share_moves": moves,
            "confusion_diff": {"labels": labels, "columns": columns,
                               "matrix": [[mb[i][j] - ma[i][j] for j in range(len(columns))]
                                          for i in range(len(labels))]}}


def _agrees(test: dict, a: float | None, b: float | None) -> bool:
    return (a is not None and b is not None and test["baseline"] is not None
            and test["current"] is not None and abs(test["baseline"] - a) < 1e-6
            and abs(test["current"] - b) < 1e-6)


def comparison_statistics(engine, a: dict, b: dict) -> dict | None:
    """The deltas of ``b`` against ``a`` with their intervals and tests — paired by sample id when
    both runs scored the same golden set — from the two documents' runs in the table; None when
    either run is no longer there (a page published from a table since replaced)."""
    from mlobs.evaluate.compare import gather

    run_a, run_b = engine.find_run(a["run"]["run_id"]), engine.find_run(b["run"]["run_id"])
    if run_a is None or run_b is None:
        return None
    rows_a, rows_b = engine.aggregate(run_a).to_pylist(), engine.aggregate(run_b).to_pylist()
    labels = sorted({r["label"] for r in rows_a + rows_b if r["label"] is not None}
                    | {r["prediction"] for r in rows_a + rows_b
                       if r["prediction"] is not None and not r["is_error"]})
    evidence = gather(engine, run_b, run_a, rows_b, rows_a, labels)
    return {"paired": evidence.paired, "why": evidence.why,
            "deltas": {name: {"current": _num(d.current), "baseline": _num(d.baseline),
                              "low": _num(d.low), "high": _num(d.high),
                              "p_value": _p(d.p_value), "method": d.label}
                       for name, d in evidence.deltas.items()}}


def _p(value: float | None) -> float | None:
    """A p-value to 6 significant digits (small ones keep their size, unlike _num's decimals)."""
    if value is None or math.isnan(value):
        return None
    return float(f"{value:.6g}")


def _matrix(doc: dict, labels: list[str], columns: list[str]) -> list[list[int]]:
    conf = doc["confusion"]
    index = {label: i for i, label in enumerate(conf["labels"])}
    cols = {c: j for j, c in enumerate(conf["columns"])}
    return [[conf["matrix"][index[r]][cols[c]] if r in index and c in cols else 0 for c in columns]
            for r in labels]


def load_slo_results(path: Path | None) -> dict | None:
    """The slo-validate results JSON of the same version, reduced to what the report shows."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"slo-results {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"slo-results {str(path)!r} is not JSON: {exc}") from None
    if data.get("schema") != "mlobs.slo-results/1":
        raise ConfigError(f"slo-results {str(path)!r} is not an slo-validate results file")
    scenarios = []
    for s in data["scenarios"]:
        check = s["checks"][0] if s["checks"] else {}
        scenarios.append({"name": s["name"], "verdict": s["verdict"],
                          "measured": check.get("measured", "—"), "threshold": check.get("threshold", "—"),
                          "n": check.get("n")})
    return {"verdict": data["verdict"], "window": data["window"], "source": data["source"],
            "model_version": data.get("model_version"), "scenarios": scenarios}
