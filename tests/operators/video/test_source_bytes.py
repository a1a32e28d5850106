"""A shard member is read once: the probe hands its bytes on, later openers read them."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

import operators.io as io_mod
from operators.base import is_missing, object_column
from operators.dataset.schema import SOURCE_BYTES
from operators.keyframes.operator import SelectKeyframes
from operators.keyframes.select import KeyframeConfig
from operators.sources import WebDatasetSource, list_source_partition, source_partitions
from operators.video.probe import ProbeConfig, ProbeVideo
from operators.video.sample import SampleConfig, SampleFrames
from ray_jobs.adapter import run_operator, source_released
from ray_jobs.config import PipelineConfig
from ray_jobs.pipeline import build_pipeline
from testing.media import make_video


def _batch(rows: list[dict]) -> dict:
    return {key: object_column([r.get(key) for r in rows]) for key in rows[0]}


@pytest.fixture
def shard_rows(tmp_path):
    videos = []
    for k, color in enumerate(((200, 30, 30), (30, 200, 30))):
        path = make_video(tmp_path / f"v{k}.mp4", num_frames=90, width=320, height=240,
                          scenes=[(0, color), (45, (20, 20, 220))])
        videos.append(path.read_bytes())
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for k in range(2):
            tar.add(tmp_path / f"v{k}.mp4", arcname=f"{k:05d}.mp4")
    config = WebDatasetSource(kind="webdataset", shards=str(tmp_path / "a.tar"))
    rows = list(list_source_partition(config, source_partitions(config)[0]))
    return rows, videos


def _stages(tmp_path):
    keyframes = SelectKeyframes(KeyframeConfig(reread="always", image_longest_side=320),
                                output_dir=str(tmp_path / "out"))
    return [ProbeVideo(ProbeConfig()), SampleFrames(SampleConfig(every_s=0.5)), keyframes]


def _run(stages, batch):
    for op in stages:
        if isinstance(op, SelectKeyframes):  # the CLIP stage's output: one vector per scene
            batch["frame_embeddings"] = object_column(
                [np.eye(8, dtype=np.float32)[[int(t >= 1.5) for t in ts]] for ts in batch["frame_timestamps"]])
        batch = run_operator(op, batch)
    return batch


def test_probe_sampling_and_reread_read_each_member_once(shard_rows, tmp_path, monkeypatch):
    rows, videos = shard_rows
    reads: list[tuple[int, int]] = []
    real = io_mod.read_range

    def counted(file, offset, size):
        reads.append((offset, size))
        return real(file, offset, size)

    monkeypatch.setattr(io_mod, "read_range", counted)
    stages = _stages(tmp_path)
    stages[-1].releases_source = True  # what build_pipeline does for the last opener
    out = _run(stages, _batch(rows))
    assert "reject_reason" not in out or all(is_missing(r) for r in out["reject_reason"])
    assert len(reads) == 2 and len(set(reads)) == 2  # one range read per sample, no more
    assert [list(t) for t in out["keyframe_timestamps"]] == [[0.0, 1.5, pytest.approx(89 / 30)]] * 2
    assert list(out[SOURCE_BYTES]) == [None, None]  # released after the last opener

    # The same frames as reading the members where they lie, three times each.
    reads.clear()
    plain = _batch(rows)
    direct = run_operator(stages[0], plain)
    assert len(reads) == 2
    direct[SOURCE_BYTES] = object_column([None, None])  # nothing handed on: each stage reads
    direct = _run(stages[1:], direct)
    assert len(reads) == 2 + 2 + 2
    for a, b in zip(out["frames"], direct["frames"], strict=True):
        assert list(a) == list(b)
    assert [list(t) for t in out["keyframe_timestamps"]] == [list(t) for t in direct["keyframe_timestamps"]]
    assert videos[0] != videos[1]


def test_bytes_are_kept_for_later_openers_and_dropped_with_a_rejection(shard_rows):
    rows, _ = shard_rows
    batch = run_operator(ProbeVideo(ProbeConfig()), _batch(rows))
    held = list(batch[SOURCE_BYTES])
    assert all(isinstance(b, bytes) and len(b) > 1000 for b in held)
    batch["reject_reason"] = object_column(["too_short", None])
    out = source_released(SampleFrames(), batch)
    assert out[SOURCE_BYTES][0] is None and out[SOURCE_BYTES][1] == held[1]


def test_a_plain_file_is_not_held(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=30)
    out = run_operator(ProbeVideo(ProbeConfig()), _batch([{"video_id": "v", "uri": str(path)}]))
    assert out[SOURCE_BYTES][0] is None


@pytest.mark.parametrize(("steps", "clips", "last"), [
    ({}, "none", "select_keyframes"),
    ({"keyframes": False, "captions": False}, "none", "sample_frames"),
    ({}, "copy", "clip_files"),
])
def test_the_last_stage_that_opens_the_video_releases_the_bytes(steps, clips, last):
    config = PipelineConfig.model_validate({
        "input": [{"kind": "webdataset", "shards": "s.tar"}], "output": "out",
        "steps": steps, "writer": {"clips": clips}})
    releasing = [op.name for op in build_pipeline(config) if op.releases_source]
    assert releasing == [last]
