"""Matroska/WebM files whose audio track outlasts the video: the video's own length counts.

The container's duration covers every stream; the video stream states its own only as a
``DURATION`` tag. Such a file is valid (kept, with the video's duration); a file is truncated
only when its video data ends before what the video stream claims.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from operators.video import probe as probe_module
from operators.video.opening import VideoError
from operators.video.probe import probe_video

FPS = 25


def make_av(path: Path, video_s: float, audio_s: float, vcodec: str, acodec: str) -> Path:
    """A file with a video track of ``video_s`` and an audio track of ``audio_s`` seconds,
    muxed interleaved in time order as a recorder writes them."""
    import av

    rate = 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream(vcodec, rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(acodec, rate=rate)
        samples = audio.codec_context.frame_size or 1152
        fmt = audio.codec_context.format.name
        n_video, n_audio = int(video_s * FPS), int(audio_s * rate / samples) + 1
        vi = ai = 0
        while vi < n_video or ai < n_audio:
            if vi < n_video and (ai >= n_audio or vi / FPS <= ai * samples / rate):
                image = np.full((48, 64, 3), (vi * 7) % 256, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = vi
                packets, vi = video.encode(frame), vi + 1
            else:
                silence = np.zeros((1, samples), dtype=np.float32 if "flt" in fmt else np.int16)
                frame = av.AudioFrame.from_ndarray(silence, format=fmt, layout="mono")
                frame.sample_rate, frame.pts = rate, ai * samples
                packets, ai = audio.encode(frame), ai + 1
            for packet in packets:
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return path


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("long_audio")
    return {
        "mkv": make_av(d / "a.mkv", 6.0, 7.5, "libx264", "aac"),
        "webm": make_av(d / "a.webm", 6.0, 7.5, "libvpx-vp9", "libopus"),
    }


@pytest.mark.parametrize("kind", ["mkv", "webm"])
def test_audio_longer_than_video_is_kept_with_the_video_duration(long_audio, kind):
    import av

    with av.open(str(long_audio[kind])) as container:  # the situation the probe must handle
        assert container.duration / 1e6 == pytest.approx(7.5, abs=0.1)
        assert container.streams.video[0].duration is None
    info = probe_video(str(long_audio[kind]))
    assert info.file_duration == pytest.approx(6.0, abs=1e-6)
    assert info.num_frames == 150 and info.fps == FPS


def test_without_a_duration_tag_the_file_data_is_held_to_the_container(long_audio, monkeypatch):
    # Muxers that write no per-track DURATION tag leave only the container's length: the audio
    # reaches it, so nothing is missing, and the video's duration is measured from its packets.
    monkeypatch.setattr(probe_module, "stream_duration", lambda stream: None)
    info = probe_video(str(long_audio["mkv"]))
    assert info.file_duration == pytest.approx(6.0, abs=1e-6) and info.num_frames == 150


@pytest.mark.parametrize("tagless", [False, True])
def test_cut_matroska_is_still_truncated(long_audio, tmp_path, monkeypatch, tagless):
    data = long_audio["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    if tagless:
        monkeypatch.setattr(probe_module, "stream_duration", lambda stream: None)
    with pytest.raises(VideoError) as info:
        probe_video(str(cut))
    assert info.value.reason == "corrupt" and "truncated" in info.value.detail
    expected = "packets of all streams end" if tagless else "video packets end"
    assert expected in info.value.detail and "of the declared" in info.value.detail


class _Stream:
    def __init__(self, metadata: dict[str, str], duration: int | None = None) -> None:
        self.metadata, self.duration, self.time_base = metadata, duration, None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"DURATION": "00:00:06.000000000"}, 6.0),
        ({"DURATION-eng": "01:02:03.500"}, 3723.5),
        ({"duration": "00:00:00.000000000"}, None),  # placeholder of an unfinished recording
        ({"DURATION": "garbage"}, None),
        ({}, None),
    ],
)
def test_stream_duration_reads_the_matroska_tag(metadata, expected):
    assert probe_module.stream_duration(_Stream(metadata)) == expected


def test_probe_row_and_sampled_frames_use_the_video_duration(long_audio):
    from operators.base import object_column
    from operators.video.probe import ProbeVideo
    from operators.video.sample import sample_frames

    uris = [str(long_audio["mkv"]), str(long_audio["webm"])]
    out = ProbeVideo()({"video_id": np.array(["mkv", "webm"]), "uri": np.array(uris),
                        "clip_start": object_column([None, None]), "clip_end": object_column([None, None])})
    assert list(out.get("reject_reason", [None, None])) == [None, None]  # the column comes with a rejection
    assert list(out["duration"]) == pytest.approx([6.0, 6.0]) and list(out["num_frames"]) == [150, 150]
    frames, times = sample_frames(uris[0])
    assert times[:3] == pytest.approx([0.0, 2.0, 4.0]) and times[-1] <= 6.0
