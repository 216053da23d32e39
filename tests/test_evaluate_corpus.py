"""evaluate against a corpus of Bentos in the conventions users bring (tests/corpus/), every
number the action reports checked against the same model called in-process.

Two ``bentoml serve`` processes for the whole module, started side by side: the new-style corpus
(one service, one API per input and output convention) and the legacy one (``bentoml.legacy``
Service + runner + ``PandasDataFrame``). The models are trained in seconds on scikit-learn's
bundled datasets (iris, wine, breast cancer, digits) into a temporary folder; the golden sets are
their held-out halves, written as CSV, Parquet and JSON lines with the datasets' own column names
(``sepal length (cm)``). Each case runs the evaluate mode in-process (``mode.run``: the same code
as the CLI, without its start-up cost) and compares the results JSON and the Iceberg rows with
predictions computed here from the very model files the services load.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

pytest.importorskip("bentoml")
pytest.importorskip("pandas")  # the corpus's DataFrame APIs (dev extra)

from mlobs.config import build_settings  # noqa: E402
from mlobs.errors import ConfigError, MlobsError  # noqa: E402
from mlobs.evaluate import mode  # noqa: E402
from mlobs.evaluate.bento import BentoServer  # noqa: E402
from mlobs.evaluate.client import fetch_openapi  # noqa: E402
from mlobs.evaluate.schema import choose_packing, find_api  # noqa: E402
from mlobs.lake.catalog import CatalogConfig  # noqa: E402
from mlobs.lake.engine import open_engine  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CORPUS = Path(__file__).resolve().parent / "corpus"
sys.path.insert(0, str(CORPUS))
import models  # noqa: E402

BINS = 10


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Trained models (in MLOBS_CORPUS_DIR) and their held-out splits."""
    directory = tmp_path_factory.mktemp("corpus-models")
    return directory, models.train_all(directory)


@pytest.fixture(scope="module")
def servers(corpus, tmp_path_factory):
    directory, _ = corpus
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {models.ENV: str(directory), "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    started = {
        "new": BentoServer("new_style:Corpus", cwd=CORPUS, env=env, ready_timeout=240, base_env=os.environ,
                           log_path=home / "new.log"),
        "legacy": BentoServer("legacy:svc", cwd=CORPUS, env=env, ready_timeout=240, base_env=os.environ,
                              log_path=home / "legacy.log"),
    }
    try:
        with ThreadPoolExecutor(2) as pool:  # the two start-ups overlap
            for future in [pool.submit(s.start) for s in started.values()]:
                future.result()
        yield {name: s.url for name, s in started.items()}
    finally:
        for server in started.values():
            server.stop()


def write_dataset(path: Path, split: models.Split, *, labels: str, drop: list[int] = (),
                  features: list[str] | None = None) -> Path:
    """The held-out half with the dataset's own column names, a slice column and labels as
    class names or indices; rows in ``drop`` get no label (each its own spelling of missing)."""
    names = features or split.features
    columns = {f: split.x_test[:, split.features.index(f)] for f in names}
    values: list = [split.classes[i] if labels == "names" else int(i) for i in split.y_test]
    spellings = [None, "", "NaN", "None"]
    for k, i in enumerate(drop):
        values[i] = spellings[k % len(spellings)] if labels == "names" else None
    columns["half"] = ["first" if i % 2 == 0 else "second" for i in range(len(values))]
    table = pa.table({**columns, "label": values})
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


def run_mode(workdir: Path, **params) -> dict:
    """The evaluate mode in-process; the results JSON (with the rendered comment under "body")."""
    settings = build_settings("evaluate", {"working_directory": str(workdir), "model_version": "v1",
                                           "github_token": "", "label_column": "label",
                                           "slice_columns": "half", **params}, {})
    report = mode.run(settings)
    result = json.loads((workdir / ".mlobs" / mode.RESULTS_JSON).read_text())
    return {**result, "body": report.body}


