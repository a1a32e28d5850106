from __future__ import annotations

import io
import json
import tarfile

import fsspec
import numpy as np
import pytest

from operators.base import apply_to_live_rows
from operators.io import open_binary
from operators.sources import ROW_COLUMNS, ExpandShards, WebDatasetSource, list_source_rows, make_row
from operators.sources.common import rows_to_batch
from operators.sources.files import expand_braces
from testing.media import make_video


def sample_meta(key: str, caption: str | None, clips=None) -> dict:
    # What video2dataset writes in {key}.json for a successful download.
    meta = {
        "url": f"https://www.youtube.com/watch?v={key}",
        "key": key,
        "status": "success",
        "error_message": None,
        "yt_meta_dict": {"info": {"title": "t"}},
        "video_metadata": {"streams": []},
    }
    if caption is not None:
        meta["caption"] = caption
    if clips is not None:
        meta["clips"] = clips
    return meta


def shard_bytes(samples: list[dict]) -> bytes:
    """A tar laid out as webdataset's TarWriter writes video2dataset samples: {key}.json/.mp4/.txt."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for sample in samples:
            for ext in sorted(sample["files"]):
                data = sample["files"][ext]
                info = tarfile.TarInfo(f"{sample['key']}.{ext}")
                info.size, info.mode, info.uname = len(data), 0o444, "bigdata"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def v2d_sample(key: str, video: bytes | None, caption: str | None = "a cat", clips=None, txt=True) -> dict:
    files = {"json": json.dumps(sample_meta(key, caption, clips)).encode()}
    if video is not None:
        files["mp4"] = video
    if txt and caption is not None:
        files["txt"] = caption.encode()
    return {"key": key, "files": files}


def expand(rows: list[dict], **options) -> dict[str, np.ndarray]:
    config = WebDatasetSource(kind="webdataset", shards=[], **options)
    op = ExpandShards(config)
    op.setup()
    return op(rows_to_batch(rows))


def as_rows(batch) -> list[dict]:
    return [{c: batch[c][i] for c in ROW_COLUMNS} for i in range(len(batch["video_id"]))]


def test_brace_patterns():
    assert expand_braces("d/{00000..00002}.tar") == ["d/00000.tar", "d/00001.tar", "d/00002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]


def test_listing_one_row_per_shard(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:05d}.tar").write_bytes(shard_bytes([]))
    config = WebDatasetSource(kind="webdataset", shards=str(tmp_path / "{00000..00002}.tar"))
    rows = list(list_source_rows(config))
    assert [r["video_id"] for r in rows] == ["00000", "00001", "00002"]
    assert rows[0]["uri"] == str(tmp_path / "00000.tar") and rows[0]["source"] == "webdataset"
    globbed = list(list_source_rows(WebDatasetSource(kind="webdataset", shards=[str(tmp_path / "*.tar")])))
    assert [r["uri"] for r in globbed] == [r["uri"] for r in rows]


def test_expand_samples_and_open_their_bytes(tmp_path):
    videos = [b"\x00\x00\x00\x18ftypmp42" + bytes([i]) * 100 for i in range(3)]
    shard = tmp_path / "00000.tar"
    shard.write_bytes(
        shard_bytes(
            [
                v2d_sample("000000000", videos[0], "a dog runs on the beach"),
                v2d_sample("000000001", videos[1], caption=None),
                v2d_sample("000000002", videos[2], "only in txt"),
            ]
        )
    )
    (shard_row,) = list(list_source_rows(WebDatasetSource(kind="webdataset", shards=str(shard))))
    out = expand([shard_row])
    assert set(out) == set(ROW_COLUMNS)
    rows = as_rows(out)
    assert [r["video_id"] for r in rows] == ["000000000", "000000001", "000000002"]
    assert [r["source_caption"] for r in rows] == ["a dog runs on the beach", None, "only in txt"]
    assert rows[0]["uri"] == f"tar://000000000.mp4::{shard}"
    assert all(
        r["clip_start"] is None and r["reject_reason"] is None and r["source"] == "webdataset" for r in rows
    )
    for row, video in zip(rows, videos, strict=True):
        with open_binary(row["uri"]) as f:
            assert f.read() == video


def test_memory_shard_of_cut_clips_opens_as_a_real_video(tmp_path, memory_root):
    import av

    video = make_video(tmp_path / "clip.mp4", num_frames=6, fps=6, width=64, height=48).read_bytes()
    clips = [["0:00:05.005", "0:00:08.809"]]
    data = shard_bytes([v2d_sample("000010000_00000", video, "a clip", clips=clips)])
    with fsspec.open(f"{memory_root}/shards/00001.tar", "wb") as f:
        f.write(data)
    (shard_row,) = list(
        list_source_rows(WebDatasetSource(kind="webdataset", shards=[f"{memory_root}/shards/*.tar"]))
    )
    (row,) = as_rows(expand([shard_row]))
    # video2dataset already cut the clip: the whole file is the clip.
    assert row["video_id"] == "000010000_00000" and row["clip_start"] is None
    assert row["uri"].startswith("tar://000010000_00000.mp4::memory://")
    with open_binary(row["uri"]) as f:
        assert f.read() == video
        f.seek(0)
        with av.open(f) as container:
            assert sum(1 for _ in container.decode(video=0)) == 6


def test_uncut_clip_spans_become_bounds(tmp_path):
    (tmp_path / "s.tar").write_bytes(
        shard_bytes(
            [
                v2d_sample("a", b"v", clips=[["0:00:00.000", "0:00:05.005"], [5.005, 9.5]]),
                v2d_sample("b", b"v", clips=[1.0, 2.0]),
                v2d_sample("c", b"v", clips=[["later", "0:00:01"]]),
            ]
        )
    )
    rows = as_rows(expand([make_row("s", "webdataset", str(tmp_path / "s.tar"))], clips_are_cut=False))
    assert [(r["video_id"], r["clip_start"], r["clip_end"], r["reject_reason"]) for r in rows] == [
        ("a_0", 0.0, 5.005, None),
        ("a_1", 5.005, 9.5, None),
        ("b", 1.0, 2.0, None),
        ("c", None, None, "bad_metadata"),
    ]


def test_bad_shards_and_samples_become_rejected_rows(tmp_path):
    good = shard_bytes([v2d_sample("k0", b"v0"), v2d_sample("k1", None), v2d_sample("k0", b"again")])
    (tmp_path / "ok.tar").write_bytes(good)
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar file" * 50)
    (tmp_path / "truncated.tar").write_bytes(good[:700])
    (tmp_path / "empty.tar").write_bytes(shard_bytes([]))
    names = ["ok", "garbage", "truncated", "empty", "missing"]
    shard_rows = [make_row(n, "webdataset", str(tmp_path / f"{n}.tar")) for n in names]
    rows = as_rows(expand(shard_rows))
    got = [(r["video_id"], r["reject_reason"]) for r in rows]
    assert got[:3] == [("k0", None), ("k1", "missing_video"), ("k0", "duplicate_id")]
    assert got[3:] == [
        ("garbage", "bad_shard"),
        ("truncated", "bad_shard"),
        ("empty", "bad_shard"),
        ("missing", "missing_file"),
    ]
    assert all(r["reject_stage"] == "source" for r in rows if r["reject_reason"])
    assert "status='success'" in rows[1]["reject_detail"]
    assert "unexpected end" in rows[4]["reject_detail"] and "empty shard" in rows[5]["reject_detail"]


def test_other_rows_pass_through_and_rejected_rows_survive(tmp_path):
    (tmp_path / "s.tar").write_bytes(shard_bytes([v2d_sample("k0", b"v0"), v2d_sample("k1", b"v1")]))
    rejected = make_row(
        "gone", "webdataset", str(tmp_path / "x.tar"), reject_reason="missing_file", reject_detail="x"
    )
    folder_row = make_row("clip", "folder", "/data/clip.mp4")
    batch = rows_to_batch([make_row("s", "webdataset", str(tmp_path / "s.tar")), rejected, folder_row])
    out = apply_to_live_rows(ExpandShards(), batch)
    assert list(out["video_id"]) == ["k0", "k1", "clip", "gone"]
    assert list(out["reject_reason"]) == [None, None, None, "missing_file"]


@pytest.mark.parametrize("shards", [[], "/nonexistent-dir-for-sg4v/*.tar"])
def test_no_shard_is_a_config_error(shards):
    with pytest.raises(ValueError, match="no shard"):
        list(list_source_rows(WebDatasetSource(kind="webdataset", shards=shards)))
