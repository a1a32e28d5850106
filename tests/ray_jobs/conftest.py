import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from testing.samples import scene_frames, write_samples, write_video

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray")) if shutil.which("ray") is None else "ray"


@dataclass
class HeadNode:
    gcs: str
    dashboard: str
    env: dict[str, str]


@contextlib.contextmanager
def start_head_node(extra_env: dict[str, str] | None = None, num_cpus: int = 2,
                    include_dashboard: bool = False) -> Iterator[HeadNode]:
    """``ray start --head`` on localhost, as a user would run it, with the test session's own
    auth token (``RAY_AUTH_TOKEN_PATH``, set in tests/conftest.py), never ``~/.ray``."""
    assert os.environ.get("RAY_AUTH_TOKEN_PATH"), "tests/conftest.py sets the session's token"
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", **(extra_env or {})}
    start = subprocess.run(
        [ray_cli(), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--num-cpus={num_cpus}",
         f"--include-dashboard={str(include_dashboard).lower()}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield HeadNode(gcs=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dashboard}", env=env)
    finally:
        subprocess.run([ray_cli(), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """What `sg4v samples` writes (videos, a manifest, tiny models), in a folder of its own."""
    folder = tmp_path_factory.mktemp("samples")
    result = sg4v("samples", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder
