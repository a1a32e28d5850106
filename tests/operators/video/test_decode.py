"""Planned decoding (operators.video.decode) must choose and return exactly the frames, pixel
for pixel, that a full sequential decode gives; where it cannot, the sampler decodes in full."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from operators.video import plan as planning
from operators.video import sample
from operators.video.sample import SampleConfig, sample_frames, select_frames
from testing.media import frame_image, make_video, read_index


def _encode(path: Path, times_ms: list[int], gop: int, codec: str = "libx264", **options: str) -> Path:
    """Frame i shows index i at ``times_ms[i]``; ``options`` go to the encoder (bframes=0...)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frame_image(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CFR = [round(i * 1000 / 30) for i in range(240)]  # 8 s at 30 fps
#: Variable frame rate, on the encoder's 1/30 s grid (times in ms).
VFR = [round(n * 1000 / 30) for n in [0, 1, 3, 21, 22, 57, 60, 63, 64, 117, 120, 121, 183, 185, 210]]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("decode")
    return {
        "gop5_bframes": _encode(d / "gop5_b.mp4", CFR, 5),
        "gop5_no_bframes": _encode(d / "gop5_p.mp4", CFR, 5, bframes="0"),
        "gop120_bframes": _encode(d / "gop120_b.mp4", CFR, 120),
        "gop250_no_bframes": _encode(d / "gop250_p.mp4", CFR, 250, bframes="0"),
        "vfr_gop3": _encode(d / "vfr.mkv", VFR, 3),
        "all_intra": _encode(d / "intra.mp4", CFR, 1),
        "mpeg4_avi": make_video(d / "mpeg4.avi", num_frames=150, width=96, height=64, codec="mpeg4", gop=12),
    }


def _full_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = sample._full_pass
    monkeypatch.setattr(sample, "_full_pass", lambda *a: calls.append(1) or original(*a))
    return calls


def _same_as_full_decode(uri: str, start: float = 0.0, end: float | None = None, **kwargs) -> list[int]:
    planned = sample_frames(uri, start, end, SampleConfig(**kwargs))
    full = sample_frames(uri, start, end, SampleConfig(skip_nonref=False, **kwargs))
    assert planned[1] == full[1]
    assert all(np.array_equal(a, b) for a, b in zip(planned[0], full[0], strict=True))
    return [read_index(f) for f in planned[0]]


@pytest.mark.parametrize(
    "name",
    [
        "gop5_bframes",
        "gop5_no_bframes",
        "gop120_bframes",
        "gop250_no_bframes",
        "vfr_gop3",
        "all_intra",
        "mpeg4_avi",
    ],
)
@pytest.mark.parametrize("every_s", [0.3, 1.0, 2.0])
@pytest.mark.parametrize("clip", [(0.0, None), (1.05, 5.5), (2.0, 2.9), (0.4, 7.9)])
def test_planned_decode_matches_full_decode(encoded, monkeypatch, name, every_s, clip):
    full_passes = _full_passes(monkeypatch)
    indices = _same_as_full_decode(str(encoded[name]), *clip, every_s=every_s)
    assert indices and indices == sorted(indices)
    assert len(full_passes) == 1  # only the reference decode: the planned path was not abandoned


def _plan(
    uri: str, start: float = 0.0, end: float | None = None, every_s: float = 2.0, max_frames: int = 256
):
    import av

    def select(items):
        return select_frames(items, start, end, every_s, max_frames)

    with av.open(uri) as container:
        stream = container.streams.video[0]
        total = sum(1 for p in container.demux(stream) if p.size)
        return planning.plan_decode(container, stream, start, end, every_s, max_frames, select), total


def test_plan_skips_whole_gops_and_nonref_frames(encoded):
    plan, total = _plan(str(encoded["gop5_no_bframes"]))
    assert len(plan.times) == 5  # 0, 2, 4, 6 s and the last frame
    assert len(plan.decode) <= 5 * 5  # at most one GOP of 5 per chosen frame
    plan, total = _plan(str(encoded["mpeg4_avi"]))
    assert len(plan.times) == 4 and len(plan.decode) <= 4 * 12 < total
    plan, total = _plan(str(encoded["gop120_bframes"]))
    assert sum(keep for keep, _ in plan.decode.values()) == 5 and len(plan.decode) < total


def test_packed_b_frame_avi_is_not_planned(real_videos):
    assert _plan(str(real_videos / "Megamind.avi"))[0] is None  # packet pts out of order
    assert _plan(str(real_videos / "vtest.avi"))[0] is not None


def test_real_videos_match_full_decode(real_videos):
    for name in ["cockatoo.mp4", "vtest.avi", "Megamind.avi", "tree.avi"]:
        _same_as_full_decode(str(real_videos / name))
        _same_as_full_decode(str(real_videos / name), 3.3, 9.1, every_s=1.5)


@pytest.mark.parametrize("given", [0, 2, 4])
def test_decoder_stopping_early_hands_over_to_full_decode(encoded, monkeypatch, given):
    original = planning.planned_frames

    def stop_early(*args):  # as if the decoder had not given back the next chosen frame
        yield from list(original(*args))[:given]

    monkeypatch.setattr(sample, "planned_frames", stop_early)
    full_passes = _full_passes(monkeypatch)
    frames, times = sample_frames(str(encoded["gop5_bframes"]))
    assert len(full_passes) == 1  # it goes on after the last frame given out: none twice
    assert [read_index(f) for f in frames] == [0, 60, 120, 180, 239]
    assert times == sorted(set(times))


def test_repeated_pts_are_not_planned(tmp_path, monkeypatch):
    path = _encode(tmp_path / "dup.mkv", [0, 500, 1000, 1010, 2500, 4000], 2)  # 1000, 1010: one 1/30 s slot
    plan, _ = _plan(str(path), every_s=0.5)
    assert plan is None
    _same_as_full_decode(str(path), every_s=0.5)


def test_clip_beyond_max_frames_horizon(tmp_path, monkeypatch):
    # All keyframes, a gap of 3 s: max_frames=5 targets end at 2.5 s with only 2 distinct frames,
    # so reading stops at the horizon short of max_frames and the clip is decoded in full.
    times = [0, 100, 200, *range(3000, 6000, 100)]
    path = _encode(tmp_path / "gap.mp4", times, 1)
    plan, _ = _plan(str(path), every_s=0.5, max_frames=5)
    assert plan is None
    full_passes = _full_passes(monkeypatch)
    assert _same_as_full_decode(str(path), every_s=0.5, max_frames=5) == [0, 2, 3, 8, 13]
    assert len(full_passes) == 2
    plan, total = _plan(str(path), every_s=0.5, max_frames=2)  # filled before the horizon
    assert plan is not None and len(plan.times) == 2


def test_avi_index_and_demux_pass_plan_alike(encoded, real_videos, monkeypatch):
    uris = [str(encoded["mpeg4_avi"]), str(real_videos / "vtest.avi"), str(real_videos / "tree.avi")]
    from_index = [_plan(uri, 1.0, 9.0, every_s=0.7)[0] for uri in uris]
    monkeypatch.setattr(planning, "_indexed", lambda *a: None)
    from_demux = [_plan(uri, 1.0, 9.0, every_s=0.7)[0] for uri in uris]
    for a, b in zip(from_index, from_demux, strict=True):
        assert a.times == b.times and a.decode == b.decode


def test_packets_differing_from_the_plan_fall_back(encoded, monkeypatch):
    original = planning._stretches

    def shifted(pts, *args):  # as if the index disagreed with the packets read
        return original([p + 1 for p in pts], *args)

    monkeypatch.setattr(planning, "_stretches", shifted)
    full_passes = _full_passes(monkeypatch)
    _same_as_full_decode(str(encoded["mpeg4_avi"]), 1.05, 4.5, every_s=1.0)
    assert len(full_passes) == 2
