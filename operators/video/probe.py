"""Probe: what a video is (duration, exact frame rate, size, rotation, codec, frame count).

Containers lie or stay silent: Ogg/Theora reports a frame rate of 0, Matroska/WebM carry no
frame count (and give the video's duration only as a tag), a truncated file still declares its
full length. The probe trusts the container
where it speaks, and otherwise measures: it demuxes the packets (reading the file, no decoding)
to count frames and find the real end, and decodes only where packets carry no timestamps.
One pass over the packets also decodes the first frame, which proves the stream decodes and
gives the rotation (display matrix side data).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import Field

from operators.base import Batch, Operator, Resources, cell
from operators.config import StrictModel
from operators.dataset.schema import SOURCE_BYTES
from operators.io import holding, open_binary, ranged_member
from operators.video.opening import (
    VideoError,
    display_size,
    normalize_rotation,
    open_video,
    stream_origin,
    video_stream,
)

logger = logging.getLogger(__name__)

#: Common broadcast rates; a rate measured from millisecond timestamps (Matroska) snaps to
#: one of them when within 0.1 %, so 29.97 comes back as 30000/1001, not 2997/100.
_STANDARD_RATES = tuple(
    Fraction(n, d)
    for n, d in [
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (120, 1),
        (15, 1),
        (12, 1),
        (10, 1),
    ]
)
#: A file whose packets end this much before its declared duration is truncated.
_TRUNCATION_SLACK_S = 0.5
_MAX_PACKETS_BEFORE_FIRST_FRAME = 64


class ProbeConfig(StrictModel):
    max_source_pixels: int = Field(
        8192 * 8192,
        gt=0,
        description="Reject ('too_large') a stream whose declared frame has more pixels than this, "
        "before decoding anything: one 16k x 16k frame is 400 MB of YUV.",
    )
    max_source_bytes: int = Field(
        1 << 30,
        gt=0,
        description="Reject ('too_large') a tar-shard member larger than this before reading it: "
        "the probe reads a member whole (one range read, never a scan of the shard) and the row "
        "carries its bytes (`source_bytes`) to the stages that open the video again (sampling, "
        "the keyframe re-read, clip files), so the shard is read once; this bounds the memory "
        "of a row. Plain files are streamed by each stage and not limited.",
    )
    decode_fallback: bool = Field(
        True,
        description="Where the container gives no frame rate, duration or frame count, measure "
        "them from packet timestamps (and by decoding where packets have none). "
        "Off: such videos are rejected as 'corrupt'.",
    )
    scan_packets: bool = Field(
        True,
        description="Always demux every packet (reads the whole file, decodes nothing) to catch "
        "truncated files and containers that overstate their length. Off: scan only "
        "where the container is silent.",
    )


@dataclass(frozen=True)
class VideoInfo:
    """What the probe learned about one file. Times in seconds from the stream's start."""

    file_duration: float
    fps: Fraction
    width: int  # as displayed: rotation and non-square pixels applied
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # counter-clockwise degrees to turn decoded frames upright: 0/90/180/270
    codec: str
    num_frames: int
    size_bytes: int


@dataclass
class _PacketScan:
    count: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    end_ts: int | None = None  # last timestamp + that packet's duration
    untimed: int = 0
    # Over every scanned stream (audio too), in seconds: where the file's data starts and ends.
    data_first_s: float | None = None
    data_end_s: float | None = None
    error: str = ""
    rotation: int | None = None
    decoded_first: bool = False


def _positive(rate: Any) -> Fraction | None:
    return Fraction(rate) if rate is not None and rate > 0 else None


