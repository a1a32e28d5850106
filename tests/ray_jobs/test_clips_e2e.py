"""A manifest of spans of one video, run end to end: each span gets its own clip file, and the
exports the run asks for pair every caption with its clip, as the consumers load them."""

import json
import os
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import yaml

from testing.media import read_index
from tests.ray_jobs.conftest import sg4v
from tests.ray_jobs.test_pipeline_e2e import smoke_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: three_scenes.mp4: 360 frames at 29.97 fps (12 s), red, then green from frame 120, blue from 240.
SPANS = {"three_scenes_0.5-5": (0.5, 5.0), "three_scenes_6-11.5": (6.0, 11.5)}


def test_spans_get_clip_files_and_every_export_carries_them(tmp_path):
    samples = tmp_path / "samples"
    assert sg4v("samples", str(samples)).returncode == 0
    manifest = tmp_path / "spans.csv"
    manifest.write_text("uri,start,end,caption\n"
                        "three_scenes.mp4,0.5,5,A red screen turns green.\n"
                        "three_scenes.mp4,6,11.5,A green screen turns blue.\n")
    out = tmp_path / "out"
    config = smoke_config(samples, out, manifest)
    config["steps"] = {"dedup": False}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = sg4v("run", str(tmp_path / "run.yaml"), "--export", "llava", "--export", "webdataset")
    assert result.returncode == 0, result.stderr[-4000:]

    kept = {r["video_id"]: r for f in sorted((out / "dataset").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}
    assert set(kept) == set(SPANS)
    for video_id, (start, end) in SPANS.items():
        row = kept[video_id]
        assert row["clip_path"] == f"keyframes/{video_id}/clip.mp4" and row["clip_file_start"] == start
        with av.open(str(out / row["clip_path"])) as c:
            frames = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
        assert read_index(frames[0][1]) == round(start * 30000 / 1001 + 0.4999)
        assert abs(frames[-1][0] + 1001 / 30000 - (end - start)) < 0.05
        for t in row["keyframe_timestamps"]:  # each keyframe is in the clip, at its own time
            assert 0.0 <= t < end - start

    llava = out / "exports" / "llava"
    records = json.loads((llava / "llava.json").read_text())
    assert {r["id"] for r in records} == set(SPANS)
    for rec in records:
        assert rec["conversations"][0]["value"].count("<image>") == 1
        with av.open(os.path.join(llava, rec["video"])) as c:
            assert abs(c.duration / 1e6 - (SPANS[rec["id"]][1] - SPANS[rec["id"]][0])) <= 0.5

    wds = pytest.importorskip("webdataset")
    shards = sorted(str(p) for p in (out / "exports" / "webdataset").glob("*.tar"))
    samples_read = list(wds.WebDataset(shards, shardshuffle=False).decode().to_tuple("mp4", "txt", "json"))
    assert sorted(meta["video_id"] for _, _, meta in samples_read) == sorted(SPANS)
    assert all(txt == meta["summary"] for _, txt, meta in samples_read)
    assert Path(out / "stats.json").is_file()
