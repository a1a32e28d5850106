from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.base import object_column
from operators.video.frames import decode_image
from operators.video.opening import VideoError
from operators.video.probe import ProbeVideo
from operators.video.sample import TOLERANCE_S, SampleConfig, SampleFrames, sample_frames, select_frames
from testing.media import read_index
from tests.operators.video.conftest import NTSC, VFR_TIMES_MS

PERIOD = float(1 / NTSC)


def test_ntsc_timestamps_match_frame_contents(videos):
    frames, times = sample_frames(str(videos["ntsc"]))
    last = 299 / NTSC
    targets = [0.0, 2.0, 4.0, 6.0, 8.0]
    assert len(times) == len(targets) + 1
    for t, target in zip(times, targets, strict=False):
        assert target - PERIOD < t <= target + TOLERANCE_S  # the frame on screen at the target
    assert times[-1] == pytest.approx(float(last), abs=1e-5)  # the last frame, not a time past the end
    for rgb, t in zip(frames, times, strict=True):
        assert read_index(rgb) == round(t * 30000 / 1001)  # no int(fps) drift: index 299, not 290
    assert [read_index(f) for f in frames] == [0, 59, 119, 179, 239, 299]


def test_variable_frame_rate_takes_latest_frame_at_or_before_target(videos):
    frames, times = sample_frames(str(videos["vfr"]))
    # targets 0, 2, 4, 6 s -> frames at 0, 1.9 (latest <= 2), 2.2 (latest <= 4), 6.0 (last, == target)
    assert [read_index(f) for f in frames] == [0, 2, 4, 7]
    assert times == pytest.approx([VFR_TIMES_MS[i] / 1000 for i in (0, 2, 4, 7)])


def test_clip_starting_mid_file(videos):
    frames, times = sample_frames(str(videos["ntsc"]), clip_start=3.3, clip_end=7.1)
    indices = [read_index(f) for f in frames]
    assert indices[0] == 99  # first frame at/after 3.3 s: frame 99 at 3.3033 s
    assert times[0] == pytest.approx(99 / 29.97 - 3.3, abs=1e-4)
    assert indices[1] == 158  # on screen at 5.3 s
    assert indices[-1] == 212  # last frame before 7.1 s (frame 213 is at 7.107 s)
    for rgb, t in zip(frames, times, strict=True):
        assert read_index(rgb) == round((t + 3.3) * 30000 / 1001)


def test_clip_in_the_middle_of_a_gop(tmp_path):
    from testing.media import make_video

    path = make_video(tmp_path / "gop.mp4", num_frames=150, fps=30, width=96, height=64, gop=60)
    frames, times = sample_frames(str(path), clip_start=2.5, clip_end=4.0)
    assert [read_index(f) for f in frames] == [75, 119]
    assert times == pytest.approx([0.0, 119 / 30 - 2.5])


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_video_comes_out_upright(videos, degrees):
    frames, _ = sample_frames(str(videos[f"rot{degrees}"]), config=SampleConfig(every_s=0.25))
    assert frames[0].shape == (96, 160, 3)  # displayed size; coded is 96 wide for 90/270
    assert [read_index(f) for f in frames] == [0, 7, 15, 19]  # index band readable on top
    given_rotation, _ = sample_frames(str(videos[f"rot{degrees}"]), rotation=degrees)
    assert given_rotation[0].shape == (96, 160, 3)


def test_resize_keeps_aspect_and_caps_pixels(videos):
    frames, _ = sample_frames(str(videos["wide"]))
    assert frames[0].shape == (336, 598, 3)  # short side 336, 16:9 kept (597.3 -> even)
    frames, _ = sample_frames(str(videos["wide"]), config=SampleConfig(short_side=None, max_pixels=20_000))
    h, w, _ = frames[0].shape
    assert w * h <= 20_000 and abs(w / h - 16 / 9) < 0.05
    frames, _ = sample_frames(str(videos["short"]), config=SampleConfig(short_side=None))
    assert frames[0].shape == (96, 160, 3)  # never upscaled
    assert read_index(frames[0]) == 0


def test_max_frames_bounds_the_output(videos):
    frames, times = sample_frames(str(videos["ntsc"]), config=SampleConfig(every_s=0.1, max_frames=5))
    assert len(frames) == 5 and times == sorted(times)


