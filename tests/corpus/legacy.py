"""The legacy service style of the original design: ``bentoml.legacy.Service`` with a runner, a
``PandasDataFrame`` input and a ``{"predictions": [...], "confidences": [...]}`` output; plus a
``NumpyNdarray`` API answering ``predict_proba`` rows. Models from ``$MLOBS_CORPUS_DIR``."""

from __future__ import annotations

import warnings

import bentoml
import numpy as np
from bentoml.io import JSON, NumpyNdarray, PandasDataFrame
from models import feature_names, load

warnings.filterwarnings("ignore", category=DeprecationWarning)


class WineRunnable(bentoml.legacy.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        self.model = load("wine")

    @bentoml.legacy.Runnable.method(batchable=True, batch_dim=0)
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(np.asarray(x, dtype=np.float64))


wine = bentoml.legacy.Runner(WineRunnable, name="wine_runner")
svc = bentoml.legacy.Service("mlobs_corpus_legacy", runners=[wine])


@svc.api(input=PandasDataFrame(), output=JSON())
async def predict(frame):
    proba = await wine.predict_proba.async_run(frame[feature_names("wine")].to_numpy())
    return {"predictions": proba.argmax(axis=1).tolist(), "confidences": proba.max(axis=1).tolist()}


@svc.api(input=NumpyNdarray(), output=NumpyNdarray())
async def proba(x):
    return await wine.predict_proba.async_run(x)


@svc.api(input=JSON(), output=JSON())
async def instances(payload):
    """Free-form JSON that is in fact a 2-D array: the schema cannot say so (input-format)."""
    proba = await wine.predict_proba.async_run(np.asarray(payload, dtype=np.float64))
    return {"predictions": proba.argmax(axis=1).tolist(), "probabilities": proba.tolist()}