def stored_rows(workdir: Path, run_id: str) -> list[dict]:
    engine = open_engine("pyiceberg", CatalogConfig.parse(None, "mlobs.predictions",
                                                          workdir / ".mlobs" / "lake"))
    try:
        return engine.read_run(engine.find_run(run_id)).to_pylist()
    finally:
        engine.close()


# --- the independent computation -------------------------------------------------------------


def in_process(directory: Path, split: models.Split, *, names: bool, confidence: bool):
    """(true labels, predictions, confidences) from the saved model, in the run's spelling."""
    proba = models.load(split.name, directory).predict_proba(split.x_test)
    best = proba.argmax(axis=1)
    spell = (lambda i: split.classes[i]) if names else str
    y_true = [spell(int(i)) for i in split.y_test]
    y_pred = [spell(int(i)) for i in best]
    conf = proba.max(axis=1).tolist() if confidence else None
    return y_true, y_pred, conf


def expected_metrics(y_true: list[str], y_pred: list[str], conf: list[float] | None) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = sorted(set(y_true) | set(y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                            zero_division=0)[2]
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted",
                                               zero_division=0)[2]
    out = {
        "n": len(y_true), "errors": 0,
        "accuracy": float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)])),
        "macro_f1": float(macro), "weighted_f1": float(weighted), "labels": labels,
        "per_class": [{"label": lab, "precision": float(pi), "recall": float(ri), "f1": float(fi),
                       "support": int(si)} for lab, pi, ri, fi, si in zip(labels, p, r, f, s, strict=True)],
        "confusion": [row + [0] for row in confusion_matrix(y_true, y_pred, labels=labels).tolist()],
        "ece": None, "reliability": None,
    }
    if conf is not None:  # expected calibration error over 10 equal-width bins, by hand
        c = np.clip(np.asarray(conf, dtype=float), 0.0, 1.0)
        hit = np.asarray([a == b for a, b in zip(y_true, y_pred, strict=True)], dtype=float)
        bins = np.minimum(np.floor(c * BINS), BINS - 1).astype(int)
        bins_out, ece = [], 0.0
        for b in range(BINS):
            inside = bins == b
            k = int(inside.sum())
            bins_out.append((k, float(c[inside].mean()) if k else None,
                             float(hit[inside].mean()) if k else None))
            if k:
                ece += k / len(c) * abs(hit[inside].mean() - c[inside].mean())
        out["ece"], out["reliability"] = float(ece), bins_out
    return out


def assert_metrics(reported: dict, expected: dict) -> None:
    for key in ("n", "errors", "labels", "confusion"):
        assert reported[key] == expected[key], key
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        assert reported[key] == pytest.approx(expected[key], abs=1e-12), key
    assert reported["per_class"] == [pytest.approx(c, abs=1e-12) for c in expected["per_class"]]
    if expected["ece"] is None:
        assert reported["ece"] is None
    else:
        assert reported["ece"] == pytest.approx(expected["ece"], abs=1e-8)
        got = [(b["n"], b["mean_confidence"], b["accuracy"]) for b in reported["reliability"]]
        assert [g[0] for g in got] == [e[0] for e in expected["reliability"]]
        for g, e in zip(got, expected["reliability"], strict=True):
            assert g[1:] == (pytest.approx(e[1], abs=1e-8) if e[1] is not None else None,
                             pytest.approx(e[2], abs=1e-12) if e[2] is not None else None)


