"""sharegpt4video export, read the way readers of the release read it: records by line, the
archive named by ``zip_folder`` opened with zipfile, ``video_path`` a member of it."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import pyarrow.json as pa_json

from operators.dataset.exports import ExportOptions, export
from tests.operators.dataset.conftest import DURATIONS, KEPT, decoded_duration


def records(dest: Path) -> list[dict]:
    return [json.loads(line) for line in (dest / "sharegpt4video.jsonl").read_text().splitlines()]


def archive(dest: Path, name: str) -> Path:
    """Where the release layout puts the archive a record names: zip_folder/<source>/<name>."""
    found = list((dest / "zip_folder").glob(f"*/{name}"))
    assert len(found) == 1, (name, found)
    return found[0]


def test_release_fields_and_caption_order(output, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        dest = Path(export(str(output), "sharegpt4video", str(tmp_path / "sg")).dest)
    assert "1 kept videos have no summary yet" in caplog.text
    recs = records(dest)
    assert sorted(r["video_id"] for r in recs) == KEPT
    alpha = next(r for r in recs if r["video_id"] == "alpha")
    assert alpha["timestamp"] == [0.0, 4.0, 8.5]
    assert alpha["captions"] == [
        {"idx": "0", "content": "alpha caption 0 at 0.00s"},
        {"idx": "1", "content": "alpha caption 1 at 4.00s"},
        {"idx": "2", "content": "alpha caption 2 at 8.50s"},
        {"idx": "-1", "content": "Summary of alpha: things happen."},
    ]
    assert Path(alpha["zip_folder"]).stem == "folder_videos_1"  # what third-party readers do
    clip = next(r for r in recs if r["video_id"] == "clip.7")
    assert (clip["clip_start"], clip["clip_end"]) == (10.0, 16.0)
    assert "keyframe_paths" not in clip
    table = pa_json.read_json(dest / "sharegpt4video.jsonl")  # standard readers load it as a table
    assert table.num_rows == 4


def test_every_record_points_into_an_archive_holding_its_video(output, tmp_path):
    dest = Path(export(str(output), "sharegpt4video", str(tmp_path / "sg")).dest)
    for rec in records(dest):
        with zipfile.ZipFile(archive(dest, rec["zip_folder"])) as zf:
            assert rec["video_path"] in zf.namelist()
            data = zf.read(rec["video_path"])
        assert rec["captions"][-1]["idx"] == "-1"
        times = rec["timestamp"]
        duration = decoded_duration(io.BytesIO(data))
        assert abs(duration - DURATIONS[rec["video_id"]]) <= 0.5
        assert times == sorted(times) and 0.0 <= times[0] and times[-1] < duration


def test_archives_roll_over_at_the_cap(output, tmp_path):
    dest = Path(export(str(output), "sharegpt4video", str(tmp_path / "sg"),
                       ExportOptions(archive_size=1, keyframes=True)).dest)
    recs = records(dest)
    assert sorted(r["zip_folder"] for r in recs) == [f"folder_videos_{i}.zip" for i in range(1, 5)]
    for rec in recs:
        assert all((dest / p).is_file() for p in rec["keyframe_paths"])
    assert not list(dest.rglob(".tmp-*"))
