from __future__ import annotations

import json
import logging
import tarfile

import pyarrow.json as pa_json
import pytest

from ray_jobs.exports import export, export_llava, export_sharegpt4video, export_webdataset, sample_key
from tests.ray_jobs.fake_output import UNCAPTIONED, VIDEOS, write_output

EXPORTED = sorted(v["video_id"] for v in VIDEOS)


@pytest.fixture
def output(tmp_path):
    return write_output(tmp_path / "out")


def test_sharegpt4video_release_format(output, caplog):
    with caplog.at_level(logging.WARNING):
        path = export_sharegpt4video(str(output))
    assert path == f"{output}/sharegpt4video.jsonl"
    assert "1 of 5 kept videos have no summary yet" in caplog.text
    records = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert [r["video_id"] for r in records] == EXPORTED
    alpha = records[0]
    assert alpha["video_path"] == "/videos/alpha.mp4"
    assert alpha["timestamp"] == [0.0, 4.0, 8.5]
    assert alpha["keyframe_paths"][1] == "keyframes/alpha/001_4000.jpg"
    assert alpha["captions"] == [
        {"idx": "0", "content": "alpha caption 0 at 0.00s"},
        {"idx": "1", "content": "alpha caption 1 at 4.00s"},
        {"idx": "2", "content": "alpha caption 2 at 8.50s"},
        {"idx": "-1", "content": "Summary of alpha: things happen."},
    ]
    clip = next(r for r in records if r["video_id"] == "clip.7")
    assert (clip["clip_start"], clip["clip_end"]) == (10.0, 16.0)
    # Standard readers load it as a table.
    table = pa_json.read_json(path)
    assert table.num_rows == 4 and table.column("video_id").to_pylist() == EXPORTED


def test_sharegpt4video_of_uncaptioned_run_is_empty_not_an_error(tmp_path):
    out = write_output(tmp_path / "out", videos=[])  # only the row written before the API stage
    path = export_sharegpt4video(str(out), dest=str(tmp_path / "release.jsonl"))
    assert open(path).read() == ""


def test_exports_work_on_object_storage(output):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(output), "/sg4v-out", recursive=True)
    path = export_sharegpt4video("memory://sg4v-out")
    lines = fs.cat_file("/sg4v-out/sharegpt4video.jsonl").decode().splitlines()
    assert path == "memory://sg4v-out/sharegpt4video.jsonl" and len(lines) == 4
    shards = export_webdataset("memory://sg4v-out", shard_size=3)
    assert shards == [f"memory://sg4v-out/webdataset/shard-00000{i}.tar" for i in (0, 1)]
    assert not [p for p in fs.ls("/sg4v-out", detail=False) if ".tmp-" in p]
    fs.rm("/sg4v-out", recursive=True)


def test_llava_conversations(output):
    records = json.load(open(export_llava(str(output))))
    assert [r["id"] for r in records] == EXPORTED
    alpha = records[0]
    assert alpha["video"] == "/videos/alpha.mp4" and "clip" not in alpha
    assert alpha["conversations"] == [
        {"from": "human", "value": "<video>\nDescribe this video in detail."},
        {"from": "gpt", "value": "Summary of alpha: things happen."},
    ]
    path = export(str(output), "llava", str(output / "turns.json"), keyframe_turns=True, video_root="/videos")[0]
    alpha = json.load(open(path))[0]
    assert alpha["video"] == "alpha.mp4"
    turns = alpha["conversations"]
    assert len(turns) == 2 + 2 * 3 and [t["from"] for t in turns] == ["human", "gpt"] * 4
    assert sum("<video>" in t["value"] for t in turns) == 1
    assert turns[2]["value"] == "Describe the frame at 0.0 s in detail."
    assert turns[4]["value"] == "What changes between 0.0 s and 4.0 s?"
    assert turns[5]["value"] == "alpha caption 1 at 4.00s"
    clip = next(r for r in json.load(open(path)) if r["id"] == "clip.7")
    assert clip["clip"] == [10.0, 16.0]


def test_webdataset_shards_read_back_with_tarfile(output):
    shards = export_webdataset(str(output), shard_size=3)
    assert [s.rsplit("/", 1)[1] for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
    names = [m.name for s in shards for m in tarfile.open(s).getmembers()]
    assert names[:4] == ["alpha.json", "alpha.000.jpg", "alpha.001.jpg", "alpha.002.jpg"]
    assert f"{sample_key('clip.7')}.json" in names and not any(n.startswith(UNCAPTIONED["video_id"]) for n in names)
    # A new export with bigger shards leaves no stale shard behind.
    assert len(export(str(output), "webdataset", shard_size=10)) == 1
    assert sorted(p.name for p in (output / "webdataset").iterdir()) == ["shard-000000.tar"]


def test_webdataset_shards_read_back_with_webdataset(output):
    wds = pytest.importorskip("webdataset")
    shards = export_webdataset(str(output), shard_size=2)
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert [s["json"]["video_id"] for s in samples] == EXPORTED
    gamma = samples[-1]
    assert gamma["__key__"] == "gamma" and gamma["json"]["summary"] == "Summary of gamma: things happen."
    images = sorted(k for k in gamma if k.endswith(".jpg"))
    assert images == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert gamma["000.jpg"].size == (64, 48)
    assert [k["caption"] for k in gamma["json"]["keyframes"]][1] == "gamma caption 1 at 6.00s"
    assert gamma["json"]["usage"]["calls"] == 5


def test_sample_keys_are_unique_and_dot_free():
    assert sample_key("gamma") == "gamma"
    keys = {sample_key(v) for v in ["a.b", "a_b", "a/b", "clip.7"]}
    assert len(keys) == 4 and not any("." in k or "/" in k for k in keys)


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export("/nowhere", "csv")


def test_webdataset_export_reads_packed_keyframes(tmp_path):
    """Keyframes packed into archives (the pipeline's default) export as the same images."""
    loose, packed = write_output(tmp_path / "loose"), write_output(tmp_path / "packed", packed=True)
    images = []
    for out in (loose, packed):
        shards = export_webdataset(str(out), shard_size=10)
        with tarfile.open(shards[0]) as tar:
            images.append({m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")})
    assert images[0] == images[1] and len(images[0]) == 3 + 1 + 2 + 4
