"""The output contract: what a Bento may answer for a batch of n samples, read without configuration.

Recognised answers (``n`` = samples sent; every list is in input order):

- a list of n labels: ``["setosa", "virginica"]`` or class indices ``[0, 2]``;
- a list of n objects with a label under ``label``/``prediction``/``class`` (also
  ``predicted_label``, ``predicted_class``, ``class_name``, ``pred``, ``category``, ``name``),
  optionally a confidence under ``score``/``confidence``/``probability``/``prob``/``p`` and/or
  a full distribution under
  ``scores``/``probabilities``/``probs``/``distribution``/``proba`` — a ``{class: p}`` object or a
  list of p per class index; an object with a distribution and no label is its argmax;
- a dict of parallel lists: ``{"predictions": [...], "confidences": [...]}`` (the legacy design),
  labels also under ``labels``/``classes``/``y_pred``, confidences also under ``scores``/
  ``probabilities``, distributions (lists or objects per sample) under any distribution name;
- a 2-D array of class probabilities (``predict_proba``): the argmax is the prediction, its
  probability the confidence, the row the distribution (for calibration);
- Hugging Face pipelines' top-k: a list of n lists of ``{"label", "score"}``.

Also: a dict whose only list of length n is the answer (``{"result": [...]}``), and for a
single-sample request (a non-batchable API) the one item itself. Anything else is named in the
error with a pointer to ``prediction-path``: a dotted path to the predictions inside the answer
(``output.predictions``; ``*`` walks a list: ``results.*.top``; a number indexes one).

Labels go through :func:`mlobs.evaluate.labels.canonical_value`; with ``class-names``, integer
predictions and distribution columns are mapped to names. Without it, indices stay numbers and
compare with integer labels directly. Scores outside 0..1 are kept, but no confidence is derived
from them (logits are not probabilities).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from mlobs.errors import ConfigError, clip
from mlobs.evaluate.labels import ClassNames, canonical, canonical_value, index_keys

__all__ = ["Columns", "OutputReader", "Unreadable", "parse_path"]

LABEL_KEYS = ("label", "prediction", "class", "predicted_label", "predicted_class", "class_name",
              "pred", "category", "name")
SCORE_KEYS = ("score", "confidence", "probability", "prob", "p")
DIST_KEYS = ("scores", "probabilities", "probs", "distribution", "proba")
LIST_LABEL_KEYS = ("predictions", "labels", "classes", "y_pred", *LABEL_KEYS)
LIST_SCORE_KEYS = ("confidences", "scores", "probabilities", "probs", "confidence", "score",
                   "probability", "distributions", "distribution", "proba")
_MAX_REASON = 200
_SCORES = pa.map_(pa.string(), pa.float64())


class Unreadable(Exception):
    """The answer as a whole is not one of the recognised shapes (reason in ``str``)."""


class Columns(NamedTuple):
    prediction: pa.Array  # string, canonical (mapped through class-names)
    confidence: pa.Array  # float64
    scores: pa.Array  # map<string, double>
    error: pa.Array  # string: why a sample has no prediction
    shape: str  # what the answer was, in words (for logs and errors)


class _Item(NamedTuple):
    prediction: str | None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    error: str | None = None


def parse_path(text: str | None) -> tuple[str, ...] | None:
    """``a.b.*.c`` → ("a", "b", "*", "c"); ConfigError for empty segments."""
    if text is None or not text.strip():
        return None
    parts = tuple(p.strip() for p in text.strip().split("."))
    if any(not p for p in parts):
        raise ConfigError(f"prediction-path {text!r} has an empty segment; write it like "
                          "'output.predictions' or 'results.*.label'")
    return parts


@dataclass(frozen=True)
class OutputReader:
    """Reads one answer into prediction columns. Thread-safe (no state)."""

    class_names: ClassNames | None = None
    path: tuple[str, ...] | None = None

    def read(self, answer: Any, n: int, *, single: bool = False) -> Columns:
        """``answer`` (parsed JSON) for ``n`` samples → columns; Unreadable for a whole-answer
        mismatch. ``single``: the request carried one sample as plain parameters."""
        if self.path is not None:
            answer = self._follow(answer)
        if single:
            answer = _single(answer)
        if isinstance(answer, dict):
            return self._read_dict(answer, n)
        if not isinstance(answer, list):
            raise Unreadable(f"the Bento answered {_describe(answer)}, not predictions for "
                             f"{n} samples{self._hint()}")
        if len(answer) != n:
            raise Unreadable(f"the Bento answered {len(answer)} predictions for {n} samples")
        return self._read_list(answer)

    # --- whole answers ---------------------------------------------------------------------

    def _read_list(self, items: list[Any]) -> Columns:
        n = len(items)
        if n == 0:
            return _columns([], "an empty list")
        first = items[0]
        kind = type(first)
        if kind is str and all(type(x) is str for x in items):
            return self._labels(pa.array(items, pa.string()), "a list of labels")
        if kind is int and all(type(x) is int for x in items):
            return self._labels(pa.array(items, pa.int64()), "a list of class indices")
        if kind is list and first and _is_number(first[0]):
            matrix = _matrix(items)
            if matrix is not None:
                return self._probabilities(matrix, "a 2-D array of class probabilities")
        if kind is dict:
            fast = self._label_scores_fast(items)
            if fast is not None:
                return fast
        parsed = [self._item(x) for x in items]
        shape = ("top-k lists of {label, score} (Hugging Face pipeline)" if kind is list and first
                 and isinstance(first[0], dict) else
                 f"a list of objects ({', '.join(list(first)[:4])})" if kind is dict else
                 "a list of predictions")
        return _from_items(parsed, shape)

    def _read_dict(self, answer: dict[str, Any], n: int) -> Columns:
        lists = {k: v for k, v in answer.items() if isinstance(v, list)}
        label_key = next((k for k in LIST_LABEL_KEYS if k in lists), None)
        score_keys = [k for k in LIST_SCORE_KEYS if k in lists and k != label_key]
        if label_key is None and not score_keys:
            sized = [k for k, v in lists.items() if len(v) == n]
            if len(sized) == 1:  # {"result": [...]} and the like
                columns = self.read(lists[sized[0]], n)
                return columns._replace(shape=f"{columns.shape} under {sized[0]!r}")
            raise Unreadable(f"the Bento answered an object with keys {_keys(answer)}: none holds "
                             f"{n} predictions{self._hint()}")
        for key in ([label_key] if label_key else []) + score_keys:
            if len(lists[key]) != n:
                raise Unreadable(f"the Bento answered {len(lists[key])} {key} for {n} samples")
        confidence = distribution = None
        for key in score_keys:
            values = lists[key]
            if values and all(_is_number(v) or v is None for v in values):
                confidence = confidence if confidence is not None else (key, values)
            elif distribution is None:
                distribution = (key, values)
        parts = [label_key] if label_key else []
        parts += [pair[0] for pair in (confidence, distribution) if pair is not None]
        shape = f"a dict of parallel lists ({', '.join(parts)})"
        if distribution is not None:
            dist = self._read_list(distribution[1])  # argmax, distribution, its confidence
        if label_key is not None:
            labels = self._read_list(lists[label_key])
            if distribution is not None:
                labels = _merge_scores(labels, dist)
        elif distribution is not None:
            labels = dist
        else:
            raise Unreadable(f"the Bento answered {', '.join(score_keys)} but no predictions "
                             f"(under {'/'.join(LIST_LABEL_KEYS[:4])}){self._hint()}")
        if confidence is not None:
            labels = labels._replace(confidence=_confidences(confidence[1]))
        return labels._replace(shape=shape)

    # --- fast paths --------------------------------------------------------------------------

    def _labels(self, array: pa.Array, shape: str) -> Columns:
        text = canonical(array)
        n = len(text)
        errors: list[str | None] | None = None
        if self.class_names is not None:
            values, errors = self._map_names(text.to_pylist())
            text = pa.array(values, pa.string())
        missing = text.null_count
        if missing and errors is None:
            errors = [None if v is not None else "the Bento answered no label (null)"
                      for v in text.to_pylist()]
        error = pa.array(errors, pa.string()) if errors is not None else pa.nulls(n, pa.string())
        return Columns(text, pa.nulls(n, pa.float64()), pa.nulls(n, _SCORES), error, shape)

    def _map_names(self, values: list[str | None]) -> tuple[list[str | None], list[str | None]]:
        assert self.class_names is not None
        names = self.class_names
        known = set(names.names)
        out: list[str | None] = []
        errors: list[str | None] = []
        for v in values:
            if v is None:
                out.append(None)
                errors.append("the Bento answered no label (null)")
            elif v in known or not _is_index_text(v):
                out.append(v)
                errors.append(None)
            else:
                name = names.name(int(v))
                out.append(name)
                errors.append(None if name is not None else
                              f"class index {v} is outside class-names ({len(names)} names)")
        return out, errors

    def _probabilities(self, matrix: np.ndarray, shape: str) -> Columns:
        n, k = matrix.shape
        try:
            keys = index_keys(k, self.class_names)
        except ValueError as exc:
            raise Unreadable(str(exc)) from None
        finite = np.isfinite(matrix).all(axis=1)
        best = matrix.argmax(axis=1)
        top = matrix[np.arange(n), best]
        probabilities = bool(((matrix >= 0) & (matrix <= 1 + 1e-9))[finite].all())
        prediction = pa.array(np.asarray(keys, dtype=object)[best], pa.string())
        confidence = pa.array(top if probabilities else np.full(n, np.nan), pa.float64(),
                              mask=~finite if probabilities else np.ones(n, bool))
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
        repeated = pa.array(keys, pa.string()).take(pa.array(np.tile(np.arange(k), n)))
        scores = pa.MapArray.from_arrays(offsets, repeated, pa.array(matrix.ravel(), pa.float64()),
                                         type=_SCORES)
        error = pa.nulls(n, pa.string())
        if not finite.all():
            reason = "the Bento answered non-finite probabilities"
            error = pa.array([None if ok else reason for ok in finite.tolist()], pa.string())
            prediction = pa.array([p if ok else None for p, ok in
                                   zip(prediction.to_pylist(), finite.tolist(), strict=True)], pa.string())
        return Columns(prediction, confidence, scores, error, f"{shape} ({k} classes)")

    def _label_scores_fast(self, items: list[Any]) -> Columns | None:
        """``{"label": str, "scores": {str: float}}`` for every item (the example Bento's shape)."""
        if self.class_names is not None:
            return None
        labels: list[str] = []
        confidences: list[float] = []
        offsets, keys, values = [0], [], []
        try:
            for item in items:
                label, raw = item["label"], item["scores"]
                if (type(label) is not str or type(raw) is not dict or not raw or len(item) != 2):
                    return None
                labels.append(label)
                confidences.append(raw.get(label, max(raw.values())))
                keys.extend(raw)
                values.extend(raw.values())
                offsets.append(len(keys))
            score_values = pa.array(values, pa.float64())  # ArrowInvalid/TypeError: not numbers
            confidence = pa.array(confidences, pa.float64())
        except (KeyError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if not _all_probabilities(score_values) or not _all_probabilities(confidence):
            return None
        prediction = canonical(pa.array(labels, pa.string()))
        if prediction.null_count:
            return None
        score_keys = canonical(pa.array(keys, pa.string()))
        if score_keys.null_count:
            return None
        scores = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), score_keys, score_values,
                                         type=_SCORES)
        return Columns(prediction, confidence, scores, pa.nulls(len(labels), pa.string()),
                       "a list of objects (label, scores)")

    # --- items -------------------------------------------------------------------------------

    def _item(self, item: Any) -> _Item:
        if isinstance(item, dict):
            return self._object(item)
        if isinstance(item, list):
            if item and all(isinstance(x, dict) for x in item):
                return self._top_k(item)
            if item and all(_is_number(x) for x in item):
                return self._distribution_only(item)
            return _Item(None, error=f"unreadable prediction {_short(item)}")
        return self._label(item)

    def _label(self, value: Any) -> _Item:
        if isinstance(value, bool | str | int | float) or value is None:
            text = canonical_value(value)
            if text is None:
                return _Item(None, error=f"the Bento answered no label ({_short(value)})")
            if self.class_names is not None:
                (mapped,), (error,) = self._map_names([text])
                return _Item(mapped, error=error)
            return _Item(text)
        return _Item(None, error=f"unreadable prediction {_short(value)}")

    def _object(self, item: dict[str, Any]) -> _Item:
        label_key = next((k for k in LABEL_KEYS if k in item and not isinstance(item[k], dict | list)),
                         None)
        score = next((item[k] for k in SCORE_KEYS if k in item and _is_number(item[k])), None)
        raw_dist = next((item[k] for k in (*DIST_KEYS, *SCORE_KEYS)
                         if k in item and isinstance(item[k], dict | list) and item[k]), None)
        dist: dict[str, float] | None = None
        if raw_dist is not None:
            dist, error = self._distribution(raw_dist)
            if error is not None:
                return _Item(None, error=error)
        if label_key is None:
            if dist:
                best = max(dist, key=dist.__getitem__)
                return _Item(best, _confidence(score if score is not None else dist[best], dist), dist)
            reason = item.get("error") or item.get("detail")
            if isinstance(reason, str) and reason:
                return _Item(None, error=_short_text(reason))
            return _Item(None, error=f"prediction object has no label: {_short(item)}")
        label = self._label(item[label_key])
        if label.prediction is None:
            return label
        if score is None and dist:
            score = dist.get(label.prediction, max(dist.values()))
        return _Item(label.prediction, _confidence(score, dist), dist)

    def _top_k(self, entries: list[dict[str, Any]]) -> _Item:
        dist: dict[str, float] = {}
        for entry in entries:
            label_key = next((k for k in LABEL_KEYS if k in entry), None)
            score = next((entry[k] for k in SCORE_KEYS if k in entry and _is_number(entry[k])), None)
            if label_key is None or score is None:
                return _Item(None, error=f"unreadable top-k entry {_short(entry)}")
            label = self._label(entry[label_key])
            if label.prediction is None:
                return label
            dist[label.prediction] = float(score)
        best = max(dist, key=dist.__getitem__)
        return _Item(best, _confidence(dist[best], dist), dist)

    def _distribution_only(self, values: list[Any]) -> _Item:
        dist, error = self._distribution(values)
        if error is not None or not dist:
            return _Item(None, error=error or "empty distribution")
        best = max(dist, key=dist.__getitem__)
        return _Item(best, _confidence(dist[best], dist), dist)

    def _distribution(self, raw: dict[str, Any] | list[Any]) -> tuple[dict[str, float] | None, str | None]:
        try:
            if isinstance(raw, list):
                keys = index_keys(len(raw), self.class_names)
                values = [float(v) for v in raw]
            else:
                keys, values = [], []
                for k, v in raw.items():
                    key = self._label(k)
                    if key.prediction is None:
                        return None, key.error
                    keys.append(key.prediction)
                    values.append(float(v))
        except (TypeError, ValueError) as exc:
            return None, f"unreadable scores {_short(raw)}: {exc}"
        if not all(math.isfinite(v) for v in values):
            return None, "the Bento answered non-finite probabilities"
        return dict(zip(keys, values, strict=True)), None

    def _follow(self, answer: Any) -> Any:
        assert self.path is not None
        return _walk(answer, self.path, ".".join(self.path), ())

    def _hint(self) -> str:
        if self.path is not None:
            return ""
        return ("; set prediction-path to where the predictions are (e.g. 'output.labels' or "
                "'results.*.label')")


