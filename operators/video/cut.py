"""Cut a span of a video into its own MP4 file, with PyAV.

Two ways, chosen by ``writer.clips``:

- :func:`cut_reencode`: frame-exact. The frames shown in ``[start, end)`` (the sampler's rule:
  the first frame at or after ``start``, times within 1 ms of a bound count as on it) are
  decoded and encoded with libx264; audio in the span is re-encoded as AAC. A frame keeps its
  time from the span's start, so keyframe timestamps of the row point at the same frames in
  the clip file.
- :func:`cut_copy`: no decoding. Packets are copied from the keyframe at or before ``start``;
  the file therefore starts up to one GOP early, and the start it really got is returned so the
  row can record it.

Times are seconds from the video stream's start time, the clock ``clip_start`` and the sampler
use. Both functions write a local file; the caller moves it to the output storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from operators.video.decode import TOLERANCE_S, decoded_frames, seek_clip
from operators.video.opening import VideoError, open_video, stream_origin, video_stream

logger = logging.getLogger(__name__)

#: Output time base for re-encoded clips: fine enough for every frame rate and for VFR.
_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class Cut:
    """What a cut produced: where the file starts (seconds on the source's clock), its length
    in seconds (from the file start to the end of its last frame), and how it was made."""

    start: float
    duration: float
    mode: str
    frames: int


def cut_reencode(uri: str, start: float, end: float, dest: str, *, crf: int = 18,
                 preset: str = "veryfast", rotation: int = 0) -> Cut:
    """Frames of ``[start, end)`` re-encoded into ``dest`` (an .mp4 path); see the module doc."""
    import av

    with open_video(uri) as (source, _), av.open(dest, "w", format="mp4",
                                                  options={"movflags": "+faststart"}) as out:
        stream = video_stream(source)
        stream.codec_context.thread_count = 1  # one core per task, as Ray schedules it
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        encoder = _video_encoder(out, stream.codec_context, fps, crf, preset, rotation)
        audio = _audio_plan(source, out)
        count, last_pts, last_t = 0, -1, start
        errors: list[str] = []
        for frame, t in span_frames(source, stream, start, end, fps, errors):
            pts = max(round((t - start) / _TIME_BASE), last_pts + 1)
            image = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
            image.pts, image.time_base = pts, _TIME_BASE
            out.mux(encoder.encode(image))
            count, last_pts, last_t = count + 1, pts, t
        if count == 0:
            raise VideoError("empty_clip", f"no frame between {start:.3f} s and {end:.3f} s"
                             + (f" ({errors[0]})" if errors else ""))
        out.mux(encoder.encode(None))
        if audio is not None:
            _copy_audio_reencoded(uri, audio, start, end)
    frame_s = float(1 / fps)
    return Cut(start=start, duration=min(end, last_t + frame_s) - start, mode="reencode", frames=count)


def span_frames(container: Any, stream: Any, start: float, end: float, fps: Fraction,
                errors: list[str]) -> Iterator[tuple[Any, float]]:
    """The decoded frames shown in ``[start, end)`` with their times.

    Some files index frames as keyframes that do not decode on their own (an MP4 sync sample
    on a non-IDR picture: FFmpeg flags what it decodes from there as corrupt, and it is grey or
    green). A clip must not start with such frames: when one comes before the span's first
    frame, decoding starts over from the beginning of the file."""
    for attempt in (0, 1):
        from_start = attempt == 1 or start <= TOLERANCE_S
        restart = False
        for frame, t in decoded_frames(container, stream, 0.0 if from_start else start, fps,
                                       errors, rewind=attempt == 1):
            if t < start - TOLERANCE_S:
                continue
            if frame.is_corrupt and not from_start:
                restart = True
                break
            if t >= end - TOLERANCE_S:
                return
            yield frame, t
        if not restart:
            return
        logger.info("frames after the seek to %.3f s do not decode cleanly; decoding from the "
                    "start of the file", start)


def _video_encoder(out: Any, coded: Any, fps: Fraction, crf: int, preset: str, rotation: int) -> Any:
    # 4:2:0 needs even sizes; an odd column or row is dropped rather than the clip refused.
    encoder = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
    encoder.width, encoder.height = coded.width // 2 * 2, coded.height // 2 * 2
    encoder.pix_fmt = "yuv420p"
    encoder.codec_context.time_base = _TIME_BASE
    encoder.codec_context.thread_count = 1  # the stage declares one CPU per task
    if rotation:
        encoder.set_display_rotation(rotation)
    return encoder


@dataclass
class _AudioPlan:
    out: Any
    stream_index: int
    encoder: Any


def _audio_plan(source: Any, out: Any) -> _AudioPlan | None:
    """An AAC output stream for the source's first audio stream, or None when it has none."""
    streams = list(source.streams.audio)
    if not streams or not streams[0].codec_context.sample_rate:
        return None
    src = streams[0]
    layout = src.codec_context.layout.name if src.codec_context.layout else "stereo"
    encoder = out.add_stream("aac", rate=src.codec_context.sample_rate, layout=layout)
    return _AudioPlan(out=out, stream_index=src.index, encoder=encoder)


def _copy_audio_reencoded(uri: str, plan: _AudioPlan, start: float, end: float) -> None:
    """The audio frames that start within ``[start, end)``, re-encoded. A second opening of the
    source keeps the video pass simple; the muxer interleaves within its delay window."""
    import av

    with open_video(uri) as (source, _):
        src = source.streams[plan.stream_index]
        origin = float(stream_origin(video_stream(source)))
        tb = src.time_base
        try:
            source.seek(int((origin + max(0.0, start - 1.0)) / tb), stream=src, backward=True)
        except av.error.FFmpegError:
            source.seek(0, stream=src)
        try:
            for frame in source.decode(src):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb) - origin
                if t < start - TOLERANCE_S:
                    continue
                if t >= end - TOLERANCE_S:
                    break
                frame.pts = None  # the encoder's own sample clock, from the clip's start
                plan.out.mux(plan.encoder.encode(frame))
        except av.error.FFmpegError as exc:  # damaged audio: the clip keeps what decoded
            logger.warning("%s: audio decoding stopped at an error: %s", uri, exc)
        plan.out.mux(plan.encoder.encode(None))


