"""Sequential decoding for the sampler: frame times and seeking.

This is the reference path: every frame of the clip is decoded and timed the way FFmpeg's
best-effort timestamps do it. ``operators.video.plan`` decodes less where packets allow it and
must choose the same frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from operators.video.opening import VideoError

TOLERANCE_S = 1e-3


def seconds(ts: int, origin: int, time_base: Fraction) -> float:
    """Exact integer arithmetic, one rounding: Fraction objects cost ~10 us each per frame."""
    return (ts - origin) * time_base.numerator / time_base.denominator


class FrameTimes:
    """FFmpeg's best-effort timestamp rule: trust pts unless it has gone backwards more often
    than dts (AVI with packed B-frames attaches pts in decode order)."""

    def __init__(self, time_base: Fraction, origin: int, fps: Fraction | None) -> None:
        self.time_base, self.origin = time_base, origin
        self.step = float(1 / fps) if fps else 1 / 25
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = None
        self.last_time: float | None = None

    def __call__(self, frame: Any) -> float:
        pts, dts = frame.pts, frame.dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        ts = pts if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None) else dts
        if ts is None:  # no timestamps at all: count frames from the last known time
            time = 0.0 if self.last_time is None else self.last_time + self.step
        else:
            time = seconds(ts, self.origin, self.time_base)
        self.last_time = time
        return time


def seek_clip(container: Any, stream: Any, clip_start: float) -> None:
    """To the keyframe at or before ``clip_start`` (the file's start for a clip at 0)."""
    import av

    ts = stream.start_time or 0
    if clip_start > TOLERANCE_S:
        ts += int(Fraction(clip_start) / stream.time_base)
    try:
        container.seek(ts, stream=stream, backward=True)
    except av.error.FFmpegError as exc:
        # Raw elementary streams (.h264) have no index to seek by time; their start is byte 0.
        if clip_start > TOLERANCE_S:
            raise VideoError("unseekable", f"cannot seek to {clip_start:.3f} s: {exc}") from exc
        container.seek(0, unsupported_byte_offset=True)


def decoded_frames(
    container: Any,
    stream: Any,
    clip_start: float,
    fps: Fraction | None,
    errors: list[str],
    rewind: bool = False,
) -> Iterator[tuple[Any, float]]:
    """Every frame, with seconds from stream start, from the keyframe before ``clip_start`` on.

    ``rewind``: the container was read already. A decode error ends the stream (noted in
    ``errors``). If the demuxer's seek lands after ``clip_start`` (inexact indexes), or on a
    picture flagged as a keyframe that does not decode alone (FFmpeg marks what follows it
    corrupt: grey or green frames), decoding restarts from the beginning of the file."""
    import av

    origin = stream.start_time or 0
    if clip_start > TOLERANCE_S or rewind:  # a fresh container is at the start: no seek needed
        seek_clip(container, stream, clip_start)
    for attempt in (0, 1):
        times = FrameTimes(stream.time_base, origin, fps)
        try:
            for n, frame in enumerate(container.decode(stream)):
                t = times(frame)
                if n == 0 and attempt == 0 and clip_start > TOLERANCE_S and (
                        t > clip_start + TOLERANCE_S or getattr(frame, "is_corrupt", False)):
                    break  # seek overshot, or landed on a false keyframe: restart from the start
                yield frame, t
            else:
                return
        except av.error.FFmpegError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        seek_clip(container, stream, 0.0)
