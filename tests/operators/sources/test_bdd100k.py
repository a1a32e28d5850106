from __future__ import annotations

import pytest

from operators.sources import BDD100KSource, list_source_rows

from .conftest import touch

NAMES = {
    "train": ["b1c66a42-6f7d68ca.mov", "b1c81faa-3df17267.mov"],
    "val": ["b1c9c847-3bda4659.mov"],
    "test": ["cabc30fc-e7726578.mov"],
}


def make_layout(root) -> None:
    for split, names in NAMES.items():
        for name in names:
            touch(root / "bdd100k" / "videos" / split / name)
    touch(root / "bdd100k" / "videos" / "train" / "readme.txt")


def rows_of(**config) -> list[dict]:
    return list(list_source_rows(BDD100KSource(kind="bdd100k", **config)))


def test_all_splits_by_video_name(tmp_path):
    make_layout(tmp_path)
    rows = rows_of(root=str(tmp_path / "bdd100k"))
    assert [r["video_id"] for r in rows] == [
        "b1c66a42-6f7d68ca", "b1c81faa-3df17267", "b1c9c847-3bda4659", "cabc30fc-e7726578",
    ]  # fmt: skip
    assert rows[2]["uri"] == str(tmp_path / "bdd100k/videos/val/b1c9c847-3bda4659.mov")
    assert all(r["source"] == "bdd100k" and r["reject_reason"] is None for r in rows)


def test_chosen_splits_and_videos_folder_as_root(tmp_path):
    make_layout(tmp_path)
    rows = rows_of(root=str(tmp_path / "bdd100k" / "videos"), splits=["val", "test"])
    assert [r["video_id"] for r in rows] == ["b1c9c847-3bda4659", "cabc30fc-e7726578"]


def test_a_missing_split_is_skipped_but_no_split_at_all_is_an_error(tmp_path):
    touch(tmp_path / "videos" / "val" / "x.MOV")
    assert [r["video_id"] for r in rows_of(root=str(tmp_path))] == ["x"]
    with pytest.raises(ValueError, match="videos/"):
        rows_of(root=str(tmp_path / "elsewhere"))
