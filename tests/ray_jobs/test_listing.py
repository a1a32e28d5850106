"""The listing as data and resume as a shuffle on the workers (ray_jobs/listing.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from operators.dataset.schema import REJECTED_SCHEMA
from operators.llm.errors import RETRYABLE_REASONS
from ray_jobs.config import PipelineConfig
from tests.ray_jobs.conftest import REPO, sg4v

pytestmark = [pytest.mark.ray]

RETRY_REASON = sorted(RETRYABLE_REASONS)[0]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def config_of(tmp_path: Path, sources: list[dict]) -> PipelineConfig:
    return PipelineConfig.model_validate({"input": sources, "output": str(tmp_path / "out")})


def pending(config: PipelineConfig) -> dict[str, dict]:
    from ray_jobs.listing import pending_rows, write_listing

    result = pending_rows(write_listing(config), config.output)
    rows = result.dataset.take_all()
    assert result.rows == len(rows)
    by_id = {r["video_id"]: r for r in rows}
    assert len(by_id) == len(rows), "an id came out twice"
    return by_id


def test_two_sources_with_the_same_file_names_give_distinct_ids(local_ray, tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        for name in ("a.mp4", "x.mp4", "x.avi"):
            (tmp_path / folder / name).write_bytes(b"")
    config = config_of(tmp_path, [{"kind": "folder", "path": str(tmp_path / "one")},
                                  {"kind": "folder", "path": str(tmp_path / "two"), "name": "cam2"}])
    rows = pending(config)
    assert sorted(rows) == ["cam2/a", "cam2/x.avi", "cam2/x.mp4", "folder0/a", "folder0/x.avi",
                            "folder0/x.mp4"]
    assert all(r["reject_reason"] is None for r in rows.values())
    assert rows["cam2/a"]["uri"] == str(tmp_path / "two" / "a.mp4")


def test_an_id_listed_twice_is_rejected_naming_both_uris(local_ray, tmp_path):
    (tmp_path / "m.csv").write_text("uri,video_id\n/data/a.mp4,same\n/data/b.mp4,same\n/data/c.mp4,other\n")
    rows = pending(config_of(tmp_path, [{"kind": "manifest", "path": str(tmp_path / "m.csv"),
                                          "allowed_roots": ["/data"]}]))
    assert rows["same"]["uri"] == "/data/a.mp4" and rows["same"]["reject_reason"] is None
    dup = [r for r in rows.values() if r["reject_reason"] == "duplicate_id"]
    assert len(dup) == 1 and dup[0]["video_id"].startswith("same~dup-")
    assert "/data/a.mp4" in dup[0]["reject_detail"] and "/data/b.mp4" in dup[0]["reject_detail"]


def test_resume_leaves_out_decided_ids_and_retries_retryable_ones(local_ray, tmp_path):
    from ray_jobs.listing import drop_retryable

    (tmp_path / "m.csv").write_text("uri\n" + "".join(f"/data/v{i}.mp4\n" for i in range(6)))
    config = config_of(tmp_path, [{"kind": "manifest", "path": str(tmp_path / "m.csv"),
                                   "allowed_roots": ["/data"]}])
    out = Path(config.output)
    (out / "dataset").mkdir(parents=True)
    (out / "rejected").mkdir()
    pq.write_table(pa.table({"video_id": ["v0", "v1"]}), out / "dataset" / "part-a.parquet")
    rejected = pa.Table.from_pylist(
        [{"video_id": "v2", "stage": "probe", "reason": "corrupt"},
         {"video_id": "v3", "stage": "llm", "reason": RETRY_REASON}], schema=REJECTED_SCHEMA)
    pq.write_table(rejected, out / "rejected" / "part-b.parquet")
    assert drop_retryable(config.output) == 1
    assert pq.read_table(out / "rejected" / "part-b.parquet").column("video_id").to_pylist() == ["v2"]
    assert sorted(pending(config)) == ["v3", "v4", "v5"]


def test_the_listing_is_reused_until_a_metadata_file_changes(local_ray, tmp_path):
    import os

    from ray_jobs.listing import write_listing

    manifest = tmp_path / "m.csv"
    manifest.write_text("uri\n/data/a.mp4\n")
    config = config_of(tmp_path, [{"kind": "manifest", "path": str(manifest), "allowed_roots": ["/data"]}])
    first = write_listing(config)
    assert write_listing(config).path == first.path
    manifest.write_text("uri\n/data/a.mp4\n/data/b.mp4\n")
    os.utime(manifest, (1, 1))
    second = write_listing(config)
    assert second.path != first.path and second.rows == 2


def test_listing_200k_clips_keeps_the_driver_flat(tmp_path):
    """The driver's RSS grows by less than 50 MB while 200k clips are listed by tasks."""
    manifest = tmp_path / "m.csv"
    with manifest.open("w") as f:
        f.write("uri,start,end\n")
        for i in range(50_000):
            for k in range(4):
                f.write(f"/data/v{i:06d}.mp4,{k * 5},{k * 5 + 5}\n")
    script = textwrap.dedent(f"""
        import json, resource, ray
        from ray_jobs.config import PipelineConfig
        from ray_jobs.listing import write_listing

        def rss_mb():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
        config = PipelineConfig.model_validate({{"input": [{{"kind": "manifest", "path": "{manifest}",
            "allowed_roots": ["/data"], "chunk_bytes": 1000000}}], "output": "{tmp_path / 'out'}"}})
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        write_listing(PipelineConfig.model_validate({{"input": [{{"kind": "manifest",
            "path": "{manifest}", "allowed_roots": ["/data"], "chunk_bytes": 1000000}}],
            "output": "{tmp_path / 'warm'}"}}))  # imports and task workers warmed up
        before = rss_mb()
        listing = write_listing(config)
        print(json.dumps({{"rows": listing.rows, "growth_mb": rss_mb() - before}}))
        ray.shutdown()
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["rows"] == 200_000
    assert measured["growth_mb"] < 50, measured


def write_shard(path: Path, videos: list[tuple[Path, str]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, (video, caption) in enumerate(videos):
            tar.add(video, arcname=f"{key:08d}.mp4")
            meta = json.dumps({"key": f"{key:08d}", "caption": caption, "status": "success"}).encode()
            info = tarfile.TarInfo(f"{key:08d}.json")
            info.size = len(meta)
            tar.addfile(info, io.BytesIO(meta))


@pytest.mark.slow
def test_webdataset_rerun_with_dedup_on_changes_nothing(tmp_path):
    """A rerun over shards with dedup on processes nothing and writes nothing new (the samples
    kept by the first run were once rejected as duplicates of themselves)."""
    from testing.samples import SAMPLE_CAPTIONS

    samples = tmp_path / "samples"
    made = sg4v("samples", str(samples))
    assert made.returncode == 0, made.stderr[-3000:]
    videos = sorted((samples / name, SAMPLE_CAPTIONS.get(name, "")) for name in SAMPLE_CAPTIONS
                    if (samples / name).suffix == ".mp4")
    write_shard(tmp_path / "shard-0.tar", videos[: len(videos) // 2 + 1])
    write_shard(tmp_path / "shard-1.tar", videos[len(videos) // 2 + 1:])
    text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text().replace("out/samples", str(samples))
    config = yaml.safe_load(text)
    config.update(input=[{"kind": "webdataset", "shards": str(tmp_path / "shard-{0..1}.tar")}],
                  output=str(tmp_path / "out"))
    config["steps"] = {"keyframes": False, "captions": False}
    config["test_server"] = {"enabled": False}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))

    def outputs() -> dict[str, list]:
        found = {}
        for folder in ("dataset", "rejected"):
            found[folder] = sorted(r["video_id"] for f in sorted((tmp_path / "out" / folder).glob("*.parquet"))
                                   for r in pq.read_table(f, columns=["video_id"]).to_pylist())
        return found

    first = sg4v("run", str(path))
    assert first.returncode == 0, first.stderr[-4000:]
    before = outputs()
    assert before["dataset"], first.stdout
    second = sg4v("run", str(path))
    assert second.returncode == 0, second.stderr[-4000:]
    assert outputs() == before
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["processed"] == 0 and stats["skipped_already_done"] == stats["inputs"]
    every = before["dataset"] + before["rejected"]
    assert len(every) == len(set(every)), "an id written twice"


@pytest.mark.slow
def test_pools_that_cannot_fit_a_cluster_without_autoscaler_fail_within_the_timeout(tmp_path):
    """A 2-CPU head with no autoscaler, a dedup pool of 4 CPUs: the run fails with the capacity
    message after ray.capacity_timeout_s instead of waiting forever."""
    import os
    import signal
    import time

    from tests.ray_jobs.conftest import free_port, ray_cli

    samples = tmp_path / "samples"
    assert sg4v("samples", str(samples)).returncode == 0
    text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text().replace("out/samples", str(samples))
    config = yaml.safe_load(text)
    port = free_port()
    config.update(output=str(tmp_path / "out"),
                  ray={"address": f"127.0.0.1:{port}", "capacity_timeout_s": 10})
    config["steps"] = {"keyframes": False, "captions": False}
    config["test_server"] = {"enabled": False}
    config.setdefault("stages", {})["semantic_dedup"] = {"num_cpus": 4}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    # `--block` keeps the head's processes under this one process group, which the test ends
    # alone (``ray stop`` would stop every Ray instance on the machine).
    head = subprocess.Popen([ray_cli(), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        time.sleep(15)
        started = time.monotonic()
        result = sg4v("run", str(path), env={"RAY_AUTH_MODE": "token"}, timeout=300)
        elapsed = time.monotonic() - started
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "capacity_timeout_s=10" in message and "semantic_dedup" in message and "CPU" in message, message[-3000:]
    assert elapsed < 240


@pytest.mark.slow
def test_two_sources_with_the_same_file_names_write_distinct_keyframes(tmp_path):
    import shutil

    samples = tmp_path / "samples"
    assert sg4v("samples", str(samples)).returncode == 0
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        for name in ("one_scene.mp4", "three_scenes.mp4"):
            shutil.copy(samples / name, tmp_path / folder / name)
    text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text().replace("out/samples", str(samples))
    config = yaml.safe_load(text)
    config.update(input=[{"kind": "folder", "path": str(tmp_path / "one")},
                         {"kind": "folder", "path": str(tmp_path / "two")}], output=str(tmp_path / "out"))
    config["steps"] = {"short_caption": False, "dedup": False, "keyframes": True, "captions": False}
    config["test_server"] = {"enabled": False}
    # One file per keyframe, so each video's keyframe folder is visible on disk.
    config["keyframes"] = {**config.get("keyframes", {}), "packing": "files"}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = sg4v("run", str(path))
    assert result.returncode == 0, result.stderr[-4000:]
    kept = {r["video_id"]: r for f in sorted((tmp_path / "out" / "dataset").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}
    assert sorted(kept) == ["folder0/one_scene", "folder0/three_scenes", "folder1/one_scene",
                            "folder1/three_scenes"]
    paths = [p for r in kept.values() for p in r["keyframe_paths"]]
    assert len(paths) == len(set(paths)) and paths
    for video_id, row in kept.items():
        assert row["uri"].startswith(str(tmp_path / ("one" if video_id.startswith("folder0") else "two")))
        assert all((tmp_path / "out" / p).is_file() for p in row["keyframe_paths"])
    folders = {video_id: {str(Path(p).parent) for p in row["keyframe_paths"]} for video_id, row in kept.items()}
    assert all(len(f) == 1 for f in folders.values())
    assert len({next(iter(f)) for f in folders.values()}) == 4, folders
