from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from operators.base import object_column
from operators.video import probe as probe_module
from operators.video.opening import VideoError
from operators.video.probe import ProbeConfig, ProbeVideo, VideoInfo, clip_range, probe_video
from testing.media import make_video
from tests.operators.video.conftest import NTSC


def _reason(path: Path | str, config: ProbeConfig | None = None) -> str:
    with pytest.raises(VideoError) as info:
        probe_video(str(path), config)
    return info.value.reason


def test_ntsc_rate_is_exact(videos):
    info = probe_video(str(videos["ntsc"]))
    assert info.fps == NTSC and (info.fps.numerator, info.fps.denominator) == (30000, 1001)
    assert info.num_frames == 300
    assert info.file_duration == pytest.approx(300 / NTSC, abs=0.04)
    assert (info.width, info.height, info.rotation, info.codec) == (160, 96, 0, "h264")
    assert info.size_bytes == videos["ntsc"].stat().st_size


def test_vp9_webm_without_frame_count(tmp_path):
    path = make_video(tmp_path / "a.webm", num_frames=30, fps=30, width=64, height=48, codec="libvpx-vp9")
    info = probe_video(str(path))
    assert info.codec == "vp9" and info.fps == 30 and info.num_frames == 30  # counted: webm has no count
    assert info.file_duration == pytest.approx(1.0, abs=0.05)


def test_hevc(tmp_path):
    import av

    try:
        av.codec.Codec("libx265", "w")
    except Exception:  # noqa: BLE001
        pytest.skip("no libx265 in this PyAV build")
    path = make_video(tmp_path / "a.mp4", num_frames=24, fps=24, width=64, height=48, codec="libx265")
    info = probe_video(str(path))
    assert (info.codec, info.fps, info.num_frames) == ("hevc", 24, 24)


def test_silent_container_falls_back_to_packet_timestamps(videos, monkeypatch):
    # What Ogg/Theora does (fps 0, no count, no duration): the probe measures from the packets.
    monkeypatch.setattr(probe_module, "declared_timing", lambda container, stream: (None, None, None))
    info = probe_video(str(videos["ntsc"]), ProbeConfig(scan_packets=False))
    assert info.fps == NTSC and info.num_frames == 300
    assert info.file_duration == pytest.approx(300 / NTSC, abs=1e-6)
    monkeypatch.setattr(probe_module, "declared_timing", lambda container, stream: (None, None, None))
    assert _reason(videos["ntsc"], ProbeConfig(decode_fallback=False)) == "corrupt"


def test_decoded_timing_when_packets_have_no_timestamps(videos):
    import av

    with av.open(str(videos["ntsc"])) as container:
        count, fps, duration = probe_module._decoded_timing(container, container.streams.video[0])
    assert (count, fps) == (300, NTSC)
    assert duration == pytest.approx(300 / NTSC, abs=1e-6)


def test_snap_rate_to_standard_rates():
    assert probe_module.snap_rate(Fraction(89, 1) / Fraction(2970, 1000)) == NTSC  # ms-rounded mkv
    assert probe_module.snap_rate(Fraction(2997, 125)) == Fraction(24000, 1001)  # within 0.1 %
    assert probe_module.snap_rate(Fraction(173, 10)) == Fraction(173, 10)  # no standard rate near


def test_rotation_and_displayed_size(videos):
    for degrees in (90, 180, 270):
        info = probe_video(str(videos[f"rot{degrees}"]))
        assert info.rotation == degrees
        assert (info.width, info.height) == (160, 96)  # as displayed
        assert (info.coded_width, info.coded_height) == ((96, 160) if degrees != 180 else (160, 96))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty", "empty_file"),
        ("random", "not_a_video"),
        ("text", "not_a_video"),
        ("folder", "unreadable"),
        ("audio", "no_video_stream"),
        ("no_moov", "corrupt"),
        ("cut_half", "corrupt"),
        ("huge", "too_large"),
        ("beyond_ffmpeg", "too_large"),  # FFmpeg refuses >= 16384^2; the size comes from its log
    ],
)
def test_bad_inputs_have_precise_reasons(videos, name, reason):
    assert _reason(videos[name]) == reason


