"""Webdataset shards listed per sample, with each member's place: read with one range read."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from operators.io import file_size, open_binary, ranged_member
from operators.sources import WebDatasetSource, list_source_partition, source_partitions
from operators.video.opening import VideoError
from operators.video.probe import ProbeConfig, probe_video


def write_shard(path, members: int, payload: int = 2000) -> None:
    with tarfile.open(path, "w") as tar:
        for k in range(members):
            for ext, data in (("mp4", bytes([k % 251]) * payload),
                              ("json", json.dumps({"key": f"s{k:05d}", "caption": f"c{k}"}).encode())):
                info = tarfile.TarInfo(f"{k:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_samples_are_listed_with_their_member_range(tmp_path):
    write_shard(tmp_path / "a.tar", 5)
    config = WebDatasetSource(kind="webdataset", shards=str(tmp_path / "*.tar"))
    parts = source_partitions(config)
    assert len(parts) == 1
    rows = list(list_source_partition(config, parts[0]))
    assert [r["video_id"] for r in rows] == [f"s{k:05d}" for k in range(5)]
    assert [r["source_caption"] for r in rows] == [f"c{k}" for k in range(5)]
    for k, row in enumerate(rows):
        shard, _, size = ranged_member(row["uri"])
        assert shard == str(tmp_path / "a.tar") and size == 2000 == file_size(row["uri"])
        with open_binary(row["uri"]) as f:
            assert f.read() == bytes([k % 251]) * 2000


def test_a_ranged_read_reads_only_the_member(tmp_path, monkeypatch):
    """Opening a member neither indexes the shard (no tarfile, no fsspec tar filesystem) nor
    reads more of it than the member's bytes."""
    write_shard(tmp_path / "big.tar", 300, payload=200)
    config = WebDatasetSource(kind="webdataset", shards=str(tmp_path / "big.tar"))
    rows = list(list_source_partition(config, source_partitions(config)[0]))

    def no_index(*args, **kwargs):
        raise AssertionError("the shard was indexed")

    monkeypatch.setattr(tarfile, "open", no_index)
    read: list[int] = []
    real_open = open

    class Counting(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr("builtins.open", lambda path, mode="r", *a, **k:
                        Counting(path, "rb") if mode == "rb" else real_open(path, mode, *a, **k))
    with open_binary(rows[-1]["uri"]) as f:
        assert f.read() == bytes([299 % 251]) * 200
    assert sum(read) == 200


def test_a_member_over_the_limit_is_rejected_before_it_is_read(tmp_path):
    write_shard(tmp_path / "a.tar", 1)
    config = WebDatasetSource(kind="webdataset", shards=str(tmp_path / "a.tar"))
    row = next(iter(list_source_partition(config, source_partitions(config)[0])))
    with pytest.raises(VideoError) as raised:
        probe_video(row["uri"], ProbeConfig(max_source_bytes=1000))
    assert raised.value.reason == "too_large" and "max_source_bytes" in str(raised.value)
