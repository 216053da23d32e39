"""The output contract on answers as the libraries that produce them write them (JSON of
scikit-learn's ``predict_proba(...).tolist()``, Hugging Face pipelines' top-k lists, the legacy
design's parallel lists, ``{label, score}`` objects), the canonical label spelling and
``class-names``. Pure functions: no server."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mlobs.errors import ConfigError
from mlobs.evaluate.contract import OutputReader, Unreadable, parse_path
from mlobs.evaluate.labels import ClassNames, canonical, canonical_value

IRIS = ClassNames(("setosa", "versicolor", "virginica"))


def read(answer, n=None, **kw):
    n = len(answer) if n is None else n
    cols = OutputReader(**kw).read(json.loads(json.dumps(answer)), n)  # as it comes off the wire
    return {"prediction": cols.prediction.to_pylist(), "confidence": cols.confidence.to_pylist(),
            "scores": [dict(s) if s is not None else None for s in cols.scores.to_pylist()],
            "error": cols.error.to_pylist(), "shape": cols.shape}


def test_a_list_of_labels_and_of_indices():
    assert read(["cat", "dog"])["prediction"] == ["cat", "dog"]
    assert read([0, 2, 1])["prediction"] == ["0", "2", "1"]  # compare with integer labels
    assert read([0, 2, 1], class_names=IRIS)["prediction"] == ["setosa", "virginica", "versicolor"]
    assert read([0.0, 1.0])["prediction"] == ["0", "1"]  # a float array of classes
    assert read([True, False])["prediction"] == ["true", "false"]
    out = read([0, 7], class_names=IRIS)
    assert out["prediction"] == ["setosa", None]
    assert out["error"] == [None, "class index 7 is outside class-names (3 names)"]
    out = read(["cat", None])
    assert out["error"] == [None, "the Bento answered no label (null)"]


def test_predict_proba_rows_give_argmax_confidence_and_distribution():
    proba = np.array([[0.1, 0.7, 0.2], [0.8, 0.15, 0.05]])
    out = read(proba.tolist())
    assert out["prediction"] == ["1", "0"]
    assert out["confidence"] == [0.7, 0.8]
    assert out["scores"][0] == {"0": 0.1, "1": 0.7, "2": 0.2}
    assert out["shape"] == "a 2-D array of class probabilities (3 classes)"
    named = read(proba.tolist(), class_names=IRIS)
    assert named["prediction"] == ["versicolor", "setosa"]
    assert named["scores"][1] == {"setosa": 0.8, "versicolor": 0.15, "virginica": 0.05}
    with pytest.raises(Unreadable, match="answered 3 class probabilities but class-names has 2"):
        read(proba.tolist(), class_names=ClassNames(("a", "b")))


def test_logits_are_kept_but_give_no_confidence():
    out = read([[2.5, -1.0], [-0.3, 0.9]])
    assert out["prediction"] == ["0", "1"]
    assert out["confidence"] == [None, None]  # not probabilities: no calibration from them
    assert out["scores"][0] == {"0": 2.5, "1": -1.0}


def test_non_finite_probabilities_are_error_rows():
    answer = json.loads('[[0.2, 0.8], [NaN, 0.5]]')  # Python's json writes NaN
    cols = OutputReader().read(answer, 2)
    assert cols.prediction.to_pylist() == ["1", None]
    assert cols.error.to_pylist() == [None, "the Bento answered non-finite probabilities"]


def test_objects_with_a_label_a_score_and_or_a_distribution():
    out = read([{"label": "POSITIVE", "score": 0.98}, {"label": "NEGATIVE", "score": 0.6}])
    assert out["prediction"] == ["POSITIVE", "NEGATIVE"] and out["confidence"] == [0.98, 0.6]
    out = read([{"class": 1, "probability": 0.9, "distribution": [0.1, 0.9]}],
               class_names=ClassNames(("no", "yes")))
    assert (out["prediction"], out["confidence"]) == (["yes"], [0.9])
    assert out["scores"] == [{"no": 0.1, "yes": 0.9}]
    out = read([{"prediction": "b", "probabilities": {"a": 0.3, "b": 0.7}}])
    assert (out["prediction"], out["confidence"]) == (["b"], [0.7])
    # a threshold-tuned classifier: the confidence is the probability of what it predicted
    out = read([{"label": "a", "scores": {"a": 0.4, "b": 0.6}}])
    assert out["confidence"] == [0.4]
    out = read([{"probabilities": [0.2, 0.8]}])  # a distribution alone is its argmax
    assert (out["prediction"], out["confidence"]) == (["1"], [0.8])
    assert read([{"error": "bad input"}])["error"] == ["bad input"]


def test_the_example_bentos_shape_takes_the_fast_path():
    answer = [{"label": "positive", "scores": {"positive": 0.9, "negative": 0.1}}] * 3
    out = read(answer)
    assert out["shape"] == "a list of objects (label, scores)"
    assert out["prediction"] == ["positive"] * 3 and out["confidence"] == [0.9] * 3


def test_hugging_face_top_k_lists():
    # text-classification with top_k=2 on two inputs, as transformers returns it
    answer = [[{"label": "joy", "score": 0.91}, {"label": "anger", "score": 0.05}],
              [{"label": "sadness", "score": 0.55}, {"label": "joy", "score": 0.30}]]
    out = read(answer)
    assert out["prediction"] == ["joy", "sadness"]
    assert out["confidence"] == [0.91, 0.55]
    assert out["scores"][1] == {"sadness": 0.55, "joy": 0.30}
    assert out["shape"] == "top-k lists of {label, score} (Hugging Face pipeline)"
    assert read([[{"label": "LABEL_1", "score": 0.9}]])["prediction"] == ["LABEL_1"]


def test_dicts_of_parallel_lists():
    # the legacy design's answer: class indices and confidences
    out = read({"predictions": [2, 0], "confidences": [0.8, 0.6]}, 2, class_names=IRIS)
    assert out["prediction"] == ["virginica", "setosa"] and out["confidence"] == [0.8, 0.6]
    assert out["shape"] == "a dict of parallel lists (predictions, confidences)"
    out = read({"labels": ["a", "b"], "scores": [0.7, 0.9]}, 2)
    assert out["confidence"] == [0.7, 0.9]
    out = read({"labels": ["a", "b"], "probabilities": [[0.6, 0.4], [0.1, 0.9]]}, 2,
               class_names=ClassNames(("a", "b")))
    assert out["confidence"] == [0.6, 0.9] and out["scores"][1] == {"a": 0.1, "b": 0.9}
    out = read({"probabilities": [[0.6, 0.4], [0.1, 0.9]]}, 2)  # no labels: the argmax
    assert out["prediction"] == ["0", "1"]
    with pytest.raises(Unreadable, match="answered 1 confidences for 2 samples"):
        read({"predictions": ["a", "b"], "confidences": [0.5]}, 2)


def test_a_wrapper_dict_with_one_list_is_unwrapped():
    out = read({"result": ["a", "b"], "model": "v3"}, 2)
    assert out["prediction"] == ["a", "b"] and out["shape"] == "a list of labels under 'result'"


def test_other_shapes_name_their_keys_and_prediction_path():
    with pytest.raises(Unreadable) as err:
        read({"output": {"classes": ["a"]}, "took_ms": 3}, 1)
    assert str(err.value) == (
        "the Bento answered an object with keys output, took_ms: none holds 1 predictions; set "
        "prediction-path to where the predictions are (e.g. 'output.labels' or 'results.*.label')")
    with pytest.raises(Unreadable, match="answered 3 predictions for 2 samples"):
        read(["a", "b", "c"], 2)
    with pytest.raises(Unreadable, match="answered the text \"ok\", not predictions for 2 samples"):
        read("ok", 2)


def test_prediction_path_walks_objects_and_lists():
    answer = {"data": {"results": [{"top": {"name": "x", "p": 0.9}}, {"top": {"name": "y", "p": 0.4}}]}}
    out = read(answer, 2, path=parse_path("data.results.*.top"))
    assert out["prediction"] == ["x", "y"]
    out = read(answer, 2, path=parse_path("data.results.*.top.name"))
    assert out["prediction"] == ["x", "y"] and out["confidence"] == [None, None]
    assert read({"batches": [["a", "b"]]}, 2, path=parse_path("batches.0"))["prediction"] == ["a", "b"]
    with pytest.raises(Unreadable) as err:
        read(answer, 2, path=parse_path("data.items"))
    assert str(err.value) == "prediction-path 'data.items': data has no key 'items' (its keys: results)"
    with pytest.raises(ConfigError, match="empty segment"):
        parse_path("data..x")


def test_a_one_sample_answer():
    reader = OutputReader()
    assert reader.read("setosa", 1, single=True).prediction.to_pylist() == ["setosa"]
    cols = reader.read({"prediction": "b", "confidence": 0.8}, 1, single=True)
    assert cols.prediction.to_pylist() == ["b"] and cols.confidence.to_pylist() == [0.8]
    cols = reader.read([0.2, 0.8], 1, single=True)  # the probabilities of the one sample
    assert cols.prediction.to_pylist() == ["1"]
    assert reader.read(["setosa"], 1, single=True).prediction.to_pylist() == ["setosa"]


# --- labels ------------------------------------------------------------------------------------


def test_one_spelling_per_class():
    assert [canonical_value(v) for v in (1, 1.0, "1", " 1 ", "1.0", "01", True, "x ", "1e3")] == \
        ["1", "1", "1", "1", "1", "1", "true", "x", "1000"]
    assert [canonical_value(v) for v in (None, float("nan"), "", "  ", "NaN", "None", "null", "<NA>")] == \
        [None] * 8
    assert canonical_value("none") == "none"  # a class in many label sets
    assert canonical_value(2.5) == "2.5"
    big = "12345678901234567890"  # beyond float precision: kept as written, never merged
    assert canonical_value(big) == big and canonical_value(big[:-1] + "1") != big
    arrow = canonical(pa.array([1.0, 2.5, float("nan"), None, 3.0]))
    assert arrow.to_pylist() == ["1", "2.5", None, None, "3"]
    assert canonical(pa.array(["1", " 1.0 ", "nan", "", "None", "none", "cat"])).to_pylist() == \
        ["1", "1", None, None, None, "none", "cat"]


def test_class_names_from_the_input_or_a_file(tmp_path):
    assert ClassNames.parse("setosa, versicolor,virginica", tmp_path).names == IRIS.names
    (tmp_path / "classes.txt").write_text("setosa\nversicolor\n\nvirginica\n")
    assert ClassNames.parse("classes.txt", tmp_path).names == IRIS.names
    assert ClassNames.parse("", tmp_path) is None
    with pytest.raises(ConfigError, match="neither comma-separated names nor a file"):
        ClassNames.parse("labels.txt", tmp_path)
    with pytest.raises(ConfigError, match="'a' listed twice"):
        ClassNames.parse("a,b,a", tmp_path)
    with pytest.raises(ConfigError, match="empty class name"):
        ClassNames.parse("a,,b", tmp_path)
