"""Golden datasets: Parquet, CSV and JSON lines read the same, streamed in fixed-size batches."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlobs.errors import ConfigError
from mlobs.evaluate import dataset as ds_mod
from mlobs.evaluate.dataset import detect_format, open_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))  # the example Bento's
from example import GOLDEN_COLUMNS, write_golden_csv  # noqa: E402  (evaluation/example.py)

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "evaluation" / "golden.csv"

ROWS = [
    {"id": f"s{i:03d}", "text": f"sentence number {i}", "label": ["neg", "neu", "pos"][i % 3],
     "language": "en" if i % 2 else "de", "length_bucket": "short"}
    for i in range(23)
]


def write(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` in the format the extension names."""
    fmt = detect_format(path)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # batches cross groups
    elif fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id", "label"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_all(path: Path, **kw) -> tuple[list[int], list[dict]]:
    kw = {"input_columns": ["text"], "label_column": "label",
          "slice_columns": ["language", "length_bucket"], "batch_size": 5, **kw}
    batches = list(open_dataset(path, **kw).iter_batches())
    return [b.num_rows for b in batches], pa.Table.from_batches(batches).to_pylist()


@pytest.mark.parametrize("name", ["d.parquet", "d.csv", "d.jsonl"])
def test_formats_read_the_same(tmp_path, name):
    sizes, rows = read_all(write(tmp_path / name, ROWS), id_column="id")
    assert sizes == [5, 5, 5, 5, 3]
    assert rows == [{"sample_id": r["id"], "text": r["text"], "label": r["label"],
                     "language": r["language"], "length_bucket": r["length_bucket"]} for r in ROWS]


def test_all_formats_agree_on_sample_ids_and_hash_the_bytes(tmp_path):
    results = {}
    for name in ("d.parquet", "d.csv", "d.jsonl.gz"):
        path = tmp_path / name
        if name.endswith(".gz"):
            import gzip

            write(tmp_path / "plain.jsonl", ROWS)
            path.write_bytes(gzip.compress((tmp_path / "plain.jsonl").read_bytes()))
        else:
            write(path, ROWS)
        opened = open_dataset(path, input_columns=None, label_column="label",
                              slice_columns=["language"], batch_size=8)
        assert opened.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
        assert opened.rows == len(ROWS)
        results[name] = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
    first = results["d.parquet"]
    assert [r["sample_id"] for r in first] == [str(i) for i in range(len(ROWS))]  # row index
    assert all(rows == first for rows in results.values())


def test_input_columns_default_to_everything_but_id_label_and_slices(tmp_path):
    opened = open_dataset(write(tmp_path / "d.csv", ROWS), input_columns=None, id_column="id",
                          label_column="label", slice_columns=["language"], batch_size=4)
    assert opened.input_columns == ["text", "length_bucket"]
    assert opened.columns == ["sample_id", "text", "length_bucket", "label", "language"]


def test_missing_label_column_names_it_and_the_columns_there_are(tmp_path):
    path = write(tmp_path / "d.csv", [{k: v for k, v in r.items() if k != "label"} for r in ROWS])
    with pytest.raises(ConfigError) as err:
        open_dataset(path, input_columns=None, label_column="label", slice_columns=[], batch_size=4)
    msg = err.value.one_line()
    assert "'label'" in msg and "id, text, language, length_bucket" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(("kw", "needle"), [
    ({"slice_columns": ["country"]}, "slice column 'country'"),
    ({"input_columns": ["body"]}, "input column 'body'"),
    ({"id_column": "uuid"}, "id column 'uuid'"),
])
def test_missing_other_columns(tmp_path, kw, needle):
    path = write(tmp_path / "d.parquet", ROWS)
    args = {"input_columns": None, "label_column": "label", "slice_columns": [], "batch_size": 4, **kw}
    with pytest.raises(ConfigError, match=needle):
        open_dataset(path, **args)


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl", "e.parquet", "header-only.csv"])
def test_empty_dataset_is_a_config_error(tmp_path, name):
    path = tmp_path / name
    if name == "header-only.csv":
        path.write_text("text,label\n")
    elif name.endswith(".parquet"):
        pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)
    else:
        path.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        open_dataset(path, input_columns=None, label_column="label", slice_columns=[], batch_size=4)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="unsupported file type '.xlsx'"):
        open_dataset(tmp_path / "d.xlsx", input_columns=None, label_column="label",
                     slice_columns=[], batch_size=4)
    with pytest.raises(ConfigError, match="not found"):
        open_dataset(tmp_path / "nope.csv", input_columns=None, label_column="label",
                     slice_columns=[], batch_size=4)


