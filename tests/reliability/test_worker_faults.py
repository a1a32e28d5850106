"""Faults during a run: a Ray worker killed mid-stage, a model that cannot load.

The kill test runs the pipeline in this process on a local Ray, twice over the same inputs:
once undisturbed, once while a background thread SIGKILLs the actor process that samples
frames and encodes them with CLIP. Both runs must write the same rows and keyframes.
"""

from __future__ import annotations

import csv
import importlib
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from ray_jobs.config import load_config
from ray_jobs.runner import run_pipeline
from testing.samples import write_samples
from testing.tiny_models import save_tiny_clip
from tests.ray_jobs.conftest import sg4v

# psutil is not a dependency of its own here: Ray bundles it and puts it on sys.path on import.
psutil = importlib.import_module("psutil")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

COPIES = 10  # each good sample listed this many times: enough rows to kill a worker mid-stage
ACTOR_TITLE = "clip_encode"  # fused into the actor title: MapWorker(MapBatches(sample_frames)->...)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("faults")
    samples = base / "samples"
    paths = write_samples(samples)
    with open(samples / "many.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "video_id"])
        for path in paths:  # the samples: good videos, one too long, three broken files
            for copy in range(COPIES):
                writer.writerow([path.name, f"{path.stem}_{copy}"])
    return samples, save_tiny_clip(base / "clip")


def inputs_of(samples: Path) -> list[str]:
    return [p.name for p in samples.iterdir() if p.suffix in (".mp4", ".webm")]


def job(samples: Path, clip: dict[str, str], out: Path):
    return load_config({
        "input": {"kind": "manifest", "path": str(samples / "many.csv")},
        "output": str(out),
        "frames": {"short_side": 64},
        "steps": {"short_caption": False, "dedup": False, "keyframes": True, "captions": False},
        "clip": {**clip, "image_batch_size": 8},
        "stages": {"sample_frames": {"batch_size": 1},
                   "clip_encode": {"num_gpus": 0, "concurrency": [1, 1], "num_cpus": 1, "batch_size": 1}},
    })


def outcome(out: Path) -> dict[str, object]:
    rows = {}
    for folder in ("dataset", "rejected"):
        for file in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(file).to_pylist():
                assert row["video_id"] not in rows, f"{row['video_id']} written twice"
                rows[row["video_id"]] = (folder, row.get("reason"), row.get("keyframe_timestamps"))
    return rows


class ActorKiller(threading.Thread):
    """SIGKILLs the first Ray actor process whose title names ``title`` once it has spent
    ``cpu_s`` seconds of CPU (its model is loaded and it is working through rows), then
    watches for Ray to start a replacement, which shows that work was still pending."""

    def __init__(self, title: str, cpu_s: float = 4.0, kind: str = "MapWorker") -> None:
        super().__init__(daemon=True)
        self.title, self.cpu_s, self.kind = title, cpu_s, kind
        self.killed: list[str] = []
        self.replacements: set[int] = set()
        self.stop = threading.Event()

    def _actors(self) -> list:
        found = []
        for process in psutil.Process().children(recursive=True):
            try:
                if self.kind in (title := " ".join(process.cmdline())) and self.title in title:
                    found.append((process, title))
            except psutil.Error:
                continue
        return found

    def run(self) -> None:
        while not self.stop.is_set():
            for process, title in self._actors():
                if self.killed:
                    if process.pid != int(self.killed[0].split()[0]):
                        self.replacements.add(process.pid)
                    continue
                try:
                    cpu = sum(process.cpu_times()[:2])
                except psutil.Error:
                    continue
                if cpu >= self.cpu_s:
                    os.kill(process.pid, signal.SIGKILL)
                    self.killed.append(f"{process.pid} {title[:90].strip()} after {cpu:.1f} s of CPU")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_killed_actor_does_not_change_the_output(inputs, local_ray, tmp_path):
    samples, clip = inputs
    started = time.monotonic()
    baseline = run_pipeline(job(samples, clip, tmp_path / "calm"))
    calm_s = time.monotonic() - started
    killer = ActorKiller(ACTOR_TITLE)
    killer.start()
    started = time.monotonic()
    try:
        disturbed = run_pipeline(job(samples, clip, tmp_path / "killed"))
    finally:
        killer.stop.set()
        killer.join()
    killed_s = time.monotonic() - started
    print(f"worker kill: {killer.killed}, replaced by {sorted(killer.replacements)}; runs {calm_s:.1f} s calm, {killed_s:.1f} s with the kill")
    assert killer.killed, "the run ended before a worker could be killed"
    assert killer.replacements, "no replacement actor started: the kill landed after the stage's work"
    assert disturbed.inputs == baseline.inputs == len(inputs_of(samples)) * COPIES
    assert disturbed.kept == baseline.kept > 0
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "calm")


@pytest.mark.parametrize("checkpoint", ["missing", "garbage"])
def test_model_that_cannot_load_fails_fast_naming_the_path(inputs, tmp_path, checkpoint):
    samples, clip = inputs
    bad = Path("/nonexistent/ckpt.pt") if checkpoint == "missing" else tmp_path / "garbage.pt"
    if checkpoint == "garbage":
        bad.write_bytes(b"not a checkpoint" * 64)
    started = time.monotonic()
    result = sg4v("run", str(write_config(samples, clip, tmp_path / "out", bad)), timeout=180)
    elapsed = time.monotonic() - started
    print(f"model load failure ({checkpoint}): exit {result.returncode} after {elapsed:.1f} s")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: a stage could not start: clip_encode:"), error
    assert str(bad) in error
    assert elapsed < 120


def write_config(samples: Path, clip: dict[str, str], out: Path, pretrained: Path) -> Path:
    import yaml

    config = job(samples, clip, out).model_dump(mode="json", exclude_defaults=True)
    config["clip"]["pretrained"] = str(pretrained)
    config["ray"] = {"num_cpus": 4}
    path = out.parent / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
