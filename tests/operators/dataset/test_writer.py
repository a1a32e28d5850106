import numpy as np
import pyarrow.parquet as pq

from operators.base import object_column
from operators.dataset.schema import DATASET_SCHEMA, REJECTED_SCHEMA
from operators.dataset.writer import WriteShards


def batch():
    return {
        "video_id": object_column(["a", "b", "c"]),
        "source": object_column(["folder"] * 3),
        "uri": object_column(["/a.mp4", "/b.mp4", "/c.mp4"]),
        "clip_start": object_column([None, 1.5, None]),
        "clip_end": object_column([None, 3.0, None]),
        "duration": np.array([4.0, 1.5, np.nan]),
        "fps_num": object_column([30000, 25, None]),
        "frames": object_column([[b"jpeg"], [b"jpeg"], None]),
        "frame_timestamps": object_column([np.array([0.0, 2.0]), [0.0], None]),
        "reject_stage": object_column([None, None, "probe"]),
        "reject_reason": object_column([None, None, "corrupt"]),
        "reject_detail": object_column([None, None, "moov atom not found"]),
        "_t_probe": np.array([0.1, 0.2, 0.3]),
    }


def test_kept_and_rejected_rows_land_in_their_folders(tmp_path):
    out = WriteShards(output=str(tmp_path))(batch())
    dataset = pq.read_table(tmp_path / out["written_to"][0])
    rejected = pq.read_table(tmp_path / out["written_to"][2])
    assert out["written_to"][0] == out["written_to"][1] != out["written_to"][2]
    assert dataset.column("video_id").to_pylist() == ["a", "b"]
    assert dataset.column("frame_timestamps").to_pylist() == [[0.0, 2.0], [0.0]]
    assert dataset.schema.field("fps_num").type == DATASET_SCHEMA.field("fps_num").type
    assert "frames" not in dataset.column_names
    assert rejected.to_pylist() == [{
        "video_id": "c", "source": "folder", "uri": "/c.mp4", "clip_start": None, "clip_end": None,
        "stage": "probe", "reason": "corrupt", "detail": "moov atom not found"}]
    assert rejected.schema.names == [n for n in REJECTED_SCHEMA.names if n in rejected.schema.names]


def test_summary_rows_carry_fate_and_timings(tmp_path):
    out = WriteShards(output=str(tmp_path))(batch())
    assert set(out) == {"video_id", "reject_stage", "reject_reason", "written_to", "_t_probe"}
    assert list(out["reject_reason"]) == [None, None, "corrupt"]


def test_no_temporary_files_are_left(tmp_path):
    WriteShards(output=str(tmp_path))(batch())
    names = [p.name for p in tmp_path.rglob("*")]
    assert not [n for n in names if n.startswith(".tmp-")]
    assert sorted(p.parent.name for p in tmp_path.rglob("*.parquet")) == ["dataset", "rejected"]