def check_run(result: dict, workdir: Path, y_true, y_pred, conf) -> None:
    """Every number: overall and per-slice metrics, and each stored prediction."""
    overall = result["metrics"]["overall"]
    assert_metrics(overall, expected_metrics(y_true, y_pred, conf))
    for half, pick in (("first", slice(0, None, 2)), ("second", slice(1, None, 2))):
        (sliced,) = [s for s in result["metrics"]["slices"] if s["value"] == half]
        m = sliced["metrics"]
        exp = expected_metrics(y_true[pick], y_pred[pick], conf[pick] if conf else None)
        assert (m["n"], m["accuracy"]) == (exp["n"], pytest.approx(exp["accuracy"], abs=1e-12))
    rows = sorted(stored_rows(workdir, result["run_id"]), key=lambda r: int(r["sample_id"]))
    assert [r["prediction"] for r in rows] == y_pred
    assert [r["label"] for r in rows] == y_true
    assert all(r["error"] is None for r in rows)
    if conf is not None:
        assert [r["confidence"] for r in rows] == pytest.approx(conf, abs=1e-9)


# --- the corpus --------------------------------------------------------------------------------

# (case, server, API, model, labels as, file type, extra inputs, answers a confidence)
CASES = [
    ("labels+ndarray", "new", "iris_labels", "iris", "names", ".csv", {}, False),
    ("indices+class-names", "new", "iris_indices", "iris", "names", ".parquet",
     {"class_names": "setosa, versicolor, virginica"}, False),
    ("indices+integer-labels", "new", "iris_indices", "iris", "idx", ".jsonl", {}, False),
    ("predict_proba", "new", "wine_proba", "wine", "idx", ".parquet", {}, True),
    ("predict_proba+class-names-file", "new", "wine_proba", "wine", "names", ".csv",
     {"class_names": "classes.txt"}, True),
    ("huggingface-top-k", "new", "digits_topk", "digits", "idx", ".parquet", {}, True),
    ("parallel-lists+distributions", "new", "cancer_parallel_probs", "breast_cancer", "names",
     ".parquet", {}, True),
    ("records+label-score", "new", "cancer_objects", "breast_cancer", "names", ".jsonl", {}, True),
    ("prediction-path", "new", "iris_nested", "iris", "names", ".csv",
     {"prediction_path": "result.outputs.*.cls"}, False),
    ("dataframe+parallel-lists", "new", "wine_parallel", "wine", "idx", ".csv", {}, True),
    ("dataframe+class-probability-distribution", "new", "cancer_distribution", "breast_cancer",
     "names", ".parquet", {"class_names": "malignant,benign"}, True),
    ("one-scalar-parameter-per-column", "new", "iris_row", "iris", "names", ".csv", {}, True),
    ("legacy+PandasDataFrame+parallel-lists", "legacy", "predict", "wine", "idx", ".parquet", {}, True),
    ("legacy+NumpyNdarray+predict_proba", "legacy", "proba", "wine", "names", ".csv",
     {"class_names": "class_0,class_1,class_2"}, True),
    ("legacy+free-form-JSON+input-format", "legacy", "instances", "wine", "idx", ".jsonl",
     {"input_format": "array"}, True),
]


@pytest.mark.parametrize(("case", "server", "api", "model", "labels", "suffix", "extra", "has_conf"),
                         CASES, ids=[c[0] for c in CASES])
def test_every_shape_gives_the_in_process_numbers(tmp_path, corpus, servers, case, server, api,
                                                  model, labels, suffix, extra, has_conf):
    directory, splits = corpus
    split = splits[model]
    if extra.get("class_names") == "classes.txt":
        (tmp_path / "classes.txt").write_text("\n".join(split.classes) + "\n")
    dataset = write_dataset(tmp_path / f"golden{suffix}", split, labels=labels)
    result = run_mode(tmp_path, bento_url=servers[server], bento_api=api, dataset=str(dataset),
                      run_id=f"run-{api}", **extra)
    assert result["verdict"] == "pass" and result["unlabeled"] == 0
    y_true, y_pred, conf = in_process(directory, split, names=labels == "names",
                                      confidence=has_conf)
    check_run(result, tmp_path, y_true, y_pred, conf)


