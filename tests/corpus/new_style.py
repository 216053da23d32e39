"""New-style Bentos (``@bentoml.service``) in the shapes users bring: one service, one API per
input and output convention, so one ``bentoml serve`` covers the whole corpus.

Output shapes: bare labels, class indices, ``predict_proba`` arrays, ``{label, score}`` objects,
``{class, probability, distribution}`` objects, dicts of parallel lists, Hugging Face top-k lists,
and a nested answer only ``prediction-path`` can find. Inputs: an ndarray parameter, a list of
records, a DataFrame, and a non-batchable API with one scalar parameter per feature. Models come
from ``$MLOBS_CORPUS_DIR`` (see models.py); nothing here imports mlobs.
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np

with bentoml.importing():
    import pandas as pd

from models import class_names, feature_names, load

IRIS, WINE, CANCER, DIGITS = "iris", "wine", "breast_cancer", "digits"


@bentoml.service(name="mlobs_corpus", workers=1, traffic={"timeout": 60})
class Corpus:
    def __init__(self) -> None:
        self.models = {name: load(name) for name in (IRIS, WINE, CANCER, DIGITS)}
        self.classes = {name: class_names(name) for name in self.models}

    def _proba(self, name: str, x: Any) -> np.ndarray:
        return self.models[name].predict_proba(np.asarray(x, dtype=np.float64))

    # --- ndarray in -------------------------------------------------------------------------

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def iris_labels(self, features: np.ndarray) -> list[str]:
        """A list of class names."""
        idx = self._proba(IRIS, features).argmax(axis=1)
        return [self.classes[IRIS][i] for i in idx]

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def iris_indices(self, features: np.ndarray) -> list[int]:
        """A list of class indices (what ``model.predict`` gives for integer targets)."""
        return self._proba(IRIS, features).argmax(axis=1).tolist()

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def wine_proba(self, x: np.ndarray) -> np.ndarray:
        """``predict_proba``: a 2-D array of class probabilities (BentoML's sklearn examples)."""
        return self._proba(WINE, x)

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def digits_topk(self, pixels: np.ndarray) -> list[list[dict[str, Any]]]:
        """Hugging Face pipeline style: the top 3 of each sample as ``{label, score}``."""
        out = []
        for row in self._proba(DIGITS, pixels):
            top = np.argsort(row)[::-1][:3]
            out.append([{"label": self.classes[DIGITS][i], "score": float(row[i])} for i in top])
        return out

    @bentoml.api
    def cancer_parallel_probs(self, x: np.ndarray) -> dict[str, Any]:
        """A dict of parallel lists: names and full distributions (not batchable: BentoML's
        batcher splits lists only, so each request is answered whole)."""
        proba = self._proba(CANCER, x)
        names = self.classes[CANCER]
        return {"labels": [names[i] for i in proba.argmax(axis=1)], "probabilities": proba.tolist()}

    # --- records in -------------------------------------------------------------------------

    @bentoml.api(batchable=True, max_batch_size=2048, max_latency_ms=10_000)
    def cancer_objects(self, rows: list[dict[str, float]]) -> list[dict[str, Any]]:
        """``[{label, score}]`` from records keyed by the dataset's own column names."""
        cols = feature_names(CANCER)
        proba = self._proba(CANCER, [[r[c] for c in cols] for r in rows])
        names = self.classes[CANCER]
        return [{"label": names[i], "score": float(p[i])} for i, p in zip(proba.argmax(axis=1), proba,
                                                                          strict=True)]

    @bentoml.api
    def iris_nested(self, rows: list[dict[str, float]]) -> dict[str, Any]:
        """An answer only a prediction-path can read: ``result.outputs.*.cls``."""
        cols = feature_names(IRIS)
        proba = self._proba(IRIS, [[r[c] for c in cols] for r in rows])
        return {"result": {"model": "iris", "outputs": [
            {"cls": self.classes[IRIS][i], "p": float(p[i])} for i, p in zip(proba.argmax(axis=1), proba,
                                                                           strict=True)]}}

    # --- DataFrame in (not batchable: BentoML 1.4's batcher cannot merge DataFrames) ---------

    @bentoml.api
    def wine_parallel(self, frame: pd.DataFrame) -> dict[str, Any]:
        """The legacy design's output: class indices and confidences as parallel lists."""
        proba = self._proba(WINE, frame[feature_names(WINE)])
        return {"predictions": proba.argmax(axis=1).tolist(), "confidences": proba.max(axis=1).tolist()}

    @bentoml.api
    def cancer_distribution(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """``{class: index, probability, distribution: [p per class]}`` objects."""
        proba = self._proba(CANCER, frame[feature_names(CANCER)])
        return [{"class": int(i), "probability": float(p[i]), "distribution": p.tolist()}
                for i, p in zip(proba.argmax(axis=1), proba, strict=True)]

    # --- one sample per request, one parameter per feature ------------------------------------

    @bentoml.api
    def iris_row(self, sepal_length_cm: float, sepal_width_cm: float, petal_length_cm: float,
                 petal_width_cm: float) -> dict[str, Any]:
        """Several scalar parameters: BentoML refuses them on batchable APIs."""
        p = self._proba(IRIS, [[sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm]])[0]
        return {"prediction": self.classes[IRIS][int(p.argmax())], "confidence": float(p.max())}
