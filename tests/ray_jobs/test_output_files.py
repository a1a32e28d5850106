"""A real run's output as object stores want it: few Parquet files of ``writer.rows_per_file``
rows, keyframes packed into per-task archives that the API stage, the report and
``open_binary`` all read."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from operators.dataset.report import write_report
from operators.io import join, open_binary, parse_range_uri
from operators.video.frames import decode_image
from tests.ray_jobs.conftest import sg4v
from tests.reliability.llm_runs import add_videos, job_config, write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS_PER_FILE = 8
EXTRA_VIDEOS = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    result = sg4v("samples", str(root / "samples"))
    assert result.returncode == 0, result.stderr[-3000:]
    add_videos(root / "samples", EXTRA_VIDEOS, scenes=3)
    config = job_config(root / "samples", root / "out", "http://unused", lean=True)
    config["test_server"] = {"enabled": True, "latency_s": [0.0, 0.02], "allowed_image_counts": [0, 1, 2]}
    config["llm"]["base_url"] = "http://127.0.0.1:1/v1"  # replaced by the run's own test server
    config["writer"] = {"rows_per_file": ROWS_PER_FILE}
    config["stages"]["select_keyframes"] = {"batch_size": 4}
    result = sg4v("run", str(write_config(root / "config.yaml", config)))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "out"


def rows_per_file(folder: Path) -> list[int]:
    return [pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet"))]


def test_files_hold_rows_per_file_rows(run):
    kept, rejected = rows_per_file(run / "dataset"), rows_per_file(run / "rejected")
    total = sum(kept) + sum(rejected)
    calls = math.ceil(total / ROWS_PER_FILE)
    print(f"output files: {total} videos; dataset/ {kept}; rejected/ {rejected}")
    assert sum(kept) >= EXTRA_VIDEOS and max(kept + rejected) <= ROWS_PER_FILE
    # One writer call per ROWS_PER_FILE rows (the last may hold fewer), one file per folder each.
    assert len(kept) <= calls and len(rejected) <= calls


def test_keyframes_are_packed_and_readable(run):
    objects = [p for p in (run / "keyframes").rglob("*") if p.is_file()]
    table = pq.read_table(run / "dataset", columns=["video_id", "keyframe_paths", "captions"]).to_pylist()
    paths = [p for row in table for p in row["keyframe_paths"]]
    print(f"keyframes: {len(paths)} images of {len(table)} videos in {len(objects)} archives")
    assert objects and all(p.suffix == ".tar" for p in objects)
    assert len(objects) <= math.ceil(len(table) / 4) * 2 and len(objects) < len(paths) / 3
    for row in table:
        assert row["captions"] and len(row["captions"]) == len(row["keyframe_paths"])  # the API read them
        for k, path in enumerate(row["keyframe_paths"]):
            member = parse_range_uri(path).member
            assert member.startswith(f"{row['video_id']}/{k:03d}_"), member
            with open_binary(join(str(run), path)) as f:
                assert decode_image(f.read()).ndim == 3


def test_report_shows_packed_keyframes(run):
    index = Path(write_report(str(run)))
    pages = sorted((index.parent / "data").glob("page-*.js"))
    embedded = sum(len(re.findall(r"data:image/jpeg;base64,", p.read_text())) for p in pages)
    kept = pq.read_table(run / "dataset", columns=["keyframe_paths"]).column(0).to_pylist()
    assert embedded == sum(len(p) for p in kept)
