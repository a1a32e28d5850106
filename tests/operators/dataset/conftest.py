"""A finished output with real media: whole-file videos (one of them an AVI) and one span of a
longer video with its clip file, as the clip_files stage leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.video.clips import clip_file_path
from operators.video.cut import cut_reencode
from testing.media import make_video
from tests.ray_jobs.fake_output import UNCAPTIONED, VIDEOS, write_output

FPS = 10
#: The span of ``long.mp4`` (20 s) that the row ``clip.7`` is.
SPAN = (10.0, 16.0)


def write_media_output(folder: Path, *, clip_file: bool = True) -> Path:
    """The fake output of ``tests.ray_jobs.fake_output`` with its videos made real."""
    media = folder.parent / f"{folder.name}-media"
    media.mkdir(parents=True)
    rows, clips = [], []
    for row in VIDEOS:
        row = {**row, "clip_path": None, "clip_file_start": None}
        if row["clip_start"] is None:
            name = "beta.avi" if row["video_id"] == "beta" else f"{row['video_id']}.mp4"
            codec = "mpeg4" if name.endswith(".avi") else "libx264"
            row["uri"] = str(make_video(media / name, num_frames=round(row["duration"] * FPS), fps=FPS,
                                        width=64, height=48, codec=codec))
            row["file_duration"] = row["duration"]
        else:
            row["uri"] = str(make_video(media / "long.mp4", num_frames=20 * FPS, fps=FPS, width=64,
                                        height=48, gop=25))
            row["file_duration"] = 20.0
            if clip_file:
                row["clip_path"], row["clip_file_start"] = clip_file_path(row["video_id"]), SPAN[0]
                clips.append(row)
        rows.append(row)
    write_output(folder, rows)
    for row in clips:
        (folder / row["clip_path"]).parent.mkdir(parents=True, exist_ok=True)
        cut_reencode(row["uri"], *SPAN, str(folder / row["clip_path"]))
    return folder


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return write_media_output(tmp_path_factory.mktemp("exports") / "out")


KEPT = sorted(v["video_id"] for v in VIDEOS)
DURATIONS = {v["video_id"]: v["duration"] for v in VIDEOS}
__all__ = ["DURATIONS", "KEPT", "SPAN", "UNCAPTIONED", "write_media_output"]


def decoded_duration(source) -> float:  # a path or a binary file object
    """Seconds of video PyAV decodes: from the first frame to the end of the last one."""
    import av

    with av.open(source) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * f.time_base) for f in container.decode(stream) if f.pts is not None]
        rate = stream.average_rate or stream.guessed_rate
    return max(times) - min(times) + float(1 / rate)
