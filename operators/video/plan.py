"""Planned decoding: choose the frames from packet times, then decode only what they need.

Each packet carries one frame and its presentation time, so the time of every frame is known
without decoding: from the demuxer's index where it holds presentation times (AVI without
B-frames: reading it costs nothing), else from a demux pass over the clip (reads packets,
decodes nothing: 1-2 % of the cost of decoding H.264). The selection runs on these times, so
the frames to keep are exactly those a full decode would choose. The decode pass then demuxes
the clip and decodes, for each chosen frame, from the keyframe before it up to it; GOPs between
targets are not decoded at all. In that stretch only reference frames and the chosen frame
are decoded (``skip_frame = "NONREF"`` elsewhere: nothing is predicted from a non-reference
frame). The packets must arrive as planned and each chosen frame must come out with its
planned pts, else the caller decodes the clip in full (``operators.video.decode``).

Not planned: packets without pts, repeated pts, and AVI with B-frames (packed B-frames: pts
in decode order, frame times follow dts there, see ``decode.FrameTimes``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from operators.video.decode import TOLERANCE_S, seconds, seek_clip

#: ``select(iterable of (item, seconds)) -> iterator of kept (item, seconds)``
Select = Callable[[Iterable[tuple[Any, float]]], Iterator[tuple[Any, float]]]


@dataclass
class DecodePlan:
    """Packets to decode, by pts: ``decode[pts] = (chosen frame?, pts of the next packet of the
    stretch, None at its end)``; a stretch starts at a keyframe and the decoder is drained
    after its last packet."""

    decode: dict[int, tuple[bool, int | None]]
    starts: set[int]
    times: dict[int, float]  # chosen pts -> seconds from stream start
    last_pts: int


def plan_decode(
    container: Any,
    stream: Any,
    start: float,
    end: float | None,
    every_s: float,
    max_frames: int,
    select: Select,
) -> DecodePlan | None:
    """The plan for a clip, or None where packet times cannot be trusted."""
    if "avi" in container.format.name and stream.codec_context.has_b_frames:
        return None  # B-frames in AVI come packed, with pts in decode order: not even demuxed
    packets = _indexed(container, stream) or _demuxed(container, stream, start, end, every_s, max_frames)
    if packets is None:
        return None
    pts, keys, complete = packets
    if not pts or len(set(pts)) != len(pts):
        return None
    origin, tb = stream.start_time or 0, stream.time_base
    times = [seconds(p, origin, tb) for p in pts]
    if start > TOLERANCE_S and min(times) > start + TOLERANCE_S:
        return None  # the seek overshot the clip's start
    order = sorted(range(len(pts)), key=times.__getitem__)
    chosen = sorted(i for i, _ in select((i, times[i]) for i in order))
    if not chosen or (not complete and len(chosen) < max_frames):
        return None  # nothing in the clip, or reading stopped short of max_frames (VFR gaps)
    return _stretches(pts, keys, chosen, times)


def _indexed(container: Any, stream: Any) -> tuple[list[int], list[int], bool] | None:
    """Times from the AVI index: there, without decoder delay, pts = the index timestamp."""
    if "avi" not in container.format.name:
        return None
    entries = stream.index_entries
    if not len(entries) or any(e.size == 0 or e.is_discard for e in entries):
        return None  # an empty chunk repeats the previous frame: no frame, no time
    pts = [e.timestamp for e in entries]
    return pts, [i for i, e in enumerate(entries) if e.is_keyframe], True


def _demuxed(
    container: Any, stream: Any, start: float, end: float | None, every_s: float, max_frames: int
) -> tuple[list[int], list[int], bool] | None:
    """Times from a demux pass; it stops ``max_frames`` targets past ``start`` (a 10-hour
    stream is not read to its end): the third value says whether it read the whole clip."""
    import av

    origin, tb = stream.start_time or 0, stream.time_base
    avi = "avi" in container.format.name
    end = float("inf") if end is None else end
    horizon = start + (max_frames + 1) * every_s
    cut = min(end, horizon)
    pts: list[int] = []
    keys: list[int] = []
    keys_past_cut = 0
    seek_clip(container, stream, start)
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                if packet.size == 0:
                    continue  # the flush packet at the end of the stream
                return None
            if avi and pts and packet.pts <= pts[-1]:
                return None  # packed B-frames the codec parameters did not announce
            if packet.is_keyframe:
                # Frames after the second keyframe past the cut are all later than the cut,
                # even with open GOPs (leading frames precede their keyframe, not the one before).
                keys_past_cut += seconds(packet.pts, origin, tb) >= cut
                if keys_past_cut == 2:
                    break
                keys.append(len(pts))
            pts.append(packet.pts)
    except av.error.FFmpegError:
        return None
    return pts, keys, keys_past_cut < 2 or end <= horizon


def _stretches(pts: list[int], keys: list[int], chosen: list[int], times: list[float]) -> DecodePlan:
    spans: list[list[int]] = []
    for c in chosen:
        k = bisect.bisect_right(keys, c) - 1
        while k > 0 and times[keys[k]] > times[c]:
            k -= 1  # a leading frame of an open GOP: it references the GOP before
        first = keys[k] if k >= 0 else 0
        if spans and first <= spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([first, c])
    wanted = set(chosen)
    decode = {pts[i]: (i in wanted, pts[i + 1] if i < b else None) for a, b in spans for i in range(a, b + 1)}
    chosen_times = {pts[c]: times[c] for c in chosen}
    return DecodePlan(decode, {pts[a] for a, _ in spans}, chosen_times, pts[spans[-1][1]])


def planned_frames(
    container: Any, stream: Any, start: float, plan: DecodePlan
) -> Iterator[tuple[Any, float]]:
    """The chosen frames, in time order, as the plan decodes them. Stops early (fewer frames
    than planned) where the packets or the decoder's output differ from the plan."""
    cc = stream.codec_context
    in_order = iter(sorted(plan.times.values()))
    due = next(in_order)  # the time of the next chosen frame to give out
    expected: int | None = None  # the next packet of the stretch being decoded
    seek_clip(container, stream, start)
    try:
        for packet in container.demux(stream):
            if expected is not None and packet.pts != expected:
                return
            step = plan.decode.get(packet.pts)
            if step is None:
                continue  # a packet no chosen frame needs
            if expected is None and not (packet.pts in plan.starts and packet.is_keyframe):
                return  # a stretch must start at a keyframe, the one planned
            keep, expected = step
            cc.skip_frame = "DEFAULT" if keep else "NONREF"
            frames = cc.decode(packet)
            if expected is None:
                frames += cc.decode(None)  # the chosen frames still held for reordering
                cc.flush_buffers()
            for frame in frames:
                t = plan.times.get(frame.pts)
                if t is None:
                    continue
                if t != due:
                    return  # out of order or repeated: the caller's full decode goes on from here
                yield frame, t
                due = next(in_order, None)
            if packet.pts == plan.last_pts:
                return
    finally:
        cc.skip_frame = "DEFAULT"