def test_labels_ids_and_slices_become_text(tmp_path):
    rows = [{"id": 7, "x": 0.5, "label": 1, "flag": True}, {"id": 8, "x": 1.5, "label": 0, "flag": False}]
    expected_ids = {"d.jsonl": ["7", "8"], "d.parquet": ["7", "8"]}
    for name in ("d.jsonl", "d.parquet"):
        _, out = read_all(write(tmp_path / name, rows), input_columns=["x"], id_column="id",
                          slice_columns=["flag"])
        assert [r["sample_id"] for r in out] == expected_ids[name]
        assert [r["label"] for r in out] == ["1", "0"]
        assert [r["flag"] for r in out] == ["true", "false"]
        assert [r["x"] for r in out] == [0.5, 1.5]  # inputs keep their type for the model
    # CSV cells are text: an id written as 007 stays 007.
    (tmp_path / "ids.csv").write_text("id,x,label\n007,1,1\n008,2,0\n")
    _, out = read_all(tmp_path / "ids.csv", input_columns=["x"], id_column="id", slice_columns=[])
    assert [(r["sample_id"], r["label"], r["x"]) for r in out] == [("007", "1", 1), ("008", "0", 2)]
    # Float labels written by pandas (1.0) match integer class names; a missing one is no label.
    pq.write_table(pa.table({"x": [1, 2], "label": [1.0, None]}), tmp_path / "f.parquet")
    _, out = read_all(tmp_path / "f.parquet", input_columns=["x"], slice_columns=[])
    assert [(r["sample_id"], r["label"]) for r in out] == [("0", "1")]


def test_streams_many_blocks_and_survives_a_column_empty_at_first(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_BLOCK_SIZE", 256)  # force many CSV/JSON blocks
    rows = [{"text": f"t{i}", "label": "a", "note": None if i < 40 else f"n{i}"} for i in range(100)]
    for name in ("m.jsonl", "m.csv"):
        sizes, out = read_all(write(tmp_path / name, rows), slice_columns=["note"], batch_size=30)
        assert sizes == [30, 30, 30, 10]
        assert [r["text"] for r in out] == [r["text"] for r in rows]
        assert out[99]["note"] == "n99"


def test_a_type_change_mid_file_is_one_clear_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_BLOCK_SIZE", 128)
    lines = [json.dumps({"text": "t", "label": 1}) for _ in range(50)] + [json.dumps({"text": "t", "label": "x"})]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    opened = open_dataset(path, input_columns=None, label_column="label", slice_columns=[], batch_size=8)
    with pytest.raises(ConfigError, match="bad.jsonl: could not read it"):
        list(opened.iter_batches())


def test_label_as_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="would see the answer"):
        open_dataset(write(tmp_path / "d.csv", ROWS), input_columns=["text", "label"],
                     label_column="label", slice_columns=[], batch_size=4)


def test_golden_set_is_committed_as_generated(tmp_path):
    assert write_golden_csv(tmp_path / "golden.csv") == 480
    assert (tmp_path / "golden.csv").read_bytes() == GOLDEN.read_bytes()
    opened = open_dataset(GOLDEN, input_columns=["text"], label_column="label", id_column="id",
                          slice_columns=["language", "length_bucket"], batch_size=64)
    assert opened.rows == 480
    assert [f.name for f in opened.schema] == list(GOLDEN_COLUMNS)
    rows = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
    assert {r["label"] for r in rows} == {"negative", "neutral", "positive"}
    assert {r["language"] for r in rows} == {"en", "de"}
    assert {r["length_bucket"] for r in rows} == {"short", "medium", "long"}


# --- labels: one spelling per class, no label is no class, ids unique (issue 11) ---------------


def test_1_and_1_0_and_text_1_are_one_class_in_every_format(tmp_path):
    # pandas writes 1.0 for an integer column that had a NaN; a CSV has "1"; JSON lines 1.
    (tmp_path / "c.csv").write_text("x,label\n1,1\n2,1.0\n3, 1 \n4,2\n")
    pq.write_table(pa.table({"x": [1, 2, 3, 4], "label": [1.0, 1.0, 1.0, 2.0]}), tmp_path / "p.parquet")
    (tmp_path / "j.jsonl").write_text("".join(json.dumps({"x": i, "label": v}) + "\n"
                                              for i, v in enumerate([1, 1.0, 1, 2])))
    for name in ("c.csv", "p.parquet", "j.jsonl"):
        opened = open_dataset(tmp_path / name, input_columns=["x"], label_column="label",
                              slice_columns=[], batch_size=10)
        check = opened.check()
        assert check.labels == {"1", "2"}, name
        rows = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
        assert [r["label"] for r in rows] == ["1", "1", "1", "2"], name


