"""`sg4v run` over the corpus of hostile and broken inputs (tests/reliability/corpus.py).

One run, probe to keyframes (tiny CLIP), on a local Ray: it must exit 0, put every input in
`dataset/` or `rejected/` exactly once with its precise reason, and keep every Ray worker's
memory bounded (peak RSS, polled over the run's process tree).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from operators.io import join, open_binary
from testing.tiny_models import save_tiny_clip
from tests.ray_jobs.conftest import REPO
from tests.reliability.corpus import build_corpus, write_manifest

# psutil is not a dependency of its own here: Ray bundles it and puts it on sys.path on import.
psutil = importlib.import_module("psutil")
assert ray  # imported for the line above

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Peak resident memory any one Ray worker may reach on this corpus.
WORKER_RSS_LIMIT = int(2.5 * (1 << 30))
RUN_TIMEOUT_S = 300


class PeakRss:
    """Polls the resident memory of every process under ``root_pid`` while the run lasts."""

    def __init__(self, root_pid: int, every_s: float = 0.1) -> None:
        self.root, self.every_s = psutil.Process(root_pid), every_s
        self.peak: dict[int, tuple[int, str]] = {}  # pid -> (max rss, process title)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    title = " ".join(process.cmdline())[:200]
                except psutil.Error:
                    continue
                if rss > self.peak.get(process.pid, (0, ""))[0]:
                    self.peak[process.pid] = (rss, title)
            self._stop.wait(self.every_s)

    def workers(self) -> dict[int, tuple[int, str]]:
        """Ray worker processes: their titles start with ``ray::`` (``ray::IDLE``, ``ray::MapWorker``)."""
        return {pid: peak for pid, peak in self.peak.items() if "ray::" in peak[1]}


def read_rows(folder: Path) -> list[dict]:
    return [row for file in sorted(folder.glob("*.parquet")) for row in pq.read_table(file).to_pylist()]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    corpus = base / "corpus"
    expected = build_corpus(corpus)
    manifest = write_manifest(corpus, sorted(expected))
    clip = save_tiny_clip(base / "clip")
    out = base / "out"
    config = {
        "input": {"kind": "manifest", "path": str(manifest)},
        "output": str(out),
        "ray": {"num_cpus": 4},
        "frames": {"short_side": 64},
        "steps": {"short_caption": False, "dedup": False, "keyframes": True, "captions": False},
        "clip": {**clip, "image_batch_size": 16},
        "stages": {"clip_encode": {"num_gpus": 0, "concurrency": [1, 1], "num_cpus": 1},
                   "probe": {"batch_size": 4}},
    }
    (base / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "run", str(base / "config.yaml")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(process.pid) as rss:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"the run hung on the hostile corpus:\n{stderr[-3000:]}")
    return {"expected": expected, "out": out, "returncode": process.returncode, "stdout": stdout,
            "stderr": stderr, "rss": rss, "wall_s": time.monotonic() - started}


def test_job_exits_zero(hostile_run):
    assert hostile_run["returncode"] == 0, hostile_run["stderr"][-4000:]


def test_every_input_once_with_its_precise_reason(hostile_run):
    out, expected = hostile_run["out"], hostile_run["expected"]
    kept = {Path(r["uri"]).name: r for r in read_rows(out / "dataset")}
    rejected = {Path(r["uri"]).name: r for r in read_rows(out / "rejected")}
    assert not set(kept) & set(rejected)
    assert sorted([*kept, *rejected]) == sorted(expected)
    for name, outcome in expected.items():
        if outcome.kept:
            assert name in kept, (name, rejected.get(name))
            row = kept[name]
            assert row["keyframe_timestamps"] and row["keyframe_timestamps"][0] == 0.0, name
            if outcome.duration is not None:
                assert row["duration"] == pytest.approx(outcome.duration, abs=0.1), name
        else:
            row = rejected.get(name)
            assert row is not None, (name, kept.get(name, {}).get("duration"))
            assert (row["stage"], row["reason"]) == (outcome.stage, outcome.reason), (name, row)
            assert outcome.detail in row["detail"], (name, row["detail"])


def test_odd_but_valid_videos_come_out_right(hostile_run):
    kept = {Path(r["uri"]).name: r for r in read_rows(hostile_run["out"] / "dataset")}
    assert kept["one_frame.mp4"]["keyframe_timestamps"] == [0.0]  # first and last are one frame
    rotated = kept["rotated_90.mp4"]
    assert (rotated["rotation"], rotated["width"], rotated["height"]) == (90, 96, 64)
    assert kept["variable_fps.mp4"]["frame_timestamps"] == pytest.approx([0.0, 1.9, 2.2, 6.0])
    for row in kept.values():
        for path in row.get("keyframe_paths") or []:
            with open_binary(join(str(hostile_run["out"]), path)) as f:
                assert f.read(3) == b"\xff\xd8\xff", path


def test_worker_memory_stays_bounded(hostile_run):
    workers = hostile_run["rss"].workers()
    assert workers, "no Ray worker process was seen"
    peak_pid, (peak, title) = max(workers.items(), key=lambda item: item[1][0])
    report = {"workers_seen": len(workers), "peak_worker_rss_mib": round(peak / 2**20),
              "peak_worker": title.split(" ")[0], "wall_s": round(hostile_run["wall_s"], 1),
              "inputs": len(hostile_run["expected"])}
    print("hostile corpus:", json.dumps(report))
    assert peak < WORKER_RSS_LIMIT, report
