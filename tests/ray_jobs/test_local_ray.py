"""A local run next to a Ray instance that is already running on the machine.

``sg4v run`` without a cluster address starts a private Ray for the run (even when a
``ray start --head`` is up), and ``ray.address=auto`` joins the running one on purpose.
"""

import subprocess

import pyarrow.parquet as pq
import pytest
import yaml

from testing.samples import scene_frames, write_video
from tests.ray_jobs.conftest import ray_cli, sg4v, start_head_node

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def small_config(tmp_path, **ray_settings) -> str:
    videos = tmp_path / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    write_video(videos / "a.mp4", scene_frames(30, 96, 64), fps=15)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "input": {"kind": "folder", "path": str(videos)}, "output": str(tmp_path / "out"),
        "steps": {"short_caption": False, "dedup": False, "keyframes": False, "captions": False},
        "ray": ray_settings}))
    return str(config)


def kept_ids(out) -> list[str]:
    return sorted(r["video_id"] for f in (out / "dataset").glob("*.parquet")
                  for r in pq.read_table(f).to_pylist())


def test_local_run_beside_a_running_head_and_joining_it_on_purpose(tmp_path):
    with start_head_node(num_cpus=1) as head:
        # Ray's default would attach to the running head and refuse num_cpus.
        own = sg4v("run", small_config(tmp_path / "own", num_cpus=2), env=head.env, timeout=300)
        assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-3000:]
        assert kept_ids(tmp_path / "own" / "out") == ["a"]
        # The head is untouched by the private run.
        status = subprocess.run([ray_cli(), "status", "--address", head.gcs], env=head.env,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr

        joined = sg4v("run", small_config(tmp_path / "joined", address="auto"), env=head.env,
                      timeout=300)
        assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
        assert kept_ids(tmp_path / "joined" / "out") == ["a"]

        bad = sg4v("run", small_config(tmp_path / "bad", address="auto", num_cpus=2), env=head.env)
        assert bad.returncode == 2
        assert "ray.num_cpus applies only to a local Ray" in bad.stderr
