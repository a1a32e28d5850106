"""The API endpoint flapping during a run: bursts of 429s and 500s, timeouts, malformed bodies,
dropped connections, and a minute of total outage.

The run must finish (exit 0) with every video captioned: the outage circuit (in the limiter)
holds every caller while the endpoint is down instead of spending the videos' retries, so no
rerun is needed; each video is in the output once, and no answer is paid for twice (the test
server records every request, and no request body may be answered successfully twice).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from operators.dataset.resume import RETRYABLE_REASONS
from tests.ray_jobs.conftest import sg4v
from tests.reliability.llm_runs import (
    add_videos,
    answered_twice,
    decisions,
    job_config,
    run_driver,
    start_server,
    write_config,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXTRA_VIDEOS = 8
OUTAGE_S = 60.0
FAULTS = {"429": 0.06, "500": 0.08, "timeout": 0.04, "malformed": 0.05, "disconnect": 0.03}
#: What reaches the API stage: the samples' three good videos, both paraphrases kept (no dedup
#: in this config), and the generated ones.
CAPTIONED = {"three_scenes", "three_scenes_again", "one_scene", "moving"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flapping") / "samples"
    result = sg4v("samples", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    add_videos(folder, EXTRA_VIDEOS, scenes=3)
    return folder


def outage_after(server, answers: int, seconds: float) -> threading.Thread:
    """Start a total outage once the server has answered ``answers`` calls."""
    def watch() -> None:
        while server.stats["served"] < answers:
            time.sleep(0.05)
        server.outage(seconds)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_flapping_endpoint_and_an_outage(samples, tmp_path):
    server, url, stop = start_server(latency_s=(0.05, 0.15), fault_rates=FAULTS, hang_s=4.0,
                                     allowed_image_counts=[0, 1, 2], seed=7)
    out = tmp_path / "out"
    # Retries span a few seconds and the outage outlasts them: without the outage circuit the
    # calls it catches would give up (retries_exhausted) and need a rerun.
    config = write_config(tmp_path / "run.yaml", job_config(
        samples, out, url, lean=True, timeout_s=2.0, max_attempts=6, backoff_base_s=0.5,
        backoff_max_s=4.0, concurrency_per_actor=4))
    expected = CAPTIONED | {f"extra_{i:02d}" for i in range(EXTRA_VIDEOS)}
    try:
        watcher = outage_after(server, answers=10, seconds=OUTAGE_S)
        started = time.monotonic()
        assert run_driver(config, tmp_path / "run1.log") == 0, (tmp_path / "run1.log").read_text()[-3000:]
        first_s = time.monotonic() - started
        watcher.join(1)
        first = decisions(out)
        assert all(reason for folder, reason in first.values() if folder == "rejected")
        assert len(first) == json.loads((out / "stats.json").read_text())["inputs"]
        stats = server.stats
        print(f"flapping: run 1 {first_s:.1f} s through a {OUTAGE_S:.0f} s outage; server: "
              f"{stats['requests']} requests, {stats['served']} answered, faults {stats['faults']}; "
              f"{answered_twice(server)} request(s) answered twice")
        # The outage circuit holds every caller while the endpoint is down, without spending
        # any video's retries: one run captions everything, no rerun needed.
        assert not any(reason in RETRYABLE_REASONS for _, reason in first.values()), first
        assert {v for v, (folder, _) in first.items() if folder == "dataset"} == expected
        assert answered_twice(server) == 0
        assert stats["faults"].get("503", 0) > 0 and set(FAULTS) <= set(stats["faults"])
        assert first_s >= OUTAGE_S  # the run waited the outage out
    finally:
        stop()
