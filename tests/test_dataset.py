"""Golden datasets: Parquet, CSV and JSON lines read the same, streamed in fixed-size batches."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlobs.errors import ConfigError
from mlobs.evaluate import dataset as ds_mod
from mlobs.evaluate.dataset import detect_format, open_dataset
from mlobs.evaluate.example import GOLDEN_COLUMNS, write_golden_csv

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
    # Float labels written by pandas (1.0) match integer class names.
    pq.write_table(pa.table({"x": [1, 2], "label": [1.0, None]}), tmp_path / "f.parquet")
    _, out = read_all(tmp_path / "f.parquet", input_columns=["x"], slice_columns=[])
    assert [r["label"] for r in out] == ["1", None]


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