_TAG_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def stream_duration(stream: Any) -> float | None:
    """The video stream's own claim of its length: the stream header's duration, else the
    per-track ``DURATION`` tag that Matroska/WebM muxers (FFmpeg, mkvmerge) write in place of
    one. None when the stream says nothing (then only the container's figure is left, and it
    covers every stream: an audio track that outlasts the video lengthens it)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    for key, value in (stream.metadata or {}).items():
        if key.upper().split("-")[0] != "DURATION":  # also 'DURATION-eng'
            continue
        match = _TAG_DURATION.match(str(value).strip())
        if match:
            hours, minutes, seconds = match.groups()
            duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            return duration if duration > 0 else None
    return None


def declared_timing(container: Any, stream: Any) -> tuple[Fraction | None, float | None, int | None]:
    """(fps, duration s, frame count) as the container states them; None where silent or 0."""
    fps = _positive(stream.average_rate) or _positive(stream.guessed_rate)
    duration = stream_duration(stream)
    if duration is None and container.duration and container.duration > 0:
        duration = container.duration / 1_000_000
    return fps, duration, (stream.frames or None)


def snap_rate(rate: Fraction) -> Fraction:
    for standard in _STANDARD_RATES:
        if abs(rate - standard) <= standard / 1000:
            return standard
    return rate.limit_denominator(1001)


def _scan(container: Any, stream: Any, stop_after_first_frame: bool, all_streams: bool = False) -> _PacketScan:
    """Demux packets (counting them, tracking timestamps); decode only until one frame comes out.

    ``all_streams``: also demux the other streams (no decoding) to learn where the file's data
    ends, for files whose only declared length is the container's."""
    import av

    scan = _PacketScan()
    stream.codec_context.thread_count = 1  # one frame wanted: no frame-threading delay
    streams = list(container.streams) if all_streams else [stream]
    try:
        for packet in container.demux(streams):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # the flush packet at end of stream
            _track_data(scan, packet)
            if packet.stream.index != stream.index:
                continue
            scan.count += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                scan.untimed += 1
            else:
                scan.first_ts = ts if scan.first_ts is None else min(scan.first_ts, ts)
                scan.last_ts = ts if scan.last_ts is None else max(scan.last_ts, ts)
                end = ts + (packet.duration or 0)
                scan.end_ts = end if scan.end_ts is None else max(scan.end_ts, end)
            if not scan.decoded_first and scan.count <= _MAX_PACKETS_BEFORE_FIRST_FRAME:
                _try_first_frame(stream, packet, scan)
                if scan.decoded_first and stop_after_first_frame:
                    return scan
        if not scan.decoded_first:
            _try_first_frame(stream, None, scan)  # drain the decoder's delay buffer
    except av.error.FFmpegError as exc:
        scan.error = f"demux error after {scan.count} packets: {exc}"
    return scan


def _track_data(scan: _PacketScan, packet: Any) -> None:
    ts = packet.pts if packet.pts is not None else packet.dts
    tb = packet.time_base or packet.stream.time_base
    if ts is None or not tb:
        return
    first, end = float(ts * tb), float((ts + (packet.duration or 0)) * tb)
    scan.data_first_s = first if scan.data_first_s is None else min(scan.data_first_s, first)
    scan.data_end_s = end if scan.data_end_s is None else max(scan.data_end_s, end)


def _try_first_frame(stream: Any, packet: Any, scan: _PacketScan) -> None:
    import av

    try:
        frames = stream.codec_context.decode(packet)
    except av.error.FFmpegError as exc:
        scan.error = f"decode error: {exc}"
        return
    if frames:
        scan.decoded_first = True
        scan.error = ""
        scan.rotation = normalize_rotation(frames[0].rotation)


def _decoded_timing(container: Any, stream: Any) -> tuple[int, Fraction | None, float | None]:
    """Last resort for packets without timestamps: decode everything, read frame times.
    Streams that cannot seek back (raw elementary streams) are not measured."""
    import av

    try:
        container.seek(0)
    except av.error.FFmpegError:
        return 0, None, None
    count, first, last = 0, None, None
    for frame in container.decode(stream):
        count += 1
        if frame.time is not None:
            first = frame.time if first is None else min(first, frame.time)
            last = frame.time if last is None else max(last, frame.time)
    if count < 2 or first is None or last is None or last <= first:
        return count, None, None
    fps = snap_rate(Fraction(count - 1) / Fraction(last - first).limit_denominator(10**9))
    return count, fps, float(last - first) + float(1 / fps)