# --- helpers ---------------------------------------------------------------------------------


def _walk(value: Any, rest: tuple[str, ...], full: str, seen: tuple[str, ...]) -> Any:
    if not rest:
        return value
    head, tail = rest[0], rest[1:]
    here = ".".join(seen) or "the answer"
    if head == "*":
        if not isinstance(value, list):
            raise Unreadable(f"prediction-path {full!r}: {here} is {_describe(value)}, not a list")
        return [_walk(v, tail, full, (*seen, "*")) for v in value]
    if isinstance(value, dict):
        if head not in value:
            raise Unreadable(f"prediction-path {full!r}: {here} has no key {head!r} (its keys: "
                             f"{_keys(value)})")
        return _walk(value[head], tail, full, (*seen, head))
    if isinstance(value, list) and head.lstrip("-").isdigit():
        index = int(head)
        if not -len(value) <= index < len(value):
            raise Unreadable(f"prediction-path {full!r}: {here} has {len(value)} items, no [{index}]")
        return _walk(value[index], tail, full, (*seen, head))
    raise Unreadable(f"prediction-path {full!r}: {here} is {_describe(value)}; cannot take {head!r}")


def _single(answer: Any) -> list[Any]:
    """A one-sample answer → a list of one item (a bare list of numbers is one distribution)."""
    if isinstance(answer, list):
        if len(answer) == 1:
            return answer
        if answer and (all(_is_number(x) for x in answer) or all(isinstance(x, dict) for x in answer)):
            return [answer]  # probabilities, or top-k entries, of the one sample
        return answer  # let the length check speak
    if isinstance(answer, dict) and not any(isinstance(v, list) and len(v) == 1 for v in answer.values()):
        return [answer]
    return answer if isinstance(answer, dict) else [answer]