def test_missing_and_forbidden_paths(tmp_path, videos):
    assert _reason(tmp_path / "nope.mp4") == "unreadable"
    assert _reason("memory://nowhere/nope.mp4") == "unreadable"
    if os.geteuid() == 0:
        pytest.skip("root reads chmod 000 files")
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(videos["short"].read_bytes())
    locked.chmod(0)
    assert _reason(locked) == "unreadable"


def test_too_large_is_checked_before_decoding(videos, monkeypatch):
    monkeypatch.setattr(probe_module, "_scan", lambda *a, **k: pytest.fail("decoded a huge stream"))
    assert _reason(videos["huge"]) == "too_large"
    assert _reason(videos["short"], ProbeConfig(max_source_pixels=160 * 96 - 1)) == "too_large"


def test_remote_uri_through_fsspec(videos):
    import fsspec

    with fsspec.open("memory://bucket/short.mp4", "wb") as f:
        f.write(videos["short"].read_bytes())
    info = probe_video("memory://bucket/short.mp4")
    assert (info.fps, info.num_frames, info.width) == (30, 60, 160)


def test_real_videos(real_videos):
    expected = {  # name: (codec, fps, width, height, frames)
        "cockatoo.mp4": ("h264", Fraction(20), 1280, 720, 280),
        "vtest.avi": ("msmpeg4", Fraction(10), 768, 576, 795),
        "Megamind.avi": ("mpeg4", Fraction(2997, 125), 720, 528, 270),
        "tree.avi": ("cinepak", Fraction(1000000, 66667), 320, 240, 444),
    }
    for name, (codec, fps, width, height, frames) in expected.items():
        info = probe_video(str(real_videos / name))
        assert (info.codec, info.fps, info.width, info.height, info.num_frames) == (
            codec,
            fps,
            width,
            height,
            frames,
        )
        assert info.file_duration > 10


def _info(duration: float) -> VideoInfo:
    return VideoInfo(duration, Fraction(30), 16, 16, 16, 16, 0, "h264", 1, 1)


def test_clip_range():
    assert clip_range(_info(10.0), None, None) == (0.0, 10.0)
    assert clip_range(_info(10.0), 2.5, 30.0) == (2.5, 10.0)  # clamped to the file
    for start, end in [(10.0, None), (12.0, 14.0), (5.0, 5.0), (-1.0, 2.0)]:
        with pytest.raises(VideoError) as info:
            clip_range(_info(10.0), start, end)
        assert info.value.reason == "bad_clip_range"


def test_operator_rows(videos):
    uris = [videos["ntsc"], videos["ntsc"], videos["ntsc"], videos["text"], videos["audio"]]
    batch = {
        "video_id": np.array([f"v{i}" for i in range(5)]),
        "uri": np.array([str(u) for u in uris]),
        "clip_start": object_column([None, 3.3, 20.0, None, None]),
        "clip_end": object_column([None, 7.1, None, None, None]),
    }
    op = ProbeVideo()
    op.setup()
    out = op(batch)
    assert set(ProbeVideo.output_columns) <= set(out)
    assert list(out["reject_reason"]) == [None, None, "bad_clip_range", "not_a_video", "no_video_stream"]
    assert all(out["reject_stage"][i] == "probe" for i in (2, 3, 4))
    assert out["duration"][0] == pytest.approx(300 / 29.97, abs=0.04)
    assert out["duration"][1] == pytest.approx(3.8)
    assert (out["fps_num"][1], out["fps_den"][1]) == (30000, 1001)
    assert out["fps"][1] == pytest.approx(29.97, abs=1e-3)
    assert out["duration"][3] is None