_REFUSED_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")


def refused_frame_size(uri: str) -> tuple[int, int] | None:
    """The frame size a header declares when FFmpeg refuses it (it does from 16384 x 16384 up,
    and then reports no size at all): read from FFmpeg's log while opening the file again."""
    import av
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, open_video(uri):
            pass
    except VideoError:
        return None
    finally:
        av.logging.set_level(level)
    for _, _, message in logs:
        match = _REFUSED_SIZE.search(message)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def check_member_size(uri: str, config: ProbeConfig) -> None:
    """``too_large`` for a tar member over ``probe.max_source_bytes``, before reading it."""
    held = ranged_member(uri)
    if held is not None and held[2] > config.max_source_bytes:
        raise VideoError("too_large", f"tar member of {held[2]} bytes > probe.max_source_bytes "
                         f"{config.max_source_bytes}: {uri[:300]}")


def read_member(uri: str, config: ProbeConfig) -> bytes | None:
    """A ranged tar member's bytes (one range read, after the size check), to be handed on to
    the later stages in ``source_bytes``; None for any other URI (read where it lies)."""
    if ranged_member(uri) is None:
        return None
    check_member_size(uri, config)
    try:
        with open_binary(uri) as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise VideoError("unreadable", f"{type(exc).__name__}: {exc}") from exc


def probe_video(uri: str, config: ProbeConfig | None = None) -> VideoInfo:
    """Probe one file; raises :class:`VideoError` with a precise reason for bad input."""
    import av

    config = config or ProbeConfig()
    check_member_size(uri, config)
    with open_video(uri) as (container, size):
        stream = video_stream(container)
        cc = stream.codec_context
        width, height = cc.width or stream.width, cc.height or stream.height
        if not width or not height:
            refused = refused_frame_size(uri)
            if refused is not None and refused[0] * refused[1] > config.max_source_pixels:
                raise VideoError(
                    "too_large",
                    f"{refused[0]}x{refused[1]} declared (FFmpeg refuses frames this large) "
                    f"> max_source_pixels={config.max_source_pixels}",
                )
            raise VideoError("corrupt", f"no usable frame size in the header ({cc.name})")
        if width * height > config.max_source_pixels:
            raise VideoError("too_large", f"{width}x{height} > max_source_pixels={config.max_source_pixels}")
        fps, duration, frames = declared_timing(container, stream)
        # The container's length covers every stream, so the video's own data is held to it
        # only through the file's data as a whole; the video's duration is then measured.
        whole_file = duration is not None and stream_duration(stream) is None
        silent = fps is None or duration is None or frames is None
        if silent and not config.decode_fallback:
            raise VideoError(
                "corrupt", "container gives no frame rate/duration/frame count and decode_fallback is off"
            )
        scanning = config.scan_packets or silent
        scan = _scan(container, stream, stop_after_first_frame=not scanning, all_streams=whole_file and scanning)
        if not scan.decoded_first:
            raise VideoError("corrupt", scan.error or "no frame could be decoded")
        tb, origin = stream.time_base, stream_origin(stream)
        if scan.end_ts is not None and scanning:
            measured_end = float(scan.end_ts * tb - origin)
            _check_truncation(scan, measured_end, duration, whole_file)
            if fps is None and scan.count > 1 and scan.last_ts > scan.first_ts:
                fps = snap_rate(Fraction(scan.count - 1) / ((scan.last_ts - scan.first_ts) * tb))
            if duration is None or whole_file:
                duration = measured_end
        if frames is None and scan.count and (config.scan_packets or silent):
            frames = scan.count
        if duration is None and fps is not None and scan.count and scan.untimed == scan.count:
            # An elementary stream (raw .h264): no timestamps at all, one packet per frame at
            # the demuxer's rate. Counting is exact; decoding it all could take hours.
            duration = float(scan.count / fps)
        if fps is None or duration is None:
            try:
                count, fps_d, duration_d = _decoded_timing(container, stream)
            except av.error.FFmpegError as exc:
                raise VideoError("corrupt", f"decode error: {exc}") from exc
            fps, duration, frames = fps or fps_d, duration or duration_d, frames or count
        if fps is None or duration is None or duration <= 0:
            raise VideoError("corrupt", "no frame rate or duration can be derived")
        rotation = scan.rotation or 0
        sar = _positive(stream.sample_aspect_ratio)
        shown_w, shown_h = display_size(width, height, rotation, sar)
        return VideoInfo(
            file_duration=float(duration),
            fps=fps,
            width=shown_w,
            height=shown_h,
            coded_width=width,
            coded_height=height,
            rotation=rotation,
            codec=cc.name,
            num_frames=int(frames or round(duration * fps)),
            size_bytes=size,
        )


