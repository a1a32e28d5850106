"""webdataset export, read by the real ``webdataset`` package and filtered as video2dataset's
dataloader does (it keeps samples that have both ``mp4`` and ``txt``)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from operators.dataset.exports import ExportOptions, export
from tests.operators.dataset.conftest import DURATIONS, KEPT, UNCAPTIONED, decoded_duration

wds = pytest.importorskip("webdataset")


def video2dataset_filter(sample: dict) -> bool:
    """video2dataset.dataloader: filter_no_caption_or_no_video / KeyFilter(["mp4", "txt"])."""
    return "txt" in sample and "mp4" in sample


def test_to_tuple_yields_every_kept_video_once(output, tmp_path):
    dest = Path(export(str(output), "webdataset", str(tmp_path / "wds"), ExportOptions(shard_size=3)).dest)
    shards = sorted(str(p) for p in dest.glob("*.tar"))
    assert [Path(s).name for s in shards] == ["00000.tar", "00001.tar"]
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode().to_tuple("mp4", "txt", "json"))
    assert sorted(meta["video_id"] for _, _, meta in samples) == KEPT
    for mp4, txt, meta in samples:
        assert txt == meta["summary"] and txt.startswith("Summary of")
        assert abs(decoded_duration(io.BytesIO(mp4)) - DURATIONS[meta["video_id"]]) <= 0.5
        assert [c["idx"] for c in meta["captions"]] == list(range(len(meta["keyframe_timestamps"])))
        assert meta["usage"]["calls"] == len(meta["captions"]) + 1
    accepted = list(wds.WebDataset(shards, shardshuffle=False).select(video2dataset_filter))
    assert len(accepted) == len(KEPT)
    assert {s["__key__"] for s in accepted} == {"000000000", "000000001", "000000002", "000010000"}


def test_video2dataset_layout_beside_each_shard(output, tmp_path):
    dest = Path(export(str(output), "webdataset", str(tmp_path / "wds"), ExportOptions(shard_size=3)).dest)
    for shard in ("00000", "00001"):
        table = pq.read_table(dest / f"{shard}.parquet")
        stats = json.loads((dest / f"{shard}_stats.json").read_text())
        names = tarfile.open(dest / f"{shard}.tar").getnames()
        assert stats["count"] == stats["successes"] == table.num_rows == len(names) // 3
        assert set(table.column("status").to_pylist()) == {"success"}
        assert sorted(n.split(".")[0] for n in names if n.endswith(".mp4")) == table.column("key").to_pylist()
    assert not any(UNCAPTIONED["video_id"] in p.read_text(errors="ignore") for p in dest.glob("*.json"))


def test_keyframes_go_in_the_samples_when_asked(output, tmp_path):
    dest = Path(export(str(output), "webdataset", str(tmp_path / "wds"), ExportOptions(keyframes=True)).dest)
    samples = list(wds.WebDataset([str(dest / "00000.tar")], shardshuffle=False).decode("pil"))
    gamma = next(s for s in samples if s["json"]["video_id"] == "gamma")
    assert sorted(k for k in gamma if k.endswith(".jpg")) == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert gamma["000.jpg"].size == (64, 48)
