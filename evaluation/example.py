"""The example sentiment model of this folder: templated data, training, the model store.

Part of the example Bento, not of the action: ``train.py`` and ``make_golden.py`` import it from
here, and it needs only the standard library, scikit-learn, joblib and BentoML.

Everything here is deterministic (seeded ``random.Random``, no downloads), so the golden set,
the training data and both model versions are reproduced byte for byte on any machine.

The golden set deliberately uses sentiment words the training data never contains (a held-out
part of each lexicon) and "X, but Y" sentences, so even v1 is not perfect; v2 is trained on a
fraction of the data with word unigrams only, which loses negation ("not good") — a real,
slice-visible regression for the runner to find.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CLASSES",
    "GOLDEN_COLUMNS",
    "MODEL_NAME",
    "VERSIONS",
    "golden_rows",
    "length_bucket",
    "load_model",
    "predict_items",
    "save_model",
    "train",
    "training_rows",
    "write_golden_csv",
]

MODEL_NAME = "mlobs-sentiment"
CLASSES = ("negative", "neutral", "positive")
GOLDEN_COLUMNS = ("id", "text", "label", "language", "length_bucket")
MODEL_FILE = "model.joblib"

GOLDEN_SEED = 20261124
TRAIN_SEED = 7
# Share of each sentiment lexicon that training may use; the rest appears only in the golden set.
TRAIN_VOCAB_SHARE = 0.7


@dataclass(frozen=True)
class Lexicon:
    """Words and clauses of one language; sentences are built as subject + copula + predicate."""

    language: str
    subjects: tuple[str, ...]
    copula: str
    negation: str
    but: str
    intensifiers: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    neutral: tuple[str, ...]  # predicates without sentiment ("arrived on Tuesday")
    fillers: tuple[str, ...]  # clauses that only make a sentence longer


LEXICONS: tuple[Lexicon, ...] = (
    Lexicon(
        language="en",
        subjects=("The product", "This phone", "The service", "The delivery", "Our hotel room",
                  "The app", "The battery", "Customer support", "The new update", "The manual"),
        copula="is",
        negation="not",
        but="but",
        intensifiers=("", "really", "very", "quite", "absolutely", "rather"),
        positive=("great", "excellent", "wonderful", "good", "reliable", "lovely", "amazing",
                  "fantastic", "superb", "delightful"),
        negative=("terrible", "awful", "bad", "broken", "useless", "poor", "disappointing",
                  "horrible", "dreadful", "annoying"),
        neutral=("arrived on Tuesday", "comes in a blue box", "was released last year",
                 "has two buttons", "is made in Portugal", "weighs about two hundred grams",
                 "is available in three colours", "was updated this morning",
                 "is sold in most shops", "uses a standard charger"),
        fillers=("after two weeks of daily use", "according to my whole family",
                 "compared with the previous model", "as far as I can tell so far",
                 "when I tried it at home on the weekend", "from what I saw in the first month"),
    ),
    Lexicon(
        language="de",
        subjects=("Das Produkt", "Dieses Handy", "Der Service", "Die Lieferung",
                  "Unser Hotelzimmer", "Die App", "Der Akku", "Der Kundendienst",
                  "Das neue Update", "Die Anleitung"),
        copula="ist",
        negation="nicht",
        but="aber",
        intensifiers=("", "wirklich", "sehr", "ziemlich", "absolut", "recht"),
        positive=("großartig", "ausgezeichnet", "wunderbar", "gut", "zuverlässig", "schön",
                  "erstaunlich", "fantastisch", "hervorragend", "herrlich"),
        negative=("schrecklich", "furchtbar", "schlecht", "kaputt", "nutzlos", "mangelhaft",
                  "enttäuschend", "grauenhaft", "miserabel", "ärgerlich"),
        neutral=("kam am Dienstag an", "steckt in einer blauen Schachtel",
                 "erschien letztes Jahr", "hat zwei Tasten", "wird in Portugal hergestellt",
                 "wiegt etwa zweihundert Gramm", "gibt es in drei Farben",
                 "wurde heute Morgen aktualisiert", "wird in den meisten Läden verkauft",
                 "nutzt ein normales Ladegerät"),
        fillers=("nach zwei Wochen täglicher Nutzung", "laut meiner ganzen Familie",
                 "im Vergleich zum Vorgängermodell", "soweit ich das bisher sagen kann",
                 "als ich es am Wochenende zu Hause ausprobiert habe",
                 "nach dem, was ich im ersten Monat gesehen habe"),
    ),
)


def length_bucket(text: str) -> str:
    """``short`` (≤ 5 words), ``medium`` (≤ 10) or ``long``: a slice column of the golden set."""
    words = len(text.split())
    return "short" if words <= 5 else "medium" if words <= 10 else "long"


def _vocab(words: tuple[str, ...], *, held_out: bool) -> tuple[str, ...]:
    cut = round(len(words) * TRAIN_VOCAB_SHARE)
    return words if held_out else words[:cut]


def _sentence(rng: random.Random, lex: Lexicon, label: str, *, held_out: bool) -> str:
    """One templated sentence with the given label; ``held_out`` allows the unseen words."""
    pos, neg = _vocab(lex.positive, held_out=held_out), _vocab(lex.negative, held_out=held_out)
    subject = rng.choice(lex.subjects)
    intens = rng.choice(lex.intensifiers)

    def clause(lab: str, subj: str) -> str:
        if lab == "positive":
            return " ".join(w for w in (subj, lex.copula, intens, rng.choice(pos)) if w)
        if lab == "negative":
            if rng.random() < 0.3:  # negated praise carries the sentiment in a bigram
                return f"{subj} {lex.copula} {lex.negation} {rng.choice(pos)}"
            return " ".join(w for w in (subj, lex.copula, intens, rng.choice(neg)) if w)
        return f"{subj} {rng.choice(lex.neutral)}"

    if label != "neutral" and rng.random() < 0.15:
        # "X, but Y": the clause after "but" decides; bag-of-words models find this hard.
        other = "negative" if label == "positive" else "positive"
        text = f"{clause(other, subject)}, {lex.but} {clause(label, _decapitalize(rng.choice(lex.subjects)))}"
    else:
        text = clause(label, subject)
    if rng.random() < 0.4:
        text = f"{text} {rng.choice(lex.fillers)}"
    return text + "."


def _decapitalize(subject: str) -> str:
    return subject[:1].lower() + subject[1:]  # "Die App" → "die App": nouns keep their capital


def golden_rows(per_class_and_language: int = 80, *, seed: int = GOLDEN_SEED) -> list[dict[str, str]]:
    """The golden set: ``2 languages × 3 classes × n`` rows with GOLDEN_COLUMNS, in a fixed order."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for lex in LEXICONS:
        for label in CLASSES:
            for _ in range(per_class_and_language):
                text = _sentence(rng, lex, label, held_out=True)
                rows.append({"text": text, "label": label, "language": lex.language,
                             "length_bucket": length_bucket(text)})
    rng.shuffle(rows)  # interleave classes and languages so any batch holds a mix
    return [{"id": f"g{i:04d}", **row} for i, row in enumerate(rows, start=1)]


