"""Evaluation runs written straight through the lake layer, for report tests and benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pyarrow as pa

from mlobs.lake.schema import sample_arrow_schema

CLASSES = ["negative", "neutral", "positive"]


def batches(n: int, *, accuracy: float, seed: int = 1, classes=CLASSES, batch_size: int = 500,
            errors: int = 0, languages=("en", "de")):
    rng = random.Random(seed)
    schema = sample_arrow_schema()
    for start in range(0, n, batch_size):
        rows = []
        for i in range(start, min(n, start + batch_size)):
            label = classes[i % len(classes)]
            right = rng.random() < accuracy
            prediction = label if right else rng.choice([c for c in classes if c != label])
            confidence = round(rng.uniform(0.55, 0.99) if right else rng.uniform(0.34, 0.9), 4)
            scores = {c: (confidence if c == prediction else round((1 - confidence) / (len(classes) - 1), 4))
                      for c in classes}
            error = "HTTP 500 after 3 attempts" if i < errors else None
            rows.append({"sample_id": f"s{i:05d}", "label": label,
                         "prediction": None if error else prediction,
                         "confidence": None if error else confidence,
                         "scores": None if error else list(scores.items()),
                         "slices": [("language", languages[i % len(languages)]),
                                    ("length_bucket", "short" if i % 3 else "long")],
                         "error": error})
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def write(engine, version: str, n: int = 600, *, accuracy: float, seed: int = 1, run_id: str | None = None,
          when: datetime | None = None, **kwargs):
    info, _ = engine.write_run(batches(n, accuracy=accuracy, seed=seed, **kwargs),
                               run_id=run_id or f"run-{version}-{seed}", model_version=version,
                               commit_sha="0" * 40, dataset_hash="d" * 64,
                               evaluated_at=when or datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
                               action_version="test")
    return info
