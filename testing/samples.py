"""Sample inputs for a smoke run: small real videos plus the kinds of bad files real corpora hold.

``sg4v samples DIR`` writes them; the smoke config reads DIR. Every sample frame carries its
own frame index as a band of black and white blocks (see :func:`frame_image`), which the tests
use to check which frame a stage picked.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

INDEX_BITS = 12


def frame_image(index: int, width: int, height: int, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """An RGB frame showing ``index`` as 12 big black/white blocks along its top band."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = color if color is not None else ((index * 7) % 256, (index * 13) % 256, 128)
    block = width // INDEX_BITS
    band = max(8, height // 6)
    for bit in range(INDEX_BITS):
        img[:band, bit * block:(bit + 1) * block] = 255 if (index >> bit) & 1 else 0
    return img


def read_index(rgb: np.ndarray) -> int:
    """Decode the frame index drawn by :func:`frame_image`, at any resolution."""
    height, width = rgb.shape[:2]
    block = width / INDEX_BITS
    band = max(2, int(height / 6 * 0.6))
    value = 0
    for bit in range(INDEX_BITS):
        x0, x1 = int(bit * block + block * 0.25), int(bit * block + block * 0.75)
        if rgb[2:band, x0:x1].mean() > 127:
            value |= 1 << bit
    return value


def scene_frames(num_frames: int, width: int, height: int,
                 scenes: list[tuple[int, tuple[int, int, int]]] | None = None) -> Iterable[np.ndarray]:
    """Frames with their index drawn in; ``scenes`` = [(first frame, colour), ...] for hard cuts."""
    for i in range(num_frames):
        color = None
        for first, scene_color in scenes or []:
            if i >= first:
                color = scene_color
        yield frame_image(i, width, height, color)


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: Fraction | int | float = 30,
                codec: str = "libx264", pix_fmt: str = "yuv420p", options: dict | None = None) -> Path:
    """Encode RGB frames into a video file with PyAV."""
    import av

    path = Path(path)
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100000)
    with av.open(str(path), mode="w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate, options=options or {})
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = pix_fmt
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


#: Source captions of the samples, as a Panda-70M-style dataset would carry them. Two are
#: paraphrases of each other, so semantic dedup has something to catch; two have none, so the
#: captioner model runs on them.
SAMPLE_CAPTIONS = {
    "three_scenes.mp4": "A red screen turns green and then blue.",
    "three_scenes_again.mp4": "The screen is red, then it turns green, then blue.",
    "one_scene.mp4": "A plain green picture with a flickering band of squares at the top.",
    "moving.webm": None,
    "too_long.mp4": "A blue screen that stays still for more than two minutes.",
    "empty.mp4": None,
    "random_bytes.mp4": "Random noise.",
    "notes.mp4": "A text file.",
}


def write_samples(directory: str | Path) -> list[Path]:
    """Write the smoke-run inputs into ``directory`` (videos, broken files and a
    ``manifest.csv`` listing them with captions) and return the paths of the inputs."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ntsc = Fraction(30000, 1001)
    red, green, blue = (200, 40, 40), (40, 200, 40), (40, 40, 200)
    scenes = [(0, red), (120, green), (240, blue)]
    paths = [
        write_video(out / "three_scenes.mp4", scene_frames(360, 320, 240, scenes), fps=ntsc),
        write_video(out / "three_scenes_again.mp4", scene_frames(300, 288, 216, scenes), fps=25),
        write_video(out / "one_scene.mp4", scene_frames(150, 320, 180, [(0, green)]), fps=25),
        write_video(out / "moving.webm", scene_frames(96, 256, 144), fps=24, codec="libvpx-vp9"),
        write_video(out / "too_long.mp4", scene_frames(131, 64, 48, [(0, blue)]), fps=1),
    ]
    (out / "empty.mp4").write_bytes(b"")
    (out / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (out / "notes.mp4").write_text("this is a text file with a video extension\n")
    paths += [out / "empty.mp4", out / "random_bytes.mp4", out / "notes.mp4"]
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "caption"])
        for path in paths:
            writer.writerow([path.name, SAMPLE_CAPTIONS.get(path.name) or ""])
    os.sync()
    return paths
