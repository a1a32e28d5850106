"""Inputs and outputs on object storage: the job against a local S3-compatible server.

A moto server on 127.0.0.1 stands in for S3. The credentials and the endpoint reach s3fs the
way they would on a real cluster: through the standard AWS environment variables
(``AWS_ENDPOINT_URL`` is honoured by botocore, hence by s3fs), which a local Ray passes on to
its workers because they are set before Ray starts.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from operators.io import open_binary
from ray_jobs.config import load_config
from testing.samples import scene_frames, write_video

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BUCKET = "sg4v-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_command(port: int) -> list[str]:
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    return [server, "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("moto", reason="needs moto[server] (dev dependency)")
    port = free_port()
    server = subprocess.Popen(moto_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture()
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the local server, with the environment a run on it needs."""
    import ray

    if ray.is_initialized():  # a Ray started by another test would not see the variables below
        ray.shutdown()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    yield fs
    ray.shutdown()
    s3fs.S3FileSystem.clear_instance_cache()


def upload_videos(fs, tmp_path: Path) -> None:
    local = tmp_path / "videos"
    (local / "clips").mkdir(parents=True)
    write_video(local / "a.mp4", scene_frames(90, 160, 120), fps=30)
    write_video(local / "clips" / "b.webm", scene_frames(48, 128, 96), fps=24, codec="libvpx-vp9")
    (local / "broken.mp4").write_bytes(b"\x00" * 512)
    fs.put(str(local) + "/", f"{BUCKET}/videos/", recursive=True)


def read_parquet_rows(fs, folder: str) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(fs.find(folder)):
        if path.endswith(".parquet"):
            with fs.open(path, "rb") as f:
                rows.extend(pq.read_table(io.BytesIO(f.read())).to_pylist())
    return rows


def test_job_reads_videos_from_s3_and_writes_its_output_there(s3, tmp_path):
    from ray_jobs.runner import run_pipeline
    from testing.tiny_models import save_tiny_clip

    upload_videos(s3, tmp_path)
    output = f"s3://{BUCKET}/out"
    # Keyframes stay on (with a tiny CLIP on CPU): they re-read frames from the bucket and
    # write JPEGs to it, the two other ways the job touches storage.
    config = load_config({
        "input": {"kind": "folder", "path": f"s3://{BUCKET}/videos"},
        "output": output,
        "ray": {"num_cpus": 3},
        "frames": {"every_s": 1.0, "short_side": 96},
        "steps": {"short_caption": False, "dedup": False, "keyframes": True, "captions": False},
        "clip": save_tiny_clip(tmp_path / "clip"),
        "keyframes": {"reread": "always", "image_longest_side": 128},
        "stages": {"clip_encode": {"num_gpus": 0, "num_cpus": 1, "concurrency": [1, 1]}},
    })
    summary = run_pipeline(config)
    assert (summary.inputs, summary.kept, summary.rejected_total) == (3, 2, 1)

    for name in ("config.yaml", "stats.json"):
        assert s3.exists(f"{BUCKET}/out/{name}"), name
    kept = {r["video_id"]: r for r in read_parquet_rows(s3, f"{BUCKET}/out/dataset")}
    rejected = read_parquet_rows(s3, f"{BUCKET}/out/rejected")
    assert sorted(kept) == ["a", "clips/b"]
    assert kept["a"]["uri"] == f"s3://{BUCKET}/videos/a.mp4"
    assert kept["a"]["duration"] == pytest.approx(3.0, abs=0.05)
    assert kept["a"]["frame_timestamps"] == pytest.approx([0, 1, 2, 89 / 30], abs=1e-3)
    assert kept["clips/b"]["codec"] == "vp9"
    assert kept["clips/b"]["frame_timestamps"] == pytest.approx([0, 1, 47 / 24], abs=1e-3)
    assert [(r["video_id"], r["stage"]) for r in rejected] == [("broken", "probe")]
    for row in kept.values():
        assert row["keyframe_timestamps"][0] == 0.0
        for path in row["keyframe_paths"]:
            with open_binary(f"s3://{BUCKET}/out/{path}") as f:  # one ranged GET into an archive
                assert f.read(3) == b"\xff\xd8\xff", path  # a JPEG, written to the bucket
    assert not [p for p in s3.find(f"{BUCKET}/out") if p.rsplit("/", 1)[-1].startswith(".tmp-")]

    stats = json.loads(s3.cat(f"{BUCKET}/out/stats.json"))
    assert (stats["kept"], stats["rejected"]) == (2, 1)
    written = yaml.safe_load(s3.cat(f"{BUCKET}/out/config.yaml"))
    assert written["input"][0]["path"] == f"s3://{BUCKET}/videos"
    assert b"testing" not in s3.cat(f"{BUCKET}/out/config.yaml")

    # A rerun on the same bucket resumes from what is there and writes nothing new.
    before = sorted(s3.find(f"{BUCKET}/out/dataset"))
    again = run_pipeline(config)
    assert (again.skipped_done, again.kept) == (3, 0)
    assert sorted(s3.find(f"{BUCKET}/out/dataset")) == before
