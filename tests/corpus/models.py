"""Models for the corpus of Bentos: scikit-learn's bundled datasets (no download), trained in
seconds, saved with joblib where the services and the tests both load them from.

Each model is trained on half of its dataset; the other half is the golden set the tests send
through ``mlobs evaluate``, so the metrics are those of held-out data (not a perfect 1.0).
Imported by the services (``bentoml serve`` with this folder as the working directory) and by
the tests, which call the same model in-process to compute every expected number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

ENV = "MLOBS_CORPUS_DIR"
NAMES = ("iris", "wine", "breast_cancer", "digits")


@dataclass
class Split:
    name: str
    features: list[str]  # the dataset's own column names, e.g. "sepal length (cm)"
    classes: list[str]  # target_names, in index order
    x_test: np.ndarray
    y_test: np.ndarray  # class indices


def _load(name: str):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")()


def train_all(directory: Path) -> dict[str, Split]:
    """Train and save one model per dataset into ``directory``; return the held-out halves."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in NAMES:
        data = _load(name)
        x_train, x_test, y_train, y_test = train_test_split(
            data.data, data.target, test_size=0.5, random_state=7, stratify=data.target)
        # A weak regulariser on two features' worth of signal keeps the models imperfect.
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        model.fit(x_train, y_train)
        joblib.dump(model, directory / f"{name}.joblib")
        features = [str(f) for f in getattr(data, "feature_names", [])] or \
            [f"pixel_{i}" for i in range(data.data.shape[1])]
        classes = [str(c) for c in data.target_names]
        splits[name] = Split(name, features, classes, x_test, y_test)
    return splits


def load(name: str, directory: str | os.PathLike | None = None):
    """The saved model (the very artifact the services load)."""
    base = Path(directory or os.environ[ENV])
    return joblib.load(base / f"{name}.joblib")


def feature_names(name: str) -> list[str]:
    data = _load(name)
    return [str(f) for f in getattr(data, "feature_names", [])] or \
        [f"pixel_{i}" for i in range(data.data.shape[1])]


def class_names(name: str) -> list[str]:
    return [str(c) for c in _load(name).target_names]
