from __future__ import annotations

import json

import pytest

from operators.sources import Ego4DSource, list_source_rows
from operators.sources.ego4d import windows

from .conftest import touch

UIDS = ["0a02a1ed-a327-4753-b270-e95298984b96", "0a8f6747-7f79-4176-85ca-f5ec01a15435"]


def video(uid: str, duration) -> dict:
    # The fields of a video entry in ego4d.json (v2), trimmed to the ones a builder reads plus context.
    return {
        "video_uid": uid,
        "duration_sec": duration,
        "scenarios": ["Cooking"],
        "video_metadata": {
            "video_duration_sec": duration,
            "video_fps": 30.0,
            "display_resolution_width": 1920,
        },
        "s3_path": f"s3://ego4d-consortium-sharing/public/v1/full_scale/{uid}",
        "origin_video_id": "P01_01",
        "device": "GoPro Hero 7",
        "split_em": "train",
        "is_stereo": False,
    }


def write_metadata(path, videos) -> None:
    data = {"date": "220131", "version": "v2", "description": "Ego4D metadata", "videos": videos, "clips": []}
    path.write_text(json.dumps(data))


def rows_of(**config) -> list[dict]:
    return list(list_source_rows(Ego4DSource(kind="ego4d", **config)))


def test_whole_videos_and_missing_files(tmp_path):
    write_metadata(tmp_path / "ego4d.json", [video(UIDS[0], 300.0), video(UIDS[1], 42.5)])
    touch(tmp_path / "full_scale" / f"{UIDS[0]}.mp4")
    rows = rows_of(metadata=str(tmp_path / "ego4d.json"), root=str(tmp_path / "full_scale"))
    assert [(r["video_id"], r["reject_reason"]) for r in rows] == [(UIDS[0], None), (UIDS[1], "missing_file")]
    assert rows[0]["uri"] == str(tmp_path / "full_scale" / f"{UIDS[0]}.mp4") and rows[0]["clip_start"] is None
    assert UIDS[1] in rows[1]["reject_detail"] and rows[1]["source"] == "ego4d"


def test_windows_of_a_300_s_video(tmp_path):
    write_metadata(tmp_path / "ego4d.json", [video(UIDS[0], 300.0), video(UIDS[1], 150.5)])
    for uid in UIDS:
        touch(tmp_path / f"{uid}.mp4")
    rows = rows_of(metadata=str(tmp_path / "ego4d.json"), root=str(tmp_path), window_s=60)
    first = [r for r in rows if r["uri"].endswith(f"{UIDS[0]}.mp4")]
    assert [(r["clip_start"], r["clip_end"]) for r in first] == [
        (0, 60),
        (60, 120),
        (120, 180),
        (180, 240),
        (240, 300),
    ]
    assert [r["video_id"] for r in first][:2] == [f"{UIDS[0]}_0-60", f"{UIDS[0]}_60-120"]
    second = [r for r in rows if r["uri"].endswith(f"{UIDS[1]}.mp4")]
    # The last, partial window is kept with its true end.
    assert [(r["clip_start"], r["clip_end"]) for r in second] == [(0, 60), (60, 120), (120, 150.5)]
    assert second[-1]["video_id"] == f"{UIDS[1]}_120-150.5"
    assert len({r["video_id"] for r in rows}) == len(rows)


def test_window_limits():
    assert windows(300.5, 60, 1.0, None)[-1] == (240, 300)  # 0.5 s tail dropped
    assert windows(300.5, 60, 0.0, None)[-1] == (300, 300.5)
    assert windows(30, 60, 1.0, None) == [(0, 30)]
    picked = windows(600, 60, 1.0, 3)
    assert picked == [(0, 60), (240, 300), (540, 600)]
    assert windows(600, 60, 1.0, 1) == [(0, 60)]


def test_max_windows_and_duration_from_video_metadata(tmp_path):
    entry = video(UIDS[0], 3600.0)
    del entry["duration_sec"]
    write_metadata(tmp_path / "ego4d.json", [entry])
    touch(tmp_path / f"{UIDS[0]}.mp4")
    rows = rows_of(
        metadata=str(tmp_path / "ego4d.json"), root=str(tmp_path), window_s=100, max_windows_per_video=4
    )
    assert [(r["clip_start"], r["clip_end"]) for r in rows] == [
        (0, 100),
        (1200, 1300),
        (2300, 2400),
        (3500, 3600),
    ]


def test_bad_entries_are_rejected_and_duplicates_kept_once(tmp_path):
    write_metadata(
        tmp_path / "ego4d.json", [video(UIDS[0], 60.0), {"duration_sec": 3.0}, video(UIDS[0], 60.0)]
    )
    touch(tmp_path / f"{UIDS[0]}.mp4")
    rows = rows_of(metadata=str(tmp_path / "ego4d.json"), root=str(tmp_path))
    assert [(r["video_id"], r["reject_reason"]) for r in rows] == [
        (UIDS[0], None),
        ("ego4d_video_1", "bad_metadata"),
        (UIDS[0], "duplicate_id"),
    ]


def test_metadata_without_videos_is_a_config_error(tmp_path):
    (tmp_path / "ego4d.json").write_text(json.dumps({"clips": []}))
    with pytest.raises(ValueError, match="videos"):
        rows_of(metadata=str(tmp_path / "ego4d.json"), root=str(tmp_path))