def _matrix(items: list[Any]) -> np.ndarray | None:
    try:
        matrix = np.asarray(items, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        return None
    if any(type(v) is bool for v in items[0]):
        return None
    return matrix


def _merge_scores(labels: Columns, dist: Columns) -> Columns:
    """Labels from one list, distributions from another: each sample's confidence is its
    label's probability when the distribution has it."""
    label_list = labels.prediction.to_pylist()
    score_list = dist.scores.to_pylist()
    confidences = []
    for label, scores in zip(label_list, score_list, strict=True):
        mapping = dict(scores) if scores else {}
        value = mapping.get(label) if label is not None else None
        if value is None and mapping:
            value = max(mapping.values())
        confidences.append(value if value is not None and 0.0 <= value <= 1.0 else None)
    return labels._replace(confidence=pa.array(confidences, pa.float64()), scores=dist.scores)


def _confidences(values: Sequence[Any]) -> pa.Array:
    out = []
    for v in values:
        f = float(v) if _is_number(v) else None
        out.append(f if f is not None and 0.0 <= f <= 1.0 else None)
    return pa.array(out, pa.float64())


def _confidence(value: Any, dist: dict[str, float] | None) -> float | None:
    if not _is_number(value):
        return None
    f = float(value)
    if not 0.0 <= f <= 1.0:
        return None
    if dist and not all(0.0 <= v <= 1.0 + 1e-9 for v in dist.values()):
        return None
    return f


def _all_probabilities(array: pa.Array) -> bool:
    import pyarrow.compute as pc

    if len(array) == 0:
        return True
    low, high = pc.min_max(array).values()
    return low.as_py() is not None and low.as_py() >= 0.0 and high.as_py() <= 1.0 + 1e-9 \
        and pc.all(pc.is_finite(array)).as_py()


def _from_items(items: list[_Item], shape: str) -> Columns:
    offsets, keys, values, valid = [0], [], [], []
    for item in items:
        if item.scores:
            keys.extend(item.scores)
            values.extend(item.scores.values())
        offsets.append(len(keys))
        valid.append(bool(item.scores))
    mask = None if all(valid) else pa.array([not v for v in valid])
    scores = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys, pa.string()),
                                     pa.array(values, pa.float64()), type=_SCORES, mask=mask)
    return Columns(pa.array([i.prediction for i in items], pa.string()),
                   pa.array([i.confidence for i in items], pa.float64()), scores,
                   pa.array([i.error for i in items], pa.string()), shape)


def _columns(items: list[_Item], shape: str) -> Columns:
    return _from_items(items, shape)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_index_text(text: str) -> bool:
    return text.isdigit() or (text.startswith("-") and text[1:].isdigit())


def _keys(value: dict[str, Any]) -> str:
    keys = list(value)
    shown = ", ".join(map(str, keys[:8]))
    return shown + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {_keys(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _short_text(text)


def _short_text(text: str) -> str:
    return clip(text, _MAX_REASON // 2)
