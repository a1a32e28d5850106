"""A corpus of hostile and broken inputs, generated at test time in a few seconds.

Each entry is one file (or one thing with a video name that is not a file) and the outcome the
pipeline must give it: kept, or rejected at a stage for a precise reason. The files are tiny;
those that declare something huge (16384 x 16384 pixels, 10 hours) only declare it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from testing.media import make_audio, make_video
from testing.samples import scene_frames, write_video

TEN_HOURS_S = 36_000


@dataclass(frozen=True)
class Expected:
    """What must become of one corpus entry: ``stage`` None means kept."""

    stage: str | None = None
    reason: str | None = None
    detail: str = ""  # a substring the rejection's detail must hold
    duration: float | None = None  # for a kept video: its probed duration (s), +- 0.1

    @property
    def kept(self) -> bool:
        return self.stage is None


KEPT = Expected()


def _probe_reject(reason: str, detail: str = "") -> Expected:
    return Expected("probe", reason, detail)


def raw_avi_declaring(path: Path, size: int) -> Path:
    """A two-frame 16x16 raw AVI whose headers declare ``size`` x ``size`` pixels."""
    make_video(path, num_frames=2, width=16, height=16, codec="rawvideo")
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih") + 8
    struct.pack_into("<II", data, avih + 32, size, size)
    strf = data.find(b"strf") + 8
    struct.pack_into("<ii", data, strf + 4, size, size)
    path.write_bytes(bytes(data))
    return path


def _mp4_declaring_duration(path: Path, seconds: int) -> Path:
    """A 1 s mp4 whose movie, track and media headers all declare ``seconds`` (version-0 boxes:
    ``mvhd``/``mdhd`` hold timescale then duration after 12 bytes, ``tkhd`` its duration in the
    movie's timescale after 20)."""
    make_video(path, num_frames=30, fps=30, width=64, height=48)
    data = bytearray(path.read_bytes())
    movie_scale = struct.unpack_from(">I", data, data.find(b"mvhd") + 16)[0]
    for box, duration_at in ((b"mvhd", 20), (b"tkhd", 24), (b"mdhd", 20)):
        at = data.find(box)
        if data[at + 4] != 0:
            raise RuntimeError(f"{box!r} is not a version-0 box")
        scale = movie_scale if box != b"mdhd" else struct.unpack_from(">I", data, at + 16)[0]
        struct.pack_into(">I", data, at + duration_at, seconds * scale)
    path.write_bytes(bytes(data))
    return path


def _avi_declaring_zero_rate(path: Path) -> Path:
    """An AVI whose headers declare a frame rate of 0/0 and 0 microseconds per frame."""
    make_video(path, num_frames=20, width=64, height=48, codec="mpeg4")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, data.find(b"strh") + 8 + 20, 0, 0)  # dwScale, dwRate
    struct.pack_into("<I", data, data.find(b"avih") + 8, 0)  # dwMicroSecPerFrame
    path.write_bytes(bytes(data))
    return path


def _raw_h264(path: Path) -> Path:
    """An H.264 elementary stream: no container, so no frame rate, duration or timestamps."""
    import av

    with av.open(str(path), mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for rgb in scene_frames(50, 64, 48):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def build_corpus(folder: Path) -> dict[str, Expected]:
    """Write the corpus into ``folder``; returns entry name (relative path) -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expected] = {}

    def put(name: str, outcome: Expected) -> Path:
        expected[name] = outcome
        return folder / name

    # Files with a video name that hold no video.
    put("zero_bytes.mp4", _probe_reject("empty_file")).write_bytes(b"")
    put("random_bytes.mp4", _probe_reject("not_a_video")).write_bytes(
        np.random.default_rng(7).bytes(64 << 10))
    put("noise.mkv", _probe_reject("not_a_video")).write_bytes(
        np.random.default_rng(8).bytes(16 << 10))
    put("text.mp4", _probe_reject("not_a_video")).write_text("#!/bin/sh\nrm -rf / # not a video\n" * 40)
    make_audio(put("audio_only.m4a", _probe_reject("no_video_stream")), seconds=0.5)

    # Truncated files.
    whole = make_video(folder / "whole.tmp.mp4", num_frames=60, width=96, height=64)  # moov at the end
    data = whole.read_bytes()
    whole.unlink()
    put("no_moov.mp4", _probe_reject("corrupt")).write_bytes(data[: len(data) // 2])
    fast = make_video(folder / "fast.tmp.mp4", num_frames=60, width=96, height=64,
                      options={"movflags": "faststart"})
    data = fast.read_bytes()
    fast.unlink()
    put("cut_mid_stream.mp4", _probe_reject("corrupt", "truncated")).write_bytes(data[: len(data) // 2])

    # Headers that declare something huge.
    raw_avi_declaring(put("declares_16384x16384.avi", _probe_reject("too_large", "16384x16384")), 16384)
    raw_avi_declaring(put("declares_16000x16000.avi", _probe_reject("too_large", "16000x16000")), 16000)
    # The headers say 10 hours, the sample table 1 s: the probe believes the packets.
    _mp4_declaring_duration(put("declares_10h.mp4", Expected(duration=1.0)), TEN_HOURS_S)
    # Two real frames 10 hours apart: the stream really lasts 10 hours.
    make_video(put("spans_10h.mkv", Expected("duration_filter", "too_long", "36000")),
               num_frames=2, width=64, height=48, pts=[0, TEN_HOURS_S * 1000], time_base=Fraction(1, 1000))

    # Timing oddities that are still videos: kept.
    _raw_h264(put("no_timing.h264", Expected(duration=2.0)))  # 50 frames at FFmpeg's default 25 fps
    _avi_declaring_zero_rate(put("zero_fps.avi", Expected(duration=0.8)))  # 20 frames, 25 fps again
    make_video(put("variable_fps.mp4", Expected(duration=6.0)), num_frames=8, width=96, height=64,
               pts=[0, 500, 1900, 2100, 2200, 4500, 4600, 6000], time_base=Fraction(1, 1000))
    make_video(put("one_frame.mp4", Expected(duration=1 / 30)), num_frames=1, width=96, height=64)
    make_video(put("rotated_90.mp4", KEPT), num_frames=30, width=96, height=64, rotation=90)
    write_video(put("ten_bit.mp4", KEPT), scene_frames(30, 96, 64), fps=30, pix_fmt="yuv420p10le")
    make_video(put("with spaces ünïcødé 動画.mp4", KEPT), num_frames=30, width=96, height=64)

    # Things with a video name that are not regular files.
    os.symlink("loop_b.mp4", put("loop_a.mp4", _probe_reject("unreadable")))
    os.symlink("loop_a.mp4", put("loop_b.mp4", _probe_reject("unreadable")))
    os.symlink("nowhere.mp4", put("dangling.mp4", _probe_reject("unreadable")))
    os.mkfifo(put("fifo.mp4", _probe_reject("unreadable", "not a regular file")))
    put("directory.mp4", _probe_reject("unreadable")).mkdir()
    return expected


def write_manifest(folder: Path, names: list[str]) -> Path:
    """A manifest listing ``names`` (relative to ``folder``), so that entries a folder listing
    would skip (a directory named ``.mp4``, a ``.h264`` file) reach the probe too."""
    import csv

    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["uri"])
        writer.writerows([name] for name in names)
    return path
