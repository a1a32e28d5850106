from __future__ import annotations

import csv

import pytest

from operators.sources import Panda70MSource, list_source_rows
from operators.sources.panda70m import parse_clip_ranges

from .conftest import live, touch, write_memory

VIDEOS = [
    (
        "--0K3x3FBWQ",
        [["0:00:00.000", "0:00:05.005"], ["0:00:05.005", "0:00:08.809"], ["0:01:02.500", "0:01:10.000"]],
        ["a man is standing in a kitchen", "the man's hands chop an onion", "a plate of food on a table"],
        [0.4517, 0.3938, 0.2201],
    ),
    (
        "-0AaXaEKpvE",
        [["0:00:13.280", "0:00:20.754"], ["0:00:20.754", "0:00:26.927"]],
        ["a red car drives down a road", "a car parked in front of a house"],
        [0.48, 0.51],
    ),
]


def write_csv(path, videos=VIDEOS, with_score=True) -> None:
    # The released CSVs hold Python list literals in the cells, as str(list) writes them.
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["videoID", "url", "timestamp", "caption"] + (["matching_score"] if with_score else [])
        )
        for vid, stamps, captions, scores in videos:
            cells = [vid, f"https://www.youtube.com/watch?v={vid}", str(stamps), str(captions)]
            writer.writerow(cells + ([str(scores)] if with_score else []))


def rows_of(**config) -> list[dict]:
    return list(list_source_rows(Panda70MSource(kind="panda70m", **config)))


def test_one_row_per_clip_with_bounds_and_captions(tmp_path):
    write_csv(tmp_path / "panda70m_training_2m.csv")
    for vid, *_ in VIDEOS:
        touch(tmp_path / "videos" / f"{vid}.mp4")
    rows = rows_of(csv=str(tmp_path / "panda70m_training_2m.csv"), root=str(tmp_path / "videos"))
    assert [r["video_id"] for r in rows] == [
        "--0K3x3FBWQ_0", "--0K3x3FBWQ_1", "--0K3x3FBWQ_2", "-0AaXaEKpvE_0", "-0AaXaEKpvE_1",
    ]  # fmt: skip
    assert [(r["clip_start"], r["clip_end"]) for r in rows] == [
        (0.0, 5.005), (5.005, 8.809), (62.5, 70.0), (13.28, 20.754), (20.754, 26.927),
    ]  # fmt: skip
    assert rows[1]["source_caption"] == "the man's hands chop an onion"
    assert rows[4]["source_caption"] == "a car parked in front of a house"
    assert rows[0]["uri"] == str(tmp_path / "videos" / "--0K3x3FBWQ.mp4")
    assert all(r["source"] == "panda70m" and r["reject_reason"] is None for r in rows)


def test_missing_video_yields_rejected_rows(tmp_path):
    write_csv(tmp_path / "p.csv")
    touch(tmp_path / "videos" / "-0AaXaEKpvE.mp4")
    rows = rows_of(csv=str(tmp_path / "p.csv"), root=str(tmp_path / "videos"))
    assert len(rows) == 5
    missing = [r for r in rows if r["reject_reason"] == "missing_file"]
    assert [r["video_id"] for r in missing] == ["--0K3x3FBWQ_0", "--0K3x3FBWQ_1", "--0K3x3FBWQ_2"]
    assert all("--0K3x3FBWQ.mp4" in r["reject_detail"] and r["reject_stage"] == "source" for r in missing)
    assert missing[0]["clip_end"] == 5.005 and missing[0]["source_caption"] is not None


def test_matching_score_filter_and_duplicate_video(tmp_path):
    write_csv(tmp_path / "p.csv", VIDEOS + VIDEOS[1:])
    for vid, *_ in VIDEOS:
        touch(tmp_path / "v" / f"{vid}.mp4")
    rows = rows_of(csv=str(tmp_path / "p.csv"), root=str(tmp_path / "v"), min_matching_score=0.4)
    reasons = [r["reject_reason"] for r in rows]
    assert reasons == [
        None,
        "low_matching_score",
        "low_matching_score",
        None,
        None,
        "duplicate_id",
        "duplicate_id",
    ]
    assert "0.3938" in rows[1]["reject_detail"]


def test_per_clip_files_on_a_bucket_and_csv_without_scores(tmp_path, memory_root):
    write_csv(tmp_path / "panda70m_testing.csv", VIDEOS[1:], with_score=False)
    write_memory(f"{memory_root}/clips/-0AaXaEKpvE_0.mp4")
    rows = rows_of(
        csv=str(tmp_path / "panda70m_testing.csv"), root=f"{memory_root}/clips", filename="{videoID}_{i}.mp4"
    )
    assert [(r["video_id"], r["reject_reason"]) for r in rows] == [
        ("-0AaXaEKpvE_0", None),
        ("-0AaXaEKpvE_1", "missing_file"),
    ]
    # A file that is already the clip has no bounds inside it.
    assert live(rows)[0]["clip_start"] is None and live(rows)[0]["uri"].startswith("memory://")


def test_cells_are_parsed_as_literals_never_evaluated(tmp_path):
    evil = "__import__('os').system('touch pwned')"
    with open(tmp_path / "p.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["videoID", "url", "timestamp", "caption", "matching_score"])
        writer.writerow(["vid1", "u", evil, "[]", "[]"])
        writer.writerow(["vid2", "u", "[['0:00:00.000', 'soon']]", "[]", "[]"])
        writer.writerow(["vid3", "u", "[['0:00:01.000', '0:00:02.000']]", evil, "[]"])
    touch(tmp_path / "vid3.mp4")
    rows = rows_of(csv=str(tmp_path / "p.csv"), root=str(tmp_path))
    assert [(r["video_id"], r["reject_reason"]) for r in rows] == [
        ("vid1", "bad_metadata"),
        ("vid2", "bad_metadata"),
        ("vid3_0", None),
    ]
    assert rows[2]["source_caption"] is None
    assert not (tmp_path / "pwned").exists()


def test_clip_range_parser():
    assert parse_clip_ranges("[['0:00:00.000', '0:00:05.005'], ['1:02:03.5', '1:02:04']]") == [
        (0.0, 5.005),
        (3723.5, 3724.0),
    ]
    for bad in ["[['0:00:05', '0:00:01']]", "[[1, 2, 3]]", "{'a': 1}", "[['x', 'y']]"]:
        with pytest.raises(ValueError):
            parse_clip_ranges(bad)


def test_missing_columns_and_unknown_template_fields_are_config_errors(tmp_path):
    (tmp_path / "p.csv").write_text("id,url\nx,y\n")
    with pytest.raises(ValueError, match="videoID"):
        rows_of(csv=str(tmp_path / "p.csv"), root=str(tmp_path))
    write_csv(tmp_path / "q.csv")
    with pytest.raises(ValueError, match="youtube_id"):
        rows_of(csv=str(tmp_path / "q.csv"), root=str(tmp_path), filename="{youtube_id}.mp4")