def test_truncated_file_keeps_decoded_frames(videos):
    frames, times = sample_frames(str(videos["cut_half"]), config=SampleConfig(every_s=0.2))
    assert 1 <= len(frames) and times[-1] < 1.0
    for rgb, t in zip(frames, times, strict=True):
        assert read_index(rgb) == round(t * 30)


def test_unreadable_inputs_raise_video_error(videos):
    for name, reason in [("text", "not_a_video"), ("audio", "no_video_stream"), ("empty", "empty_file")]:
        with pytest.raises(VideoError) as info:
            sample_frames(str(videos[name]))
        assert info.value.reason == reason


def test_operator_end_to_end_with_probe(videos):
    uris = [str(videos["ntsc"]), str(videos["rot90"]), str(videos["random"])]
    batch = {
        "video_id": np.array(["a", "b", "c"]),
        "uri": np.array(uris),
        "clip_start": object_column([3.3, None, None]),
        "clip_end": object_column([7.1, None, None]),
    }
    probed = ProbeVideo()(batch)
    live = {k: v[:2] for k, v in probed.items()}  # the adapter only passes live rows on
    out = SampleFrames()(live)
    assert set(SampleFrames.output_columns) <= set(out)
    jpegs, times = out["frames"][0], out["frame_timestamps"][0]
    assert all(isinstance(j, bytes) for j in jpegs) and len(jpegs) == len(times) == 3
    assert [read_index(decode_image(j)) for j in jpegs] == [99, 158, 212]
    assert decode_image(out["frames"][1][0]).shape == (96, 160, 3)
    rejected = SampleFrames()({"uri": np.array([uris[2]]), "clip_start": object_column([None])})
    assert rejected["reject_reason"][0] == "not_a_video" and rejected["frames"][0] is None


def test_real_videos(real_videos):
    for name in ["cockatoo.mp4", "vtest.avi", "Megamind.avi", "tree.avi"]:
        frames, times = sample_frames(str(real_videos / name))
        assert times == sorted(times) and times[0] < 0.1
        assert all(f.ndim == 3 and min(f.shape[:2]) <= 336 for f in frames)
        for k, t in enumerate(times[1:-1], start=1):  # the frame on screen at 2k s (tree.avi has gaps)
            assert 2.0 * k - 1.0 < t <= 2.0 * k + TOLERANCE_S


def _reference(times: list[float], start: float, end: float, every: float, cap: int) -> list[float]:
    live = [t for t in times if start - TOLERANCE_S <= t < end - TOLERANCE_S]
    if not live:
        return []
    chosen = {live[0], live[-1]}
    k = 0
    while start + k * every < end:
        before = [t for t in live if t <= start + k * every + TOLERANCE_S]
        chosen.add(before[-1] if before else live[0])
        k += 1
    return sorted(chosen)[:cap]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 90), min_size=1, max_size=80),
    start_ms=st.integers(0, 3000),
    length_ms=st.integers(1, 6000),
    every=st.sampled_from([0.5, 1.0, 2.0, 2.5]),
    cap=st.integers(1, 50),
)
def test_selection_matches_brute_force(gaps, start_ms, length_ms, every, cap):
    times = list(np.cumsum([0, *gaps]) * (1 / 30))  # VFR in units of 1/30 s
    start, end = start_ms / 1000, (start_ms + length_ms) / 1000
    got = [t for _, t in select_frames(((i, t) for i, t in enumerate(times)), start, end, every, cap)]
    assert got == _reference(times, start, end, every, cap)


def test_selection_is_lazy():
    converted = []
    frames = ((i, i / 30) for i in range(300))
    for item, _ in select_frames(frames, 0.0, None, 2.0, 100):
        converted.append(item)
    assert converted == [0, 60, 120, 180, 240, 299]
    assert Fraction(60, 30) == 2  # exact at 30 fps: frame 60 is on screen at 2.0 s


def _both_ways(uri: str, **kwargs):
    fast = sample_frames(uri, config=SampleConfig(**kwargs))
    full = sample_frames(uri, config=SampleConfig(skip_nonref=False, **kwargs))
    return fast, full


def test_skipping_nonref_frames_changes_nothing(videos, real_videos):
    uris = [videos["ntsc"], videos["vfr"], real_videos / "cockatoo.mp4", real_videos / "Megamind.avi"]
    for uri in uris:
        (fast_frames, fast_times), (full_frames, full_times) = _both_ways(str(uri))
        assert fast_times == full_times
        assert all(np.array_equal(a, b) for a, b in zip(fast_frames, full_frames, strict=True))
