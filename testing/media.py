"""Generated test videos whose frames carry their own frame index.

Each frame shows its index as 12 bits, one big black or white block per bit along the top
row, so the index survives lossy compression and resizing; ``read_index`` decodes it back.
The rest of the frame is a colour that changes with the index, or a fixed scene colour when
``scenes`` is given (for scene-cut tests).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# One drawing of the frame index for the package's samples and the tests.
from testing.samples import INDEX_BITS as BITS  # noqa: E402
from testing.samples import frame_image, read_index  # noqa: E402

__all__ = ["BITS", "frame_image", "read_index", "make_video", "make_audio"]


def make_video(
    path: str | Path,
    *,
    num_frames: int = 60,
    fps: Fraction | int | float = 30,
    width: int = 320,
    height: int = 240,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    scenes: list[tuple[int, tuple[int, int, int]]] | None = None,
    rotation: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a video whose frame ``i`` shows index ``i``.

    ``scenes``: list of (first frame index, RGB colour) for scene cuts.
    ``pts`` with ``time_base``: explicit presentation times (variable frame rate).
    ``rotation``: counter-clockwise degrees written as display-matrix side data (as
    ``VideoFrame.rotation`` reads it back). ``width`` x ``height`` is then the size as displayed:
    the coded frames are stored turned the other way, as a phone held sideways records them, so
    a player (or the sampler) that applies the rotation shows ``frame_image`` upright.
    ``options``: muxer options, e.g. ``{"movflags": "faststart"}``.
    """
    import av

    path = Path(path)
    fps = Fraction(fps).limit_denominator(100000) if not isinstance(fps, Fraction) else fps
    turns = (rotation or 0) // 90 % 4
    coded_w, coded_h = (height, width) if turns % 2 else (width, height)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = coded_w
        stream.height = coded_h
        stream.pix_fmt = pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if time_base is not None:
            stream.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            color = None
            if scenes:
                for first, scene_color in scenes:
                    if i >= first:
                        color = scene_color
            image = frame_image(i, width, height, color)
            if turns:
                image = np.ascontiguousarray(np.rot90(image, -turns))
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_audio(path: str | Path, *, seconds: float = 1.0, codec: str = "aac", rate: int = 44100) -> Path:
    """Write an audio-only file (silence), e.g. ``.m4a`` with aac or ``.mp2`` with mp2."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        samples = stream.codec_context.frame_size or 1152
        fmt = stream.codec_context.format.name
        for i in range(int(seconds * rate / samples) + 1):
            silence = np.zeros((1, samples), dtype=np.float32 if "flt" in fmt else np.int16)
            frame = av.AudioFrame.from_ndarray(silence, format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = i * samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
