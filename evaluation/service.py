"""Example Bento: a sentiment classifier (TF-IDF + logistic regression) behind a batchable API.

Serve it with ``bentoml serve service:SentimentClassifier`` from this folder after
``python train.py v1`` (see README.md). The model tag comes from the Bento argument ``model``
(``bentoml build/serve --arg model=mlobs-sentiment:v1``; a built Bento keeps the one it was
built with), else from ``MLOBS_EXAMPLE_MODEL``, else ``mlobs-sentiment:latest`` — so v1 and v2
are served by the same code.

This file imports only bentoml, joblib and scikit-learn — not ``mlobs`` — so the Bento stays
portable (``bentoml build`` / ``containerize``) without the action's package inside it.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

MODEL_TAG = (getattr(bentoml.use_arguments(), "model", None)
             or os.environ.get("MLOBS_EXAMPLE_MODEL") or "mlobs-sentiment:latest")
MODEL_FILE = "model.joblib"


@bentoml.service(
    name="mlobs_sentiment",
    # One worker is right for a tiny CPU model on small runners; more only adds start time.
    workers=int(os.environ.get("MLOBS_EXAMPLE_WORKERS", "1")),
    traffic={"timeout": 60},
)
class SentimentClassifier:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import joblib

        self.model = joblib.load(self.model_ref.path_of(MODEL_FILE))
        self.classes = [str(c) for c in self.model.classes_]

    # Server-side adaptive batching merges concurrent requests; a generous max latency keeps the
    # dispatcher from shedding load (503) when a client sends many large batches at once.
    @bentoml.api(batchable=True, max_batch_size=1024, max_latency_ms=10_000)
    def predict(self, text: list[str]) -> list[dict[str, Any]]:
        """One ``{"label", "scores"}`` per input text, in input order."""
        if not text:  # sklearn refuses zero samples; an empty batch has an empty answer
            return []
        probs = self.model.predict_proba(text)
        labels = [self.classes[i] for i in probs.argmax(axis=1).tolist()]
        classes = self.classes
        return [{"label": label, "scores": dict(zip(classes, row, strict=True))}
                for label, row in zip(labels, probs.tolist(), strict=True)]

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """Which model version answers: lets a caller check what it is evaluating."""
        return {"model": str(self.model_ref.tag), "classes": self.classes}
