"""The job submitted with `ray job submit` to a `ray start --head` on localhost."""

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from testing.fake_server import FakeOpenAIServer
from testing.fake_server_config import FakeServerConfig
from testing.samples import scene_frames, write_video
from testing.tiny_models import save_tiny_clip
from tests.ray_jobs.conftest import REPO, ray_cli, start_head_node

pytestmark = [pytest.mark.ray, pytest.mark.slow]


CANARY = "sk-canary-submit-5c2e9a7d41b8"


@pytest.fixture()
def head_node():
    # The key lives in the cluster's environment, as the cluster configs set it up.
    with start_head_node({"OPENAI_API_KEY": CANARY}, include_dashboard=True) as head:
        yield head


def test_ray_job_submit_runs_the_pipeline(head_node, tmp_path):
    address, env = head_node.dashboard, head_node.env
    server = FakeOpenAIServer(FakeServerConfig(latency_s=(0.0, 0.05), allowed_image_counts=[0, 1, 2]),
                              required_api_key=CANARY)
    url, stop = server.start_in_thread()
    try:
        run_submitted_job(address, env, tmp_path, url)
    finally:
        stop()
    assert server.stats["served"] > 0 and server.stats["unauthorized"] == 0
    listing = subprocess.run([ray_cli(), "job", "list", "--address", address], env=env,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "ray_jobs.build_dataset" in listing.stdout
    assert CANARY not in listing.stdout + listing.stderr  # job metadata
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path


def run_submitted_job(address: str, env: dict, tmp_path: Path, llm_url: str) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", scene_frames(90, 160, 120), fps=30)
    write_video(videos / "b.mp4", scene_frames(50, 160, 120), fps=25)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    clip = save_tiny_clip(tmp_path / "clip")
    config.write_text(yaml.safe_dump({
        "input": {"kind": "folder", "path": str(videos)}, "output": str(out),
        "steps": {"short_caption": False, "dedup": False, "keyframes": True, "captions": True},
        "clip": clip, "keyframes": {"threshold": 0.9},
        "llm": {"base_url": llm_url, "model": "fake-vlm", "token_accounting": "usage"},
        "stages": {"clip_encode": {"num_gpus": 0, "num_cpus": 0.5},
                   "diff_caption": {"concurrency": [1, 1]}}}))
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
    assert all(r["summary"] and len(r["captions"]) == len(r["keyframe_paths"]) for r in kept)
    assert yaml.safe_load((out / "config.yaml").read_text())["frames"]["every_s"] == 1.0
    assert CANARY not in result.stdout + result.stderr  # the job's logs
