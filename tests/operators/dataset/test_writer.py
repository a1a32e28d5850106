import numpy as np
import pyarrow.parquet as pq

from operators.base import object_column
from operators.dataset.schema import DATASET_SCHEMA, REJECTED_SCHEMA
from operators.dataset.writer import WriterConfig, WriteShards


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


def many(n: int, kept_every: int = 1) -> dict:
    """``n`` rows with a long summary each; every ``kept_every``-th row kept, the rest rejected."""
    rejected = [None if i % kept_every == 0 else "probe" for i in range(n)]
    return {
        "video_id": object_column([f"v{i:05d}" for i in range(n)]),
        "source": object_column(["folder"] * n),
        "uri": object_column([f"/v{i}.mp4" for i in range(n)]),
        "summary": object_column([f"{i} " + "words " * 200 for i in range(n)]),
        "frames": object_column([[b"x" * 1000]] * n),
        "reject_stage": object_column(rejected),
        "reject_reason": object_column([None if r is None else "corrupt" for r in rejected]),
        "reject_detail": object_column([None if r is None else "bad" for r in rejected]),
    }


def files_of(root, folder):
    return sorted((root / folder).glob("*.parquet"))


def test_files_are_cut_at_the_byte_limit(tmp_path):
    config = WriterConfig(rows_per_file=1000, bytes_per_file=2**16)  # ~1.2 KB a row: ~50 a file
    out = WriteShards(config, output=str(tmp_path))(many(300))
    files = files_of(tmp_path, "dataset")
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert sum(rows) == 300 and len(files) == len(set(out["written_to"])) >= 5
    assert max(pq.read_table(f).nbytes for f in files) <= 2**16
    ids = [i for f in files for i in pq.read_table(f, columns=["video_id"]).column(0).to_pylist()]
    assert sorted(ids) == [f"v{i:05d}" for i in range(300)]  # each row once


def test_rows_per_file_and_batch_size(tmp_path):
    op = WriteShards(WriterConfig(rows_per_file=40), output=str(tmp_path))
    assert op.resources.batch_size == 40
    op(many(100, kept_every=2))
    assert sorted(pq.ParquetFile(f).metadata.num_rows for f in files_of(tmp_path, "dataset")) == [10, 40]
    assert sorted(pq.ParquetFile(f).metadata.num_rows for f in files_of(tmp_path, "rejected")) == [10, 40]


def test_a_rewritten_batch_replaces_its_files(tmp_path):
    op = WriteShards(WriterConfig(bytes_per_file=2**16), output=str(tmp_path))
    op(many(200, kept_every=3))
    before = [p.name for p in files_of(tmp_path, "dataset") + files_of(tmp_path, "rejected")]
    op(many(200, kept_every=3))  # a retried task
    after = [p.name for p in files_of(tmp_path, "dataset") + files_of(tmp_path, "rejected")]
    assert before == after


def test_the_writer_keeps_no_frames():
    op = WriteShards(output="memory://unused")
    assert op.keeps("summary") and op.keeps("reject_reason") and op.keeps("_t_probe")
    assert op.keeps("text_embedding") and not op.keeps("frames") and not op.keeps("frame_embeddings")