def cut_copy(uri: str, start: float, end: float, dest: str) -> Cut:
    """Packets from the keyframe at or before ``start`` up to ``end``, copied into ``dest``."""
    import av

    with open_video(uri) as (source, _), av.open(dest, "w", format="mp4",
                                                  options={"movflags": "+faststart"}) as out:
        stream = video_stream(source)
        streams = [stream, *source.streams.audio[:1]]
        outputs = {s.index: out.add_stream_from_template(s) for s in streams}
        origin_s = float(stream_origin(stream))
        seek_clip(source, stream, start)
        first: float | None = None  # source time of the keyframe the copy starts from
        offsets: dict[int, int] = {}
        count, last_t = 0, start
        for packet in source.demux(*streams):
            if packet.dts is None or packet.pts is None:
                continue  # flush packets
            t = float(packet.pts * packet.time_base) - origin_s
            video = packet.stream.index == stream.index
            if first is None:
                if not (video and packet.is_keyframe):
                    continue
                first = t
            if t >= end - TOLERANCE_S:
                if video and float(packet.dts * packet.time_base) - origin_s >= end:
                    break
                continue
            if t < first - TOLERANCE_S:
                continue  # audio from before the keyframe
            shift = offsets.setdefault(packet.stream.index,
                                       int((origin_s + first) / packet.time_base))
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = outputs[packet.stream.index]
            out.mux(packet)
            if video:
                count, last_t = count + 1, t
        if first is None or count == 0:
            raise VideoError("empty_clip", f"no keyframe at or before {start:.3f} s to copy from")
    if not _starts_clean(dest):
        raise ValueError(f"the keyframe at {first:.3f} s does not decode on its own")
    fps = stream.average_rate or Fraction(25)
    return Cut(start=first, duration=min(end, last_t + float(1 / fps)) - first, mode="copy",
               frames=count)


def _starts_clean(path: str) -> bool:
    """True when the first picture of ``path`` decodes without missing references."""
    import av

    with av.open(path) as container:
        for frame in container.decode(video=0):
            return not frame.is_corrupt
    return False
