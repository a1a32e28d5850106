"""Clip files: spans of a longer video cut into their own files, frame-exactly."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from operators.base import object_column
from operators.dataset.writer import WriterConfig
from operators.sources import ManifestSource, list_source_rows
from operators.video.clips import CutClips, is_span
from operators.video.probe import ProbeVideo
from operators.video.sample import sample_frames
from testing.media import make_video, read_index

FPS = 30


def frames_of(path: str | Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def decoded_duration(path: str | Path) -> float:
    frames = frames_of(path)
    return frames[-1][0] - frames[0][0] + 1 / FPS


def cut(rows: list[dict], output: Path, mode: str = "reencode") -> dict:
    """Probe then cut, as the pipeline does (probe adds file_duration and rotation)."""
    batch = {k: object_column([r.get(k) for r in rows]) for k in ("video_id", "uri", "source", "clip_start", "clip_end")}
    batch = ProbeVideo()(batch)
    assert all(r is None for r in batch.get("reject_reason", [None])), batch.get("reject_detail")
    op = CutClips(WriterConfig(clips=mode), output=str(output))
    op.setup()
    return op(batch)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clips") / "indexed.mp4", num_frames=300, fps=FPS,
                      width=160, height=96, gop=50)


def manifest(tmp_path: Path, uri: Path, spans: list[tuple[float, float]]) -> list[dict]:
    path = tmp_path / "spans.csv"
    path.write_text("uri,start,end\n" + "".join(f"{uri},{s},{e}\n" for s, e in spans))
    return list(list_source_rows(ManifestSource(kind="manifest", path=str(path), allowed_roots=["/"])))


def test_a_manifest_of_two_spans_gives_two_exact_clip_files(indexed, tmp_path):
    rows = manifest(tmp_path, indexed, [(1.0, 3.5), (4.2, 9.0)])
    out = cut(rows, tmp_path / "out")
    paths = list(out["clip_path"])
    assert len(set(paths)) == 2 and all(p.startswith("keyframes/") and p.endswith("/clip.mp4") for p in paths)
    # Frames shown in [start, end): 1.0 s is frame 30, 3.5 s is frame 105 (left out); 4.2 s is 126.
    expected = [range(30, 105), range(126, 270)]
    for path, (start, end), file_start, indices in zip(paths, [(1.0, 3.5), (4.2, 9.0)],
                                                       out["clip_file_start"], expected, strict=True):
        frames = frames_of(tmp_path / "out" / path)
        assert [read_index(rgb) for _, rgb in frames] == list(indices)
        assert decoded_duration(tmp_path / "out" / path) == pytest.approx(end - start, abs=1 / FPS)
        assert file_start == start


def test_keyframe_timestamps_point_at_the_same_frames_in_the_clip(indexed, tmp_path):
    """Keyframe times are seconds from the span's start; the clip file keeps that clock."""
    rows = manifest(tmp_path, indexed, [(2.2, 8.0)])
    out = cut(rows, tmp_path / "out")
    sampled, times = sample_frames(str(indexed), clip_start=2.2, clip_end=8.0)
    clip = frames_of(tmp_path / "out" / out["clip_path"][0])
    for rgb, t in zip(sampled, times, strict=True):
        on_screen = max((c for c in clip if c[0] <= t + 1e-3), key=lambda c: c[0])
        assert read_index(on_screen[1]) == read_index(rgb)


def test_stream_copy_starts_at_the_keyframe_before_and_records_it(indexed, tmp_path):
    rows = manifest(tmp_path, indexed, [(3.5, 6.0)])
    out = cut(rows, tmp_path / "out", mode="copy")
    start = out["clip_file_start"][0]
    frames = frames_of(tmp_path / "out" / out["clip_path"][0])
    assert start <= 3.5 and read_index(frames[0][1]) == round(start * FPS)
    assert read_index(frames[-1][1]) == round(6.0 * FPS) - 1


def test_whole_files_are_referenced_not_copied(indexed, tmp_path):
    rows = [{"video_id": "whole", "uri": str(indexed), "source": "folder", "clip_start": None, "clip_end": None},
            {"video_id": "all", "uri": str(indexed), "source": "manifest", "clip_start": 0.0, "clip_end": 10.0}]
    out = cut(rows, tmp_path / "out")
    assert list(out["clip_path"]) == [None, None] and not (tmp_path / "out").exists()
    assert is_span(0.0, 9.0, 10.0) and is_span(1.0, None, 10.0) and not is_span(None, None, 10.0)