def test_rows_without_a_label_are_not_scored(tmp_path, corpus, servers):
    """40 of 300 rows without a label: they are counted and shown, and the metrics are those of
    the 260 others (on main they were scored as wrong: accuracy fell by their share)."""
    directory, splits = corpus
    full = splits["digits"]
    split = models.Split("digits", full.features, full.classes, full.x_test[:300], full.y_test[:300])
    drop = list(range(3, 300, 7))[:40]
    dataset = write_dataset(tmp_path / "golden.csv", split, labels="names", drop=drop)
    result = run_mode(tmp_path, bento_url=servers["new"], bento_api="digits_topk",
                      dataset=str(dataset), run_id="unlabelled")
    assert result["unlabeled"] == 40
    keep = [i for i in range(300) if i not in set(drop)]
    y_true, y_pred, conf = in_process(directory, split, names=True, confidence=True)
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    assert_metrics(result["metrics"]["overall"], expected_metrics(pick(y_true), pick(y_pred), pick(conf)))
    rows = stored_rows(tmp_path, "unlabelled")
    assert sorted(int(r["sample_id"]) for r in rows) == keep  # ids are the file's row numbers
    assert "40 rows without a label were not scored." in result["body"]


def test_class_indices_against_label_names_stop_at_the_probe_with_the_hint(tmp_path, corpus, servers):
    # On main: exit 0, "pass — accuracy 0.000", a confusion matrix mixing 0, 1, 2 and names.
    _, splits = corpus
    dataset = write_dataset(tmp_path / "golden.csv", splits["iris"], labels="names")
    with pytest.raises(ConfigError) as err:
        run_mode(tmp_path, bento_url=servers["new"], bento_api="iris_indices", dataset=str(dataset))
    assert err.value.one_line() == (
        "no prediction of the probe (8 samples sent before the dataset) (0, 1, 2) equals a value "
        "of label column 'label' (setosa, versicolor, virginica): the Bento answers class indices "
        "and the labels are names — set class-names (comma-separated in index order, or a file "
        "with one per line)")
    assert not (tmp_path / ".mlobs" / "lake").exists() or not list((tmp_path / ".mlobs").rglob("*.parquet"))


# --- the input contract against the real OpenAPI documents -----------------------------------------


def test_the_packing_follows_what_each_api_declares(corpus, servers):
    _, splits = corpus
    docs = {name: fetch_openapi(url) for name, url in servers.items()}
    expected = {
        ("new", "iris_labels"): ("array", "features"),
        ("new", "wine_proba"): ("array", "x"),
        ("new", "cancer_objects"): ("records", "rows"),
        ("new", "wine_parallel"): ("dataframe", "frame"),
        ("new", "iris_row"): ("row", None),
        ("legacy", "predict"): ("dataframe", None),
        ("legacy", "proba"): ("array", None),
    }
    model_of = {"iris_labels": "iris", "wine_proba": "wine", "cancer_objects": "breast_cancer",
                "wine_parallel": "wine", "iris_row": "iris", "predict": "wine", "proba": "wine"}
    for (server, api), (fmt, param) in expected.items():
        split = splits[model_of[api]]
        schema = pa.schema([(f, pa.float64()) for f in split.features])
        packing = choose_packing(find_api(docs[server], api), schema, split.features)
        assert (packing.format, packing.parameter) == (fmt, param), api
    row = choose_packing(find_api(docs["new"], "iris_row"), pa.schema(
        [(f, pa.float64()) for f in splits["iris"].features]), splits["iris"].features)
    assert row.names == {"sepal length (cm)": "sepal_length_cm", "sepal width (cm)": "sepal_width_cm",
                         "petal length (cm)": "petal_length_cm", "petal width (cm)": "petal_width_cm"}


