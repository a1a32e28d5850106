"""Fixtures: tiny generated videos (frames carry their own index) and the real Debian videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from testing.media import make_audio, make_video
from tests.reliability.corpus import raw_avi_declaring

REAL_VIDEOS = Path(__file__).resolve().parents[3] / ".cache" / "real_videos"
NTSC = Fraction(30000, 1001)
#: Variable frame rate: presentation times in ms, deliberately uneven.
VFR_TIMES_MS = [0, 500, 1900, 2100, 2200, 4500, 4600, 6000]


@pytest.fixture(scope="session")
def real_videos() -> Path:
    if not REAL_VIDEOS.is_dir():
        pytest.skip(f"real test videos missing: run tests/fetch_real_videos.sh ({REAL_VIDEOS})")
    return REAL_VIDEOS


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    v: dict[str, Path] = {}
    v["ntsc"] = make_video(d / "ntsc.mp4", num_frames=300, fps=NTSC, width=160, height=96)
    v["short"] = make_video(d / "short.mp4", num_frames=60, fps=30, width=160, height=96)
    v["vfr"] = make_video(
        d / "vfr.mp4",
        num_frames=len(VFR_TIMES_MS),
        width=160,
        height=96,
        pts=VFR_TIMES_MS,
        time_base=Fraction(1, 1000),
    )
    for degrees in (90, 180, 270):
        v[f"rot{degrees}"] = make_video(
            d / f"rot{degrees}.mp4", num_frames=20, width=160, height=96, rotation=degrees
        )
    v["wide"] = make_video(d / "wide.mp4", num_frames=4, width=640, height=360)
    faststart = make_video(
        d / "faststart.mp4", num_frames=60, width=160, height=96, options={"movflags": "faststart"}
    )
    data = faststart.read_bytes()
    (d / "cut_half.mp4").write_bytes(data[: len(data) // 2])
    v["cut_half"] = d / "cut_half.mp4"
    data = v["short"].read_bytes()  # moov at the end: cutting the file removes it
    (d / "no_moov.mp4").write_bytes(data[: len(data) // 2])
    v["no_moov"] = d / "no_moov.mp4"
    (d / "empty.mp4").write_bytes(b"")
    v["empty"] = d / "empty.mp4"
    (d / "random.mp4").write_bytes(bytes(range(256)) * 40)
    v["random"] = d / "random.mp4"
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    v["text"] = d / "text.mp4"
    (d / "folder.mp4").mkdir()
    v["folder"] = d / "folder.mp4"
    v["audio"] = make_audio(d / "audio.m4a", seconds=0.5)
    v["huge"] = raw_avi_declaring(d / "huge.avi", 16000)
    v["beyond_ffmpeg"] = raw_avi_declaring(d / "beyond.avi", 16384)
    return v
