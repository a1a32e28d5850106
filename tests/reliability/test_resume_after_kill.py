"""Resume after the driver is killed, and writes that a kill cannot tear.

The kill test runs the smoke pipeline (probe to captions; without the short captioner and
dedup, whose resume tests/ray_jobs/test_pipeline_e2e.py covers) on the samples plus generated
videos twice: once undisturbed, once SIGKILLing the driver (as a preempted head node would lose
it) at three points of successive runs on the same output: while frames are decoded, while the
API captions, and once the first results are written; then rerunning until a run exits 0. Both
outputs must hold the same kept and rejected videos, each once, and the API requests of all the
killed and resumed runs together may exceed the undisturbed run's by 5% at most. One test
server in this process answers every run and counts their requests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import operators.io
from operators.base import object_column
from operators.dataset.exports.rows import captioned_rows
from operators.dataset.reader import read_column_values
from operators.dataset.resume import drop_rejections, remove_temp_files, resume_state
from operators.dataset.schema import REJECTED_SCHEMA
from operators.dataset.writer import WriteShards, parquet_bytes, to_table
from tests.ray_jobs.conftest import sg4v
from tests.reliability.llm_runs import (
    add_videos,
    decisions,
    descendants_named,
    files,
    job_config,
    kill_tree,
    psutil,
    run_driver,
    start_driver,
    start_server,
    wait_until,
    write_config,
)

EXTRA_VIDEOS = 16
MAX_RUNS = 6


# --- atomic writes and retried rejections, without Ray ---------------------------------------

def _batch(ids: list[str], reasons: list[str | None]) -> dict:
    n = len(ids)
    return {"video_id": object_column(ids), "source": object_column(["t"] * n),
            "uri": object_column([f"/{i}.mp4" for i in ids]),
            "reject_stage": object_column([r and "diff_caption" for r in reasons]),
            "reject_reason": object_column(reasons), "reject_detail": object_column([r for r in reasons])}


class _TornFS:
    """A filesystem whose files take half their bytes and then fail, as a killed writer would."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open(self, path, mode="rb", **kwargs):
        f = self.fs.open(path, mode, **kwargs)
        if "w" in mode:
            def torn(data: bytes) -> int:
                f.fs_write(data[: len(data) // 2])
                f.flush()
                raise OSError("killed mid-write")
            f.fs_write, f.write = f.write, torn
        return f


def test_a_write_killed_halfway_is_never_read_and_is_cleaned(tmp_path, monkeypatch):
    real = operators.io.filesystem
    monkeypatch.setattr(operators.io, "filesystem", lambda uri: (_TornFS(real(uri)[0]), real(uri)[1]))
    with pytest.raises(OSError, match="killed mid-write"):
        WriteShards(output=str(tmp_path))(_batch(["a", "b"], [None, "corrupt"]))
    monkeypatch.setattr(operators.io, "filesystem", real)
    torn = files(tmp_path / "dataset")
    assert [p.name[:5] for p in torn] == [".tmp-"] and torn[0].stat().st_size > 0
    assert not files(tmp_path, "*.parquet")  # nothing under a final name
    assert read_column_values(str(tmp_path), "dataset", ["video_id"]) == []
    assert list(captioned_rows(str(tmp_path))) == []  # exports and the report list files the same way
    assert resume_state(str(tmp_path)).done == set()
    assert remove_temp_files(str(tmp_path)) == 1 and not files(tmp_path / "dataset")


def test_rerun_takes_retried_rejections_out_so_each_video_has_one_decision(tmp_path):
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    (tmp_path / "dataset").mkdir()
    WriteShards(output=str(tmp_path))(_batch(["kept", "stale"], [None, None]))

    def put(name: str, ids: list[str], reasons: list[str]) -> None:
        columns = {"video_id": ids, "uri": ids, "stage": ["diff_caption"] * len(ids), "reason": reasons,
                   "detail": reasons}
        (rejected / name).write_bytes(parquet_bytes(to_table(columns, REJECTED_SCHEMA), "zstd"))

    put("part-1.parquet", ["a", "b", "c"], ["budget", "corrupt", "retries_exhausted"])
    put("part-2.parquet", ["d"], ["budget"])
    put("part-3.parquet", ["stale"], ["budget"])  # left by an older version beside its later success
    state = resume_state(str(tmp_path))
    assert state.done == {"kept", "stale", "b"}
    assert state.retry == {"a", "c", "d"}
    assert drop_rejections(str(tmp_path), {"a", "d", "stale"}) == 3
    left = {p.name: pq.read_table(p).column("video_id").to_pylist() for p in rejected.iterdir()}
    assert left == {"part-1.parquet": ["b", "c"]}  # rewritten under its own name; part-2/3 gone


def test_a_batch_written_twice_replaces_its_own_file(tmp_path):
    writer = WriteShards(output=str(tmp_path))
    first = writer(_batch(["a", "b"], [None, "corrupt"]))["written_to"]
    again = writer(_batch(["a", "b"], [None, "corrupt"]))["written_to"]
    assert list(first) == list(again)
    assert len(files(tmp_path, "*.parquet")) == 2


class _DiesOnWrite:
    """A filesystem whose ``n``-th file write (counted over every instance) is torn."""

    writes = 0

    def __init__(self, fs, n: int) -> None:
        self.fs, self.n = fs, n

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            _DiesOnWrite.writes += 1
            if _DiesOnWrite.writes == self.n:
                return _TornFS(self.fs).open(path, mode, **kwargs)
        return self.fs.open(path, mode, **kwargs)


def test_a_batch_killed_between_its_files_reruns_without_duplicates(tmp_path, monkeypatch):
    """A batch larger than ``bytes_per_file`` becomes several files; killed after the first,
    the rerun skips that file's rows and writes the others once: every id exactly once."""
    from operators.dataset.writer import WriterConfig

    ids = [f"v{i:03d}" for i in range(120)]
    batch = _batch(ids, [None if i % 4 else "corrupt" for i in range(120)])
    batch["summary"] = object_column(["words " * 300] * 120)  # ~1.8 KB a row: ~35 rows a file
    config = WriterConfig(bytes_per_file=2**16)
    real = operators.io.filesystem
    monkeypatch.setattr(_DiesOnWrite, "writes", 0)
    monkeypatch.setattr(operators.io, "filesystem", lambda uri: (_DiesOnWrite(real(uri)[0], 2), real(uri)[1]))
    with pytest.raises(OSError, match="killed mid-write"):
        WriteShards(config, output=str(tmp_path))({k: v.copy() for k, v in batch.items()})
    monkeypatch.setattr(operators.io, "filesystem", real)
    remove_temp_files(str(tmp_path))
    done = resume_state(str(tmp_path)).done
    assert 0 < len(done) < 120
    todo = [i for i, v in enumerate(ids) if v not in done]
    WriteShards(config, output=str(tmp_path))({k: v[todo] for k, v in batch.items()})
    written = [r["video_id"] for folder in ("dataset", "rejected")
               for r in read_column_values(str(tmp_path), folder, ["video_id"])]
    assert sorted(written) == ids  # each once
    assert len(files(tmp_path / "dataset", "*.parquet")) >= 3


# --- the driver killed at three points of a run -------------------------------------------

@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kill") / "samples"
    result = sg4v("samples", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    add_videos(folder, EXTRA_VIDEOS, scenes=3)
    return folder


def kill_config(samples: Path, out: Path, url: str) -> dict:
    # Two videos in flight: a kill can lose at most two answered calls that were not cached yet.
    # A Ray Data task turns its input bundle (batch_size rows or more) into one output block, so
    # small batches everywhere let results reach the writer while other videos are captioned.
    config = job_config(samples, out, url, lean=True, concurrency_per_actor=2)
    small = {"batch_size": 2}
    stages = config["stages"]
    stages.update({name: small for name in ("probe", "duration_filter", "sample_frames",
                                            "select_keyframes", "write")})
    stages.update(clip_encode={**stages["clip_encode"], **small}, diff_caption={"concurrency": [1, 1]})
    return config


class Phase:
    """Tells when a run on ``out`` has reached a point worth killing it at."""

    def __init__(self, name: str, driver, out: Path, server) -> None:
        self.name, self.driver, self.out, self.server = name, driver, out, server
        self.started = time.monotonic()
        self.served0 = server.stats["served"]
        self.written0 = len(files(out / "dataset", "*.parquet"))

    def reached(self) -> bool:
        if self.name == "decoding":  # the frame-sampling worker is busy, nothing captioned yet
            workers = descendants_named(self.driver.pid, "sample_frames")
            return any(_cpu_s(w) > 1.0 for w in workers)
        if self.name == "captioning":  # a few answers in, a kill lands between API calls
            return self.server.stats["served"] - self.served0 >= 4
        return len(files(self.out / "dataset", "*.parquet")) > self.written0  # writing

    def reached_or_ended(self) -> bool:
        return self.reached() or self.driver.poll() is not None


def _cpu_s(process) -> float:
    try:
        return sum(process.cpu_times()[:2])
    except psutil.Error:  # gone meanwhile
        return 0.0


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_at_three_points_resumes_to_the_same_output(samples, tmp_path):
    server, url, stop = start_server(latency_s=(0.02, 0.06), allowed_image_counts=[0, 1, 2])
    try:
        calm_out = tmp_path / "calm"
        calm = write_config(tmp_path / "calm.yaml", kill_config(samples, calm_out, url))
        started = time.monotonic()
        assert run_driver(calm, tmp_path / "calm.log") == 0, (tmp_path / "calm.log").read_text()[-3000:]
        calm_s, calm_requests = time.monotonic() - started, server.stats["requests"]

        out = tmp_path / "killed"
        config = write_config(tmp_path / "killed.yaml", kill_config(samples, out, url))
        log = tmp_path / "killed.log"
        kills, lingering, crashes = [], [], []
        for name in ("decoding", "captioning", "writing"):
            for _ in range(2):  # a second try if the run died of something else first
                driver = start_driver(config, log)
                phase = Phase(name, driver, out, server)
                assert wait_until(phase.reached_or_ended, 180), name
                if driver.poll() is None:
                    break
                assert driver.returncode != 0, f"the run finished before the kill ({name})"
                crashes.append({"before": name, "exit": driver.returncode})
            else:
                pytest.fail(f"no run reached {name}: {log.read_text()[-3000:]}")
            lingering += kill_tree(driver)
            kills.append({"phase": name, "after_s": round(time.monotonic() - phase.started, 1),
                          "cache_entries": len(files(out / "llm_cache", "*.json")),
                          "dataset_files": len(files(out / "dataset", "*.parquet")),
                          "temp_files": len([p for p in files(out) if p.name.startswith(".tmp-")])})
        assert kills[0]["cache_entries"] == 0 and kills[0]["dataset_files"] == 0
        assert kills[1]["cache_entries"] > 0

        reruns = 0
        while True:
            reruns += 1
            assert reruns <= MAX_RUNS, log.read_text()[-3000:]
            if run_driver(config, log) == 0:
                break
        resumed_requests = server.stats["requests"] - calm_requests

        calm_rows, resumed_rows = decisions(calm_out), decisions(out)
        print(f"kill/resume: undisturbed run {calm_s:.1f} s, {calm_requests} requests; killed {kills}; "
              f"{reruns} rerun(s) to finish; {resumed_requests} requests in all "
              f"({resumed_requests / calm_requests:.3f}x); runs that died of other causes: {crashes}; "
              f"outlived their driver by 15 s: {lingering}")
        assert resumed_rows == calm_rows
        assert sum(folder == "dataset" for folder, _ in calm_rows.values()) >= EXTRA_VIDEOS
        assert resumed_requests <= 1.05 * calm_requests
        assert not [p for p in files(out) if p.name.startswith(".tmp-") and p.parent.name in ("dataset", "rejected")]
    finally:
        stop()