def test_a_span_that_cannot_be_cut_is_rejected_with_its_reason(indexed, tmp_path):
    batch = {"video_id": object_column(["late"]), "uri": object_column([str(indexed)]),
             "clip_start": np.array([50.0]), "clip_end": np.array([60.0]),
             "file_duration": np.array([10.0]), "rotation": np.array([0])}
    out = CutClips(output=str(tmp_path / "out"))(batch)
    assert (out["reject_stage"][0], out["reject_reason"][0]) == ("clip_files", "empty_clip")
    assert out["clip_path"][0] is None
    assert not list((tmp_path / "out").rglob("*.mp4"))  # no half-written file left


def test_real_video_with_audio_keeps_its_audio_and_first_frame(real_videos, tmp_path):
    source = real_videos / "cockatoo.mp4"
    rows = manifest(tmp_path, source, [(2.0, 5.0), (7.5, 12.0)])
    out = cut(rows, tmp_path / "out")
    for path, (start, end) in zip(out["clip_path"], [(2.0, 5.0), (7.5, 12.0)], strict=True):
        with av.open(str(tmp_path / "out" / path)) as c:
            assert [s.type for s in c.streams] == ["video", "audio"]
            assert c.streams.video[0].codec_context.width == 1280
            assert abs(c.duration / 1e6 - (end - start)) < 0.15
        first = frames_of(tmp_path / "out" / path)[0][1].astype(float)
        # What a player shows at the span's start, playing the file from its beginning (this
        # file's index marks non-IDR pictures as keyframes: decoding after a seek to 7.25 s
        # gives green frames, which the clip must not start with).
        reference = next(rgb for t, rgb in frames_of(source) if t >= start - 1e-3).astype(float)
        assert np.abs(first - reference).mean() < 6  # the same picture, up to two lossy encodes


@pytest.mark.parametrize("name", ["tree.avi", "vtest.avi"])
def test_copy_falls_back_to_reencode_for_codecs_mp4_cannot_hold(real_videos, tmp_path, name):
    rows = manifest(tmp_path, real_videos / name, [(1.0, 4.0)])
    out = cut(rows, tmp_path / "out", mode="copy")
    assert out["clip_path"][0] and out.get("reject_reason", [None])[0] is None
    with av.open(str(tmp_path / "out" / out["clip_path"][0])) as c:
        assert c.streams.video[0].codec_context.name in ("h264", "msmpeg4v3", "cinepak")
        assert abs(c.duration / 1e6 - (4.0 - out["clip_file_start"][0])) <= 0.5  # sparse frames: tree.avi


def test_copy_never_starts_on_a_keyframe_that_does_not_decode_alone(real_videos, tmp_path):
    """cockatoo.mp4 indexes a non-IDR picture at 7.25 s as a keyframe: a stream copy from there
    would open on green frames, so the clip is re-encoded from a clean decode instead."""
    source = real_videos / "cockatoo.mp4"
    out = cut(manifest(tmp_path, source, [(7.5, 9.0)]), tmp_path / "out", mode="copy")
    assert out["clip_file_start"][0] == 7.5
    first = frames_of(tmp_path / "out" / out["clip_path"][0])[0][1].astype(float)
    reference = next(rgb for t, rgb in frames_of(source) if t >= 7.5 - 1e-3).astype(float)
    assert np.abs(first - reference).mean() < 6


@pytest.mark.parametrize("mode", ["reencode", "copy"])
def test_rotation_is_kept(tmp_path, mode):
    source = make_video(tmp_path / "rot.mp4", num_frames=90, fps=FPS, width=160, height=96, rotation=90, gop=30)
    out = cut(manifest(tmp_path, source, [(1.0, 2.0)]), tmp_path / "out", mode=mode)
    with av.open(str(tmp_path / "out" / out["clip_path"][0])) as c:
        frame = next(c.decode(video=0))
    assert (frame.rotation, frame.width, frame.height) == (90, 96, 160)  # coded sideways, shown upright
