"""Windows: the stages run window by window, each window in a process of its own
(`ray.window_rows`, ray_jobs/windows.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from ray_jobs.windows import Window, plan_windows
from testing.samples import SAMPLE_CAPTIONS
from tests.ray_jobs.conftest import REPO, sg4v
from tests.ray_jobs.test_pipeline_e2e import rows, smoke_config


def test_windows_take_whole_files_up_to_the_window_size():
    files = [("a", 3), ("b", 2), ("c", 4), ("d", 1), ("e", 9), ("f", 1)]
    assert plan_windows(files, 5) == [Window(("a", "b"), 5), Window(("c", "d"), 5), Window(("e",), 9),
                                      Window(("f",), 1)]
    assert plan_windows(files, 100) == [Window(("a", "b", "c", "d", "e", "f"), 20)]
    assert plan_windows([], 5) == []


def write_config(samples: Path, out: Path, window_rows: int) -> Path:
    config = smoke_config(samples, out)
    config["ray"]["window_rows"] = window_rows
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def every_sample_once(out: Path) -> tuple[dict, dict]:
    kept, rejected = rows(out / "dataset"), rows(out / "rejected")
    assert not set(kept) & set(rejected)
    assert set(kept) | set(rejected) == {Path(name).stem for name in SAMPLE_CAPTIONS}
    return kept, rejected


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_in_windows_gives_every_video_one_decision(samples, tmp_path):
    out = tmp_path / "out"
    result = sg4v("run", str(write_config(samples, out, 3)))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "window 2 of" in result.stderr  # 8 samples, windows of about 3
    kept, rejected = every_sample_once(out)
    # The pair of near-identical captions: one kept, the other dropped against it, whichever
    # window each came in.
    pair = {"three_scenes", "three_scenes_again"}
    assert len(pair & set(kept)) == 1
    (dup,) = [rejected[i] for i in pair - set(kept)]
    assert dup["reason"] == "duplicate" and json.loads(dup["detail"])["nearest_id"] in pair
    ranks = sorted([r["dedup_rank"] for r in kept.values()] + [dup["dedup_rank"]])
    assert ranks == list(range(len(ranks)))  # the decider of each window went on from the last rank
    # The counts the job adds up from its windows are the output's.
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == len(kept) and stats["rejected"] == len(rejected)
    assert stats["api_usage"]["calls"] > 0  # the windows reached the job's API services
    assert not (out / "pending").exists()
    again = sg4v("run", str(write_config(samples, out, 3)))
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"0 kept, 0 rejected, {len(SAMPLE_CAPTIONS)} already done" in again.stdout
    assert "window 1 of" not in again.stderr


def start_run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "run", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ}, start_new_session=True)


def window_process(job: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(job.pid).children():
            try:
                if "ray_jobs.windows" in " ".join(proc.cmdline()):
                    return proc
            except psutil.Error:
                continue
        assert job.poll() is None, job.communicate()[1][-4000:]
        time.sleep(0.2)
    raise AssertionError("no window process started")


def stop_all(job: subprocess.Popen) -> None:
    """End what is left of a job (its local Ray included)."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.communicate()


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_window_stops_the_run_and_a_rerun_finishes_it(samples, tmp_path):
    out = tmp_path / "out"
    config = write_config(samples, out, 3)
    job = start_run(config)
    try:
        window = window_process(job)
        time.sleep(3)
        window.kill()
        _, stderr = job.communicate(timeout=180)
        assert job.returncode != 0
        assert "window 1 of" in stderr and "exited with code -9" in stderr, stderr[-3000:]
    finally:
        stop_all(job)
    again = sg4v("run", str(config))
    assert again.returncode == 0, again.stderr[-4000:]
    every_sample_once(out)


@pytest.mark.ray
@pytest.mark.slow
def test_a_window_process_ends_with_its_job(samples, tmp_path):
    job = start_run(write_config(samples, tmp_path / "out", 3))
    try:
        window = window_process(job)
        job.kill()
        window.wait(timeout=15)  # psutil.TimeoutExpired if it outlived its job
    finally:
        stop_all(job)