@pytest.mark.parametrize(("api", "columns", "types", "message"), [
    ("iris_row", ["sepal length (cm)", "sepal width (cm)", "petal length (cm)"], None,
     "API 'iris_row' requires petal_width_cm: number, which no input column provides"),
    ("iris_row", ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
     {"petal width (cm)": pa.string()},
     "API 'iris_row' declares petal_width_cm: number, but input column 'petal width (cm)' holds text"),
    ("iris_labels", ["sepal length (cm)", "species note"], {"species note": pa.string()},
     "API 'iris_labels' takes features: tensor of numbers, but input column(s) 'species note' "
     "(string) are not numeric"),
    ("iris_row", ["sepal length (cm)", "colour"], None,
     "cannot pack the input columns into API 'iris_row' (sepal_length_cm: number; sepal_width_cm: "
     "number; petal_length_cm: number; petal_width_cm: number): input column(s) 'colour' match no "
     "parameter; rename the columns, choose input-columns, or set input-format "
     "(columns/row/records/dataframe/array[:PARAMETER])"),
])
def test_a_dataset_that_does_not_fit_the_schema_is_refused_before_sending(servers, api, columns,
                                                                          types, message):
    doc = fetch_openapi(servers["new"])
    schema = pa.schema([(c, (types or {}).get(c, pa.float64())) for c in columns])
    with pytest.raises(ConfigError) as err:
        choose_packing(find_api(doc, api), schema, columns)
    assert err.value.one_line() == message


def test_an_unknown_api_names_the_ones_there_are(servers):
    with pytest.raises(ConfigError) as err:
        find_api(fetch_openapi(servers["new"]), "predict")
    assert err.value.one_line() == (
        "the Bento has no API 'predict' (its APIs: cancer_distribution, cancer_objects, "
        "cancer_parallel_probs, digits_topk, iris_indices, iris_labels, iris_nested, iris_row, "
        "wine_parallel, wine_proba); set bento-api")


def test_the_probe_quotes_the_api_when_it_refuses_the_input(tmp_path, corpus, servers):
    # Forcing one list per column onto a records API: BentoML's own validation error, exit 2.
    _, splits = corpus
    dataset = write_dataset(tmp_path / "golden.parquet", splits["breast_cancer"], labels="names")
    with pytest.raises(ConfigError) as err:
        run_mode(tmp_path, bento_url=servers["new"], bento_api="cancer_objects", dataset=str(dataset),
                 input_format="columns")
    assert err.value.one_line().startswith(
        "the Bento refused the probe (8 samples sent before the dataset): HTTP 400: 1 validation "
        "error for Input (rows: Field required) — sent as one list parameter per input column "
        "(from input-format)")


# --- a served Bento that fails: its log is kept, its last lines are in the error --------------


def test_a_failing_served_bento_leaves_its_log_under_output_dir_and_quotes_it(tmp_path, corpus,
                                                                               monkeypatch):
    directory, splits = corpus
    # Three of iris's four features: the model raises inside the service (HTTP 500 with
    # BentoML's generic text); the reason is only in the server's log.
    split = splits["iris"]
    dataset = write_dataset(tmp_path / "golden.csv", split, labels="names",
                            features=split.features[:3])
    out = tmp_path / "out"
    for name, value in {models.ENV: str(directory), "BENTOML_DO_NOT_TRACK": "true",
                        "BENTOML_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)  # the served Bento inherits the environment the CLI read
    settings = build_settings("evaluate", {
        "working_directory": str(CORPUS), "model_version": "v1", "output_dir": str(out),
        "github_token": "", "bento": "new_style:Corpus", "bento_api": "iris_labels",
        "dataset": str(dataset), "label_column": "label", "slice_columns": "half"}, os.environ)
    with pytest.raises(MlobsError) as err:
        mode.run(settings)
    line = err.value.one_line()
    assert line.startswith("the Bento refused the probe (8 samples sent before the dataset): "
                           "HTTP 500: An unexpected error has occurred, please check the server log.")
    assert f"server log {out / mode.SERVER_LOG}; last lines: " in line
    assert "ValueError: X has 3 features, but StandardScaler is expecting 4 features as input." in line
    assert "X has 3 features" in (out / mode.SERVER_LOG).read_text()