def _check_truncation(scan: _PacketScan, video_end: float, declared: float | None, whole_file: bool) -> None:
    """``corrupt`` when the data ends well before the declared length: the video's packets
    against the video stream's claim, or, when only the container declares a length, the
    packets of all streams against it (a video shorter than its audio track is no damage)."""
    if declared is None:
        return
    end, what = video_end, "video packets end"
    if whole_file and scan.data_end_s is not None:
        end, what = scan.data_end_s - (scan.data_first_s or 0.0), "packets of all streams end"
    if end < declared - max(_TRUNCATION_SLACK_S, 0.05 * declared):
        raise VideoError(
            "corrupt",
            f"truncated: {what} at {end:.2f} s of the declared {declared:.2f} s "
            f"({scan.error or 'early end of file'})",
        )


def clip_range(info: VideoInfo, clip_start: float | None, clip_end: float | None) -> tuple[float, float]:
    """The clip's (start, end) in the file, clamped to it; ``bad_clip_range`` if empty."""
    start = float(clip_start or 0.0)
    end = info.file_duration if clip_end is None else min(float(clip_end), info.file_duration)
    if start < 0 or start >= info.file_duration:
        raise VideoError(
            "bad_clip_range", f"clip_start={start} outside the file (0..{info.file_duration:.3f} s)"
        )
    if end <= start:
        raise VideoError("bad_clip_range", f"clip_end={clip_end} <= clip_start={start}")
    return start, end


class ProbeVideo(Operator):
    """Probe each row's video and clip; reject unreadable, corrupt, oversized or empty ones."""

    name: ClassVar[str] = "probe"
    opens_source: ClassVar[bool] = True
    input_columns: ClassVar[tuple[str, ...]] = ("uri", "clip_start", "clip_end")
    output_columns: ClassVar[tuple[str, ...]] = (
        "duration",
        "file_duration",
        "fps",
        "fps_num",
        "fps_den",
        "width",
        "height",
        "rotation",
        "codec",
        "num_frames",
        "size_bytes",
        SOURCE_BYTES,
    )

    def __init__(self, config: ProbeConfig | None = None, resources: Resources | None = None) -> None:
        super().__init__(config or ProbeConfig(), resources)

    def default_resources(self) -> Resources:
        return Resources(num_cpus=1.0, batch_size=16)

    def __call__(self, batch: Batch) -> Batch:
        return self.map_rows(batch, lambda i: self._probe_row(batch, i))

    def _probe_row(self, batch: Batch, i: int) -> dict[str, Any]:
        uri = str(batch["uri"][i])
        data = read_member(uri, self.config)
        with holding(uri, data):
            info = probe_video(uri, self.config)
        start, end = clip_range(info, _seconds(cell(batch, "clip_start", i)),
                                _seconds(cell(batch, "clip_end", i)))
        return {
            "duration": end - start,
            "file_duration": info.file_duration,
            "fps": float(info.fps),
            "fps_num": info.fps.numerator,
            "fps_den": info.fps.denominator,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "codec": info.codec,
            "num_frames": info.num_frames,
            "size_bytes": info.size_bytes,
            SOURCE_BYTES: data,
        }


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