def write_golden_csv(path: Path, rows: Sequence[dict[str, str]] | None = None) -> int:
    """Write the golden set as UTF-8 CSV with a header; returns the number of rows."""
    rows = golden_rows() if rows is None else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=GOLDEN_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def training_rows(n: int = 3000, *, seed: int = TRAIN_SEED, noise: float = 0.03) -> list[tuple[str, str]]:
    """``(text, label)`` pairs from the training vocabulary only, with a little label noise."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for i in range(n):
        lex = LEXICONS[i % len(LEXICONS)]
        label = CLASSES[rng.randrange(len(CLASSES))]
        text = _sentence(rng, lex, label, held_out=False)
        if rng.random() < noise:
            label = rng.choice(CLASSES)
        out.append((text, label))
    return out


@dataclass(frozen=True)
class Recipe:
    """How one model version is trained; v2 is deliberately weaker than v1."""

    train_rows: int
    ngram_max: int
    max_features: int | None
    C: float


VERSIONS: dict[str, Recipe] = {
    "v1": Recipe(train_rows=3000, ngram_max=2, max_features=None, C=10.0),
    # Less data, unigrams only (negation is lost), a tight vocabulary and strong regularisation.
    "v2": Recipe(train_rows=400, ngram_max=1, max_features=40, C=0.5),
}


def train(version: str) -> Any:
    """Train the sklearn pipeline (TF-IDF + logistic regression) for ``version``; seconds on a CPU."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    recipe = VERSIONS.get(version)
    if recipe is None:
        raise ValueError(f"unknown example model version {version!r}; known: {', '.join(VERSIONS)}")
    rows = training_rows()[: recipe.train_rows]
    texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
    model = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, recipe.ngram_max), sublinear_tf=True,
                                  max_features=recipe.max_features)),
        ("clf", LogisticRegression(C=recipe.C, max_iter=2000)),
    ])
    model.fit(texts, labels)
    return model


def save_model(model: Any, version: str, *, name: str = MODEL_NAME) -> str:
    """Save ``model`` as ``name:version`` in the BentoML model store (replacing that version)."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml
    import joblib
    from bentoml.exceptions import NotFound

    tag = f"{name}:{version}"
    with contextlib.suppress(NotFound):
        bentoml.models.delete(tag)  # training is deterministic: re-running replaces, never forks
    recipe = VERSIONS.get(version)
    metadata: dict[str, Any] = {"classes": list(model.classes_)}
    if recipe is not None:
        metadata.update(train_rows=recipe.train_rows, ngram_max=recipe.ngram_max,
                        max_features=recipe.max_features or 0, C=recipe.C)
    with bentoml.models.create(tag, labels={"project": "mlobs", "kind": "example"},
                               metadata=metadata) as ref:
        joblib.dump(model, ref.path_of(MODEL_FILE))
    return tag


def load_model(tag: str) -> Any:
    """Load a model saved by :func:`save_model` from the BentoML model store."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml
    import joblib

    return joblib.load(bentoml.models.get(tag).path_of(MODEL_FILE))


def predict_items(model: Any, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Per-item ``{"label", "scores"}`` for a batch — the service's response, computed in-process."""
    probs = model.predict_proba(list(texts))
    classes = [str(c) for c in model.classes_]
    labels = [classes[i] for i in probs.argmax(axis=1).tolist()]
    return [{"label": label, "scores": dict(zip(classes, row, strict=True))}
            for label, row in zip(labels, probs.tolist(), strict=True)]
