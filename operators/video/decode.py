"""Sequential decoding for the sampler: frame times, seeking, and skipping unneeded frames.

Skipping: a non-reference frame (a B-frame nothing else predicts from) can be left undecoded
when no sampling target is near its timestamp: ``skip_frame = "NONREF"`` is switched on per
packet, from the packet's own timestamp, outside a window around each target and the clip's
bounds. On x264 clips this halves decode time; on MPEG-4 Part 2 it is 2-3x. The window is a
heuristic, so the sampler checks the result afterwards (:meth:`NonRefSkipper.verified`): the
frames chosen must be the ones a full decode would choose, else it decodes again in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from operators.video.opening import stream_origin

TOLERANCE_S = 1e-3


class FrameTimes:
    """FFmpeg's best-effort timestamp rule: trust pts unless it has gone backwards more often
    than dts (AVI with packed B-frames attaches pts in decode order)."""

    def __init__(self, time_base: Fraction, origin: Fraction, fps: Fraction | None) -> None:
        self.time_base, self.origin, self.fps = time_base, origin, fps
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = None
        self.last_time: Fraction | None = None
        self.used_dts = False

    def __call__(self, frame: Any) -> Fraction:
        pts, dts = frame.pts, frame.dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        ts = pts if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None) else dts
        self.used_dts |= ts is not pts
        if ts is None:  # no timestamps at all: count frames from the last known time
            step = 1 / self.fps if self.fps else Fraction(1, 25)
            time = Fraction(0) if self.last_time is None else self.last_time + step
        else:
            time = ts * self.time_base - self.origin
        self.last_time = time
        return time


class NonRefSkipper:
    """Decides per packet whether non-reference frames may be skipped; records packet times."""

    def __init__(self, start: float, end: float, every_s: float, fps: Fraction | None) -> None:
        self.start, self.end, self.every_s = start, end, every_s
        self.window = max(0.2, 6 / float(fps)) if fps else 0.5
        self.packet_times: list[float] = []
        self.reliable = True  # False once a packet or frame lacks its own pts

    def needed(self, t: float) -> bool:
        if t <= self.start + self.window or t >= self.end - self.window:
            return True
        k = round((t - self.start) / self.every_s)
        return abs(t - (self.start + k * self.every_s)) <= self.window

    def verified(self, chosen: list[float], select: Any) -> bool:
        """True when ``select`` over every packet's time picks the ``chosen`` times."""
        if not self.reliable:
            return False
        reference = [t for _, t in select((None, t) for t in sorted(self.packet_times))]
        return len(reference) == len(chosen) and all(
            abs(a - b) < 1e-9 for a, b in zip(reference, chosen, strict=True)
        )


def clip_end_estimate(container: Any, stream: Any, clip_end: float | None) -> float | None:
    if clip_end is not None:
        return clip_end
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def _frames(container: Any, stream: Any, skipper: NonRefSkipper | None) -> Iterator[Any]:
    if skipper is None:
        yield from container.decode(stream)
        return
    cc, tb, origin = stream.codec_context, stream.time_base, stream_origin(stream)
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end: drain everything
            cc.skip_frame = "DEFAULT"
        elif packet.pts is None:
            skipper.reliable = False
            cc.skip_frame = "DEFAULT"
        else:
            t = float(packet.pts * tb - origin)
            skipper.packet_times.append(t)
            cc.skip_frame = "DEFAULT" if skipper.needed(t) else "NONREF"
        yield from cc.decode(packet)


def decoded_frames(
    container: Any,
    stream: Any,
    clip_start: float,
    fps: Fraction | None,
    errors: list[str],
    skipper: NonRefSkipper | None = None,
) -> Iterator[tuple[Any, float]]:
    """(frame, seconds from stream start) from the keyframe before ``clip_start`` on.

    A decode error ends the stream (noted in ``errors``). If the demuxer's seek lands after
    ``clip_start`` (inexact indexes), decoding restarts from the beginning of the file."""
    import av

    tb, origin = stream.time_base, stream_origin(stream)
    seek_to = clip_start if clip_start > TOLERANCE_S else None
    while True:
        if seek_to is not None:
            container.seek(int((Fraction(seek_to) + origin) / tb), stream=stream, backward=True)
        times = FrameTimes(tb, origin, fps)
        first = True
        try:
            for frame in _frames(container, stream, skipper):
                t = float(times(frame))
                if skipper is not None and (times.used_dts or not skipper.reliable):
                    skipper.reliable = False
                    return  # skipping needs trustworthy pts; the caller decodes again in full
                if first and seek_to is not None and t > clip_start + TOLERANCE_S:
                    break  # seek overshot: restart from the start of the file
                first = False
                yield frame, t
            else:
                return
        except av.error.FFmpegError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        if not (first and seek_to is not None):
            return
        container.seek(stream.start_time or 0, stream=stream, backward=True)
        stream.codec_context.flush_buffers()
        seek_to = None
        if skipper is not None:
            skipper.packet_times.clear()
