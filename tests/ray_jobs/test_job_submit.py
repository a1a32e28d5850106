"""The job submitted with `ray job submit` to a `ray start --head` on localhost."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ray_jobs.samples import scene_frames, write_video
from tests.ray_jobs.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray")) if shutil.which("ray") is None else "ray"


@pytest.fixture()
def head_node(tmp_path):
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    start = subprocess.run(
        [ray_cli(), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--num-cpus=2", "--include-dashboard=true",
         "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([ray_cli(), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_job_submit_runs_the_pipeline(head_node, tmp_path):
    address, env = head_node
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", scene_frames(90, 160, 120), fps=30)
    write_video(videos / "b.mp4", scene_frames(50, 160, 120), fps=25)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "input": {"kind": "folder", "path": str(videos)}, "output": str(out),
        "steps": {"short_caption": False, "dedup": False, "keyframes": False, "captions": False}}))
    result = subprocess.run(
        [ray_cli(), "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "-m", "ray_jobs.build_dataset", str(config), "--set", "frames.every_s=1.0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "succeeded" in result.stdout.lower()
    kept = [r for f in (out / "dataset").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    rejected = [r for f in (out / "rejected").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert sorted(r["video_id"] for r in kept) == ["a", "b"]
    assert [r["video_id"] for r in rejected] == ["broken"]
    assert len(kept[0]["frame_timestamps"]) >= 3
    assert yaml.safe_load((out / "config.yaml").read_text())["frames"]["every_s"] == 1.0
