import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ray_jobs.samples import scene_frames, write_samples, write_video

REPO = Path(__file__).resolve().parents[2]
REAL_VIDEOS = REPO / ".cache" / "real_videos"


def sg4v(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad files a real corpus holds; returns file name -> the stage that must reject it."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_video(folder / "tmp_good.mp4", scene_frames(60, 160, 120), fps=30)
    data = good.read_bytes()
    good.unlink()
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "random.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "text.mp4").write_text("not a video\n" * 50)
    write_audio_only(folder / "audio_only.mp4")
    (folder / "dangling.mp4").symlink_to(folder / "does_not_exist.mp4")
    return {"zero.mp4": "probe", "random.mp4": "probe", "truncated.mp4": "probe",
            "text.mp4": "probe", "audio_only.mp4": "probe", "dangling.mp4": "probe"}


def write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Generated samples, real videos from Debian packages, and bad inputs, in one folder."""
    folder = tmp_path_factory.mktemp("corpus")
    write_samples(folder)
    if REAL_VIDEOS.is_dir():
        for path in REAL_VIDEOS.iterdir():
            shutil.copy(path, folder / path.name)
    elif os.environ.get("CI"):
        pytest.fail("real test videos missing: run tests/fetch_real_videos.sh")
    make_bad_inputs(folder / "bad")
    return folder
