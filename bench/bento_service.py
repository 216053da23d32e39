"""The Bento bench/bento_throughput.py measures: a cheap scikit-learn model (logistic regression
on the 13 wine features) behind one batchable ndarray API answering ``predict_proba`` rows.

Served with this folder as the working directory; the model file comes from
``$MLOBS_BENCH_MODEL`` and the worker count from ``$MLOBS_BENCH_WORKERS``.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np


@bentoml.service(name="mlobs_bench", workers=int(os.environ.get("MLOBS_BENCH_WORKERS", "1")),
                 traffic={"timeout": 120})
class Bench:
    def __init__(self) -> None:
        import joblib

        self.model = joblib.load(os.environ["MLOBS_BENCH_MODEL"])

    @bentoml.api(batchable=True, max_batch_size=100_000, max_latency_ms=60_000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)
