"""Helpers of the resume and API-fault tests: inputs, configs pointed at one test server that
the test process owns (so it outlives killed drivers and counts every run's requests), driver
processes, and readers of an output's decisions.
"""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from testing.fake_server import FakeOpenAIServer
from testing.fake_server_config import FakeServerConfig
from testing.samples import scene_frames, write_video
from tests.ray_jobs.conftest import REPO

# psutil is not a dependency of its own here: Ray bundles it and puts it on sys.path on import.
importlib.import_module("ray")
psutil = importlib.import_module("psutil")

#: Captions of the generated videos: different topics, so semantic dedup keeps them all.
TOPICS = [
    "A chef slices onions on a wooden board in a busy kitchen.",
    "Waves crash against black rocks under a stormy sky.",
    "A cyclist climbs a steep mountain road at sunrise.",
    "Children build a sandcastle on a crowded summer beach.",
    "A train crosses a snowy bridge between pine forests.",
    "A potter shapes wet clay on a spinning wheel.",
    "Fireworks burst over a city skyline at midnight.",
    "A dog catches a frisbee in a green park.",
    "Traders shout on the floor of a stock exchange.",
    "A surgeon stitches a wound in a bright operating room.",
    "Hot air balloons drift over a desert canyon.",
    "A violinist performs alone on an empty concert stage.",
    "Bees crawl over honeycomb frames in a wooden hive.",
    "A forklift stacks pallets in a large warehouse.",
    "Rain streams down a window with neon signs behind it.",
    "A chess player ponders a move in a quiet library.",
    "Astronauts float inside a cramped space station module.",
    "A farmer drives a tractor through a golden wheat field.",
    "Skaters spin on a frozen lake surrounded by hills.",
    "A blacksmith hammers a glowing horseshoe on an anvil.",
]


def add_videos(samples: Path, count: int, scenes: int = 4) -> list[str]:
    """Write ``count`` distinct short videos into ``samples`` and list them (with their
    captions) in its ``manifest.csv``; their names."""
    names = []
    with open(samples / "manifest.csv", "a", newline="") as f:
        writer = csv.writer(f)
        for i in range(count):
            colors = [((i * 53 + k * 97) % 256, (i * 29 + k * 151) % 256, (k * 67 + 40) % 256)
                      for k in range(scenes)]
            cuts = [(k * 24, color) for k, color in enumerate(colors)]
            name = f"extra_{i:02d}.mp4"
            write_video(samples / name, scene_frames(24 * scenes, 128, 96, cuts), fps=12)
            writer.writerow([name, TOPICS[i % len(TOPICS)]])
            names.append(name)
    return names


def start_server(**config: Any) -> tuple[FakeOpenAIServer, str, Any]:
    """A recording test server in a thread of this process: (server, base URL, stop)."""
    server = FakeOpenAIServer(FakeServerConfig(**config), record=True)
    url, stop = server.start_in_thread()
    return server, url, stop


def job_config(samples: Path, out: Path, url: str, *, lean: bool = False, **llm: Any) -> dict:
    """The smoke config on ``samples``, writing to ``out``, its API calls sent to ``url``.
    ``lean`` leaves out the short captioner and dedup (the API tests do not need them)."""
    text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text()
    config = yaml.safe_load(text.replace("out/samples", str(samples)).replace("out/smoke", str(out)))
    config["llm"].update(base_url=url, api_key_env=None, token_accounting="usage", **llm)
    config["test_server"] = {"enabled": False}
    # Priced as a run prices its own test server, so usage and cost are counted as in a smoke run.
    config["llm"].setdefault("prices", {"fake-vlm": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    if lean:
        config["steps"] = {"short_caption": False, "dedup": False}
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def start_driver(config: Path, log: Path) -> subprocess.Popen:
    """``sg4v run CONFIG`` in its own session (a signal to it never reaches the test)."""
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "run", str(config)], cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def run_driver(config: Path, log: Path, timeout: float = 240) -> int:
    process = start_driver(config, log)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            kill_tree(process)


def kill_tree(process: subprocess.Popen, grace_s: float = 15.0) -> list[str]:
    """SIGKILL the driver alone, as a preempted head node would lose it, then wait for the
    Ray processes it started to die with it; those still alive after ``grace_s`` are killed.
    Returns the names of those. Only this driver's own descendants are touched."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    names = []
    for child in alive:
        try:
            names.append(" ".join(child.cmdline())[:60] or child.name())
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return names


def decisions(out: Path) -> dict[str, tuple[str, str | None]]:
    """video_id -> (folder, reason) over ``dataset/`` and ``rejected/``; fails on an id written
    twice, in one folder or across both."""
    found: dict[str, tuple[str, str | None]] = {}
    for folder in ("dataset", "rejected"):
        for file in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(file, columns=None).to_pylist():
                assert row["video_id"] not in found, f"{row['video_id']} written twice"
                found[row["video_id"]] = (folder, row.get("reason"))
    return found


def request_key(entry: dict[str, Any]) -> tuple:
    """What makes two recorded requests the same paid call: prompt texts, images, max_tokens."""
    return (tuple(entry["texts"]), tuple(i.digest for i in entry["images"]), entry["max_tokens"])


def answered_twice(server: FakeOpenAIServer) -> int:
    """Requests the server answered successfully (billed) more than once."""
    counts = Counter(request_key(r) for r in server.requests if r["outcome"] == "ok")
    return sum(n - 1 for n in counts.values() if n > 1)


def wait_until(predicate, timeout: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def files(folder: Path, pattern: str = "*") -> list[Path]:
    return [p for p in folder.rglob(pattern) if p.is_file()] if folder.is_dir() else []


def descendants_named(pid: int, text: str) -> list:
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in procs:
        try:
            if text in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