def test_a_label_column_mixing_numbers_and_text_in_json_is_refused_at_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_BLOCK_SIZE", 128)  # the "1" comes after the first block
    path = tmp_path / "mixed.jsonl"
    values = [1] * 40 + ["1", 1.0]
    path.write_text("".join(json.dumps({"x": i, "label": v}) + "\n" for i, v in enumerate(values)))
    opened = open_dataset(path, input_columns=["x"], label_column="label", slice_columns=[], batch_size=8)
    with pytest.raises(ConfigError) as err:
        opened.check()  # before anything is sent, never mid-run
    assert err.value.one_line().startswith(
        "dataset mixed.jsonl: could not read it: JSON parse error: Column(/label) changed from "
        "number to string")
    assert err.value.one_line().endswith("write each column's values one way (all numbers or all text)")


@pytest.mark.parametrize("name", ["u.csv", "u.jsonl", "u.parquet"])
def test_rows_without_a_label_are_counted_and_left_out(tmp_path, name):
    # 300 rows, 40 without a usable label, spelled the ways files spell "missing".
    missing = [None, float("nan"), "", "  ", "NaN", "nan", "None", "null", "<NA>"]
    rows = []
    for i in range(300):
        label = missing[i % len(missing)] if i % 7 == 3 and len([r for r in rows if r["m"]]) < 40 \
            else ["cat", "dog", "none"][i % 3]
        rows.append({"id": f"r{i}", "text": f"t{i}", "label": label, "m": label in missing or
                     (isinstance(label, float))})
    assert sum(r["m"] for r in rows) == 40
    written = [{k: v for k, v in r.items() if k != "m"} for r in rows]
    if name.endswith(".parquet"):  # one type per column: text labels, null for the missing
        written = [{**r, "label": None if isinstance(r["label"], float) else r["label"]} for r in written]
    if name.endswith(".jsonl"):  # JSON has no NaN: json.dumps writes it, pandas writes null
        written = [{**r, "label": None if isinstance(r["label"], float) else r["label"]} for r in written]
    path = write(tmp_path / name, written)
    opened = open_dataset(path, input_columns=["text"], label_column="label", id_column="id",
                          slice_columns=[], batch_size=64)
    check = opened.check()
    assert (check.rows, check.unlabeled, check.labeled) == (300, 40, 260)
    assert check.labels == {"cat", "dog", "none"}  # "none" is a class; None is not
    out = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
    expected = [r for r in rows if not r["m"]]
    assert [r["sample_id"] for r in out] == [r["id"] for r in expected]
    assert [r["label"] for r in out] == [r["label"] for r in expected]


def test_row_index_ids_skip_the_unlabelled_rows_but_keep_their_numbers(tmp_path):
    (tmp_path / "d.csv").write_text("x,label\n1,a\n2,\n3,b\n")
    opened = open_dataset(tmp_path / "d.csv", input_columns=["x"], label_column="label",
                          slice_columns=[], batch_size=8)
    assert opened.check().unlabeled == 1
    out = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
    assert [(r["sample_id"], r["label"]) for r in out] == [("0", "a"), ("2", "b")]


def test_a_set_without_any_label_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("x,label\n1,\n2,NaN\n")
    opened = open_dataset(tmp_path / "d.csv", input_columns=["x"], label_column="label",
                          slice_columns=[], batch_size=8)
    with pytest.raises(ConfigError, match="no row has a label"):
        opened.check()


@pytest.mark.parametrize("name", ["d.csv", "d.parquet", "d.jsonl"])
def test_duplicate_ids_are_refused_naming_them(tmp_path, name):
    rows = [{"id": i % 10 if i < 12 else i, "text": "t", "label": "a"} for i in range(30)]
    opened = open_dataset(write(tmp_path / name, rows), input_columns=["text"], label_column="label",
                          id_column="id", slice_columns=[], batch_size=4)
    with pytest.raises(ConfigError) as err:
        opened.check()
    assert err.value.one_line() == (
        f"dataset {name}: id column 'id' repeats 2 id(s): '0' ×2, '1' ×2; ids must be unique "
        "(each row is one sample in the table)")


def test_integer_labels_map_to_class_names_when_all_are_indices(tmp_path):
    from mlobs.evaluate.labels import ClassNames

    (tmp_path / "d.csv").write_text("x,label\n1,0\n2,2.0\n3,1\n")
    names = ClassNames(("setosa", "versicolor", "virginica"))
    opened = open_dataset(tmp_path / "d.csv", input_columns=["x"], label_column="label",
                          slice_columns=[], batch_size=8)
    check = opened.check(names)
    assert check.mapped and check.labels == {"setosa", "versicolor", "virginica"}
    out = pa.Table.from_batches(list(opened.iter_batches())).to_pylist()
    assert [r["label"] for r in out] == ["setosa", "virginica", "versicolor"]
    # Labels that are names already stay as they are.
    (tmp_path / "n.csv").write_text("x,label\n1,setosa\n2,virginica\n")
    named = open_dataset(tmp_path / "n.csv", input_columns=["x"], label_column="label",
                         slice_columns=[], batch_size=8)
    assert not named.check(names).mapped
