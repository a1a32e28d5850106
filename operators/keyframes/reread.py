"""Re-read a few frames of a video at given times, at a chosen size, by seeking.

Used for keyframe images when the sampled frames were decoded small: seek to the keyframe
(I-frame) at or before each time, decode forward to the frame with the latest presentation time
<= the target, and convert that one frame to RGB at the target size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from operators.io import is_local, local_path, open_binary

#: Slack when comparing a frame's time with a target time measured from that same frame.
_EPS_S = 1e-4


def rotate_for_display(rgb: np.ndarray, rotation: int | float | None) -> np.ndarray:
    """Turn a decoded frame upright.

    ``rotation`` follows FFmpeg's display matrix (``av_display_rotation_get``, PyAV's
    ``VideoFrame.rotation``): degrees *counterclockwise* to rotate the decoded frame for display.
    A phone video tagged ``rotate=90`` has rotation -90 (or 270): turned 90 degrees clockwise.
    """
    if not rotation:
        return rgb
    quarter_turns = int(round(float(rotation) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


def fit_longest(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """Size with the longest side at most ``longest_side`` (never upscaled), even, aspect kept."""
    scale = min(1.0, longest_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def read_frames_at(
    uri: str,
    times_s: Sequence[float],
    longest_side: int,
    rotation: int | float | None = 0,
    display_size: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """RGB uint8 frames shown at ``times_s``, longest side at most ``longest_side``, upright.

    Times are seconds from the video stream's start time (``stream.start_time``), the clock
    ``clip_start`` and the sampler use. ``display_size`` (width, height as displayed, e.g. the
    probe's) fixes the aspect ratio for non-square pixels; by default the coded size is used.
    A target before the first frame gets the first frame; past the end, the last frame.
    """
    import av

    source = local_path(uri) if is_local(uri) else open_binary(uri)
    out: list[np.ndarray] = []
    try:
        with av.open(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            shown = display_size or _upright(
                stream.codec_context.width, stream.codec_context.height, rotation
            )
            width, height = _upright(
                *fit_longest(*shown, longest_side), rotation
            )  # back to coded orientation
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            for target in times_s:
                frame = _frame_at(container, stream, origin + float(target))
                if frame is None:
                    raise ValueError(f"no frame decoded near {target:.3f} s")
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
                out.append(rotate_for_display(rgb, rotation))
    finally:
        if not isinstance(source, str):
            source.close()
    return out


def _upright(width: int, height: int, rotation: int | float | None) -> tuple[int, int]:
    """Swap width and height for quarter turns (the same swap goes both ways)."""
    return (height, width) if int(round(float(rotation or 0) / 90.0)) % 2 else (width, height)


def _frame_at(container, stream, target: float):  # type: ignore[no-untyped-def]
    """The frame with the latest time <= target (seek backward to a keyframe, decode forward).
    When the seek lands on a picture flagged as a keyframe that does not decode alone (FFmpeg
    marks the frames after it corrupt), decode from the start of the file instead."""
    time_base = float(stream.time_base)
    container.seek(max(0, int((target + _EPS_S) / time_base)), stream=stream, backward=True, any_frame=False)
    best = _decode_to(container, stream, target, time_base)
    if best is not None and getattr(best, "is_corrupt", False):
        container.seek(0, stream=stream, backward=True, any_frame=False)
        best = _decode_to(container, stream, target, time_base)
    return best


def _decode_to(container, stream, target: float, time_base: float):  # type: ignore[no-untyped-def]
    best = None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        if best is not None and frame.pts * time_base > target + _EPS_S:
            break
        best = frame
        if frame.pts * time_base > target + _EPS_S:
            break  # the first frame decoded is already past the target (target before stream start)
    return best
