from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.sources import ManifestSource, list_source_rows

from .conftest import write_memory

CSV = """uri,video_id,start,end,caption
clips/a.mp4,,,,a dog runs
clips/b.mp4,bee,0:00:01.500,0:00:04.000,
s3://bucket/c.mp4,,2,7.25,"a caption, with a comma"
/abs/d.mkv,,,,
"""


def rows_of(**config) -> list[dict]:
    return list(list_source_rows(ManifestSource(kind="manifest", **config)))


def test_csv_relative_uris_against_root_and_optional_columns(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(CSV)
    rows = rows_of(path=str(manifest), root=str(tmp_path / "data"),
                   allowed_roots=[str(tmp_path), "s3://bucket", "/abs"])
    assert [r["uri"] for r in rows] == [
        str(tmp_path / "data/clips/a.mp4"),
        str(tmp_path / "data/clips/b.mp4"),
        "s3://bucket/c.mp4",
        "/abs/d.mkv",
    ]
    assert [r["video_id"] for r in rows] == ["clips/a", "bee", "c_2-7.25", "d"]
    assert [(r["clip_start"], r["clip_end"]) for r in rows] == [
        (None, None),
        (1.5, 4.0),
        (2.0, 7.25),
        (None, None),
    ]
    assert [r["source_caption"] for r in rows] == ["a dog runs", None, "a caption, with a comma", None]
    assert {r["source"] for r in rows} == {"manifest"} and all(r["reject_reason"] is None for r in rows)


def test_root_defaults_to_the_manifest_folder(tmp_path):
    (tmp_path / "m.csv").write_text("uri\nv/x.mp4\n")
    (row,) = rows_of(path=str(tmp_path / "m.csv"))
    assert row["uri"] == str(tmp_path / "v/x.mp4") and row["video_id"] == "v/x"


def test_jsonl_with_bad_lines_rejected_not_raised(tmp_path):
    lines = [
        {"uri": "a.mp4", "caption": "first", "start": 0, "end": 3.5},
        "not json",
        {"uri": "b.mp4", "start": 5, "end": 2},
        {"uri": "", "caption": "no uri"},
        {"uri": "a.mp4", "video_id": "a_0-3.5"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    rows = rows_of(path=str(path))
    assert (
        rows[0]["video_id"] == "a_0-3.5"
        and rows[0]["clip_end"] == 3.5
        and rows[0]["source_caption"] == "first"
    )
    assert [r["reject_reason"] for r in rows] == [
        None,
        "bad_metadata",
        "bad_metadata",
        "bad_metadata",
        "duplicate_id",
    ]
    assert "line 2" in rows[1]["reject_detail"] and "not after" in rows[2]["reject_detail"]
    assert all(r["reject_stage"] == "source" for r in rows[1:])


def test_parquet_on_a_bucket(memory_root):
    table = pa.table(
        {
            "uri": ["v/a.mp4", "gs://other/b.mp4"],
            "video_id": [None, "my-b"],
            "start": [1.0, None],
            "end": [2.0, None],
            "caption": ["c1", None],
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_memory(f"{memory_root}/m.parquet", sink.getvalue().to_pybytes())
    rows = rows_of(path=f"{memory_root}/m.parquet", root=f"{memory_root}/data",
                   allowed_roots=[memory_root, "gs://other"])
    assert [r["uri"] for r in rows] == [f"{memory_root}/data/v/a.mp4", "gs://other/b.mp4"]
    assert [r["video_id"] for r in rows] == ["v/a_1-2", "my-b"]
    assert rows[0]["source_caption"] == "c1" and rows[1]["clip_start"] is None


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_uri_column_names_the_column(tmp_path, fmt):
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        path.write_text("path,caption\na.mp4,x\n")
    elif fmt == "jsonl":
        path.write_text(json.dumps({"path": "a.mp4"}) + "\n")
    else:
        pq.write_table(pa.table({"path": ["a.mp4"]}), path)
    with pytest.raises(ValueError, match="'uri' column"):
        rows_of(path=str(path))


def test_unknown_extension_needs_a_format(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("uri\na.mp4\n")
    with pytest.raises(ValueError, match="format"):
        rows_of(path=str(path))
    assert rows_of(path=str(path), format="csv")[0]["video_id"] == "a"
