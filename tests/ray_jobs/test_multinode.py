"""The job on a multi-node Ray cluster on one machine: where the GPU stages run, and that the
output does not depend on the cluster's shape.

Three nodes, as on a cloud cluster: a head without GPU, a CPU worker and a GPU worker that
declares one logical GPU (and a ``gpu_node`` label). The real pipeline runs with the smoke
config's tiny models; the model stages keep a GPU share, so Ray may place them on the GPU node
only. The same config then runs on a single-node Ray and both outputs are compared.

Ray Data does not keep row order between stages unless told to, and semantic dedup is greedy
in arrival order (of two near-duplicates, the first to arrive is kept); both runs preserve
order so that the comparison is exact.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from operators.io import join, open_binary, parse_range_uri
from ray_jobs.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GPU_STAGES = ("short_caption", "text_embed", "clip_encode")
#: Columns that legitimately differ between two runs: per-row timings.
VOLATILE = ("_t_",)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from testing.samples import write_samples
    from testing.tiny_models import write_smoke_models

    folder = tmp_path_factory.mktemp("samples")
    write_samples(folder)
    write_smoke_models(folder / "models")
    return folder


def job_config(samples: Path, output: Path):
    models = samples / "models"
    gpu_share = {"num_gpus": 0.25, "num_cpus": 1, "concurrency": [1, 1]}
    return load_config({
        "input": {"kind": "manifest", "path": str(samples / "manifest.csv")},
        "output": str(output),
        "frames": {"every_s": 2.0, "short_side": 96},
        "short_caption": {"backend": "hf_image", "model": str(models / "captioner"),
                          "prefer_source_caption": True},
        "embed": {"model": str(models / "text_embedder"), "pooling": "mean"},
        "dedup": {"threshold": 0.85},
        "clip": {"model": "sg4v-tiny-clip", "pretrained": str(models / "clip" / "sg4v-tiny-clip.pt"),
                 "model_config_path": str(models / "clip" / "sg4v-tiny-clip.json")},
        "llm": {"model": "fake-vlm"},
        "test_server": {"enabled": True, "latency_s": [0.0, 0.05], "allowed_image_counts": [0, 1, 2]},
        "stages": {"short_caption": {**gpu_share, "batch_size": 4}, "text_embed": gpu_share,
                   "clip_encode": gpu_share},
    })


def run_in_order(config):
    import ray.data

    from ray_jobs.runner import run_pipeline

    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        return run_pipeline(config)
    finally:
        context.execution_options.preserve_order = before


def stage_actor_nodes() -> dict[str, set[str]]:
    """Node ids of the actors of each pipeline stage that ran as an actor pool."""
    from ray.util.state import list_actors

    nodes: dict[str, set[str]] = {}
    for actor in list_actors(detail=True, limit=10_000, raise_on_missing_output=False):
        name = actor.class_name or ""
        if "MapBatches(" in name:
            stage = name.split("MapBatches(", 1)[1].split(")", 1)[0]
            nodes.setdefault(stage, set()).add(actor.node_id)
    return nodes


def comparable(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


def output_rows(output: Path) -> dict[str, list[dict]]:
    """dataset/ and rejected/ rows sorted by video_id, without timings (file names ignored)."""
    out = {}
    for folder in ("dataset", "rejected"):
        rows = [r for f in sorted((output / folder).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
        rows = [{k: comparable(v) for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]
        for r in rows:  # archives are named after their task's batch, which a cluster shape sets
            r["keyframe_paths"] = [member(p) for p in r.get("keyframe_paths") or []]
        out[folder] = sorted(rows, key=lambda r: r["video_id"])
    return out


def member(path: str) -> str:
    """A keyframe's name: its member name in an archive, else its path."""
    ranged = parse_range_uri(path)
    return ranged.member if ranged else path


def keyframe_files(output: Path) -> dict[str, bytes]:
    """Every kept row's keyframe images by name, read as the API stage reads them."""
    images = {}
    for f in sorted((output / "dataset").glob("*.parquet")):
        for paths in pq.read_table(f, columns=["keyframe_paths"]).column(0).to_pylist():
            for path in paths or []:
                with open_binary(join(str(output), path)) as image:
                    images[member(path)] = image.read()
    return images


@pytest.fixture(scope="module")
def multinode_run(inputs, tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    node_args = {"object_store_memory": 150 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node_args, "num_cpus": 2, "num_gpus": 0, "include_dashboard": True,
        "dashboard_host": "127.0.0.1"})
    cluster.add_node(**node_args, num_cpus=4, num_gpus=0, resources={"cpu_node": 1})
    cluster.add_node(**node_args, num_cpus=4, num_gpus=1, resources={"gpu_node": 1})
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("gpu_node")}
        output = tmp_path_factory.mktemp("multinode") / "out"
        summary = run_in_order(job_config(inputs, output))
        placement = stage_actor_nodes()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return summary, output, placement, gpu_nodes


@pytest.fixture(scope="module")
def single_node_run(inputs, tmp_path_factory, multinode_run):
    import ray

    output = tmp_path_factory.mktemp("single") / "out"
    ray.init(num_cpus=8, num_gpus=1, object_store_memory=200 * 1024**2, include_dashboard=False,
             logging_level=logging.WARNING)
    try:
        return run_in_order(job_config(inputs, output)), output
    finally:
        ray.shutdown()


def test_gpu_stages_run_only_on_the_gpu_node(multinode_run):
    summary, _, placement, gpu_nodes = multinode_run
    assert len(gpu_nodes) == 1
    assert summary.kept >= 3, summary.render()
    for stage in GPU_STAGES:
        assert placement.get(stage), f"no actor of {stage} found: {placement}"
        assert placement[stage] <= gpu_nodes, f"{stage} ran on {placement[stage]}, GPU node {gpu_nodes}"
    # The dedup actor declares no GPU: it may run anywhere, and it did run.
    assert placement.get("semantic_dedup")


def test_output_is_the_same_as_on_a_single_node(multinode_run, single_node_run):
    multi_summary, multi_out, _, _ = multinode_run
    single_summary, single_out = single_node_run
    assert (multi_summary.kept, multi_summary.rejected) == (single_summary.kept, single_summary.rejected)
    multi, single = output_rows(multi_out), output_rows(single_out)
    assert [r["video_id"] for r in multi["dataset"]] == [r["video_id"] for r in single["dataset"]]
    assert multi == single
    assert keyframe_files(multi_out) == keyframe_files(single_out)
    assert any(r["reason"] == "duplicate" for r in multi["rejected"])
