from __future__ import annotations

import pytest

from operators.sources import ROW_COLUMNS, FolderSource, list_source_rows, parse_source_config

from .conftest import touch, write_memory


def rows_of(**config) -> list[dict]:
    return list(list_source_rows(FolderSource(kind="folder", **config)))


def test_directory_nested_ids_are_relative_paths_without_extension(tmp_path):
    for name in ["a.mp4", "sub/b.MOV", "sub/deeper/c.webm", "notes.txt", ".hidden.mp4", "sub/._d.mp4"]:
        touch(tmp_path / name)
    rows = rows_of(path=str(tmp_path))
    assert [r["video_id"] for r in rows] == ["a", "sub/b", "sub/deeper/c"]
    assert [r["uri"] for r in rows] == [
        str(tmp_path / n) for n in ["a.mp4", "sub/b.MOV", "sub/deeper/c.webm"]
    ]
    for row in rows:
        assert tuple(row) == ROW_COLUMNS
        assert row["source"] == "folder"
        assert row["clip_start"] is None and row["clip_end"] is None and row["reject_reason"] is None


def test_not_recursive_and_extensions_case_insensitive(tmp_path):
    for name in ["A.MKV", "b.mkv", "c.mp4", "sub/d.mkv"]:
        touch(tmp_path / name)
    rows = rows_of(path=str(tmp_path), extensions=["MKV"], recursive=False)
    assert [r["video_id"] for r in rows] == ["A", "b"]


def test_glob_ids_relative_to_the_folder_before_the_wildcard(tmp_path):
    for name in ["x/1.mp4", "x/2.mp4", "y/3.mp4", "x/4.avi"]:
        touch(tmp_path / name)
    rows = rows_of(path=str(tmp_path / "*" / "*.mp4"))
    assert [r["video_id"] for r in rows] == ["x/1", "x/2", "y/3"]
    rows = rows_of(path=str(tmp_path / "**" / "*.avi"))
    assert [r["video_id"] for r in rows] == ["x/4"]


def test_ids_are_stable_across_runs_and_locations(tmp_path):
    for root in ["one", "two"]:
        for name in ["b.mp4", "a/c.mp4"]:
            touch(tmp_path / root / name)
    first = [r["video_id"] for r in rows_of(path=str(tmp_path / "one"))]
    assert first == [r["video_id"] for r in rows_of(path=str(tmp_path / "two"))]
    assert first == [r["video_id"] for r in rows_of(path=str(tmp_path / "one"))]


def test_same_stem_twice_keeps_both_with_their_extensions(tmp_path):
    touch(tmp_path / "v.mov")
    touch(tmp_path / "v.mp4")
    touch(tmp_path / "w.mp4")
    rows = rows_of(path=str(tmp_path))
    assert [(r["video_id"], r["reject_reason"]) for r in rows] == [
        ("v.mov", None), ("v.mp4", None), ("w", None),
    ]


def test_partitions_list_the_same_rows_as_one_listing(tmp_path):
    from operators.sources import folder

    for name in ["top.mp4", "a/x.mp4", "a/x.avi", "a/deep/y.mp4", "b/z.mp4"]:
        touch(tmp_path / name)
    config = FolderSource(kind="folder", path=str(tmp_path))
    parts = folder.partitions(config)
    assert [p["prefix"] for p in parts] == ["", "a", "b"]
    split = [r["video_id"] for p in parts for r in folder.list_partition(config, p)]
    assert sorted(split) == sorted(r["video_id"] for r in rows_of(path=str(tmp_path)))
    assert sorted(split) == ["a/deep/y", "a/x.avi", "a/x.mp4", "b/z", "top"]


def test_memory_uri_stands_in_for_a_bucket(memory_root):
    for name in ["videos/a.mp4", "videos/s/b.mp4", "videos/c.json"]:
        write_memory(f"{memory_root}/{name}", b"x")
    rows = rows_of(path=f"{memory_root}/videos")
    assert [r["video_id"] for r in rows] == ["a", "s/b"]
    assert all(r["uri"].startswith("memory://") and r["uri"].endswith(".mp4") for r in rows)
    globbed = rows_of(path=f"{memory_root}/videos/*.mp4")
    assert [r["video_id"] for r in globbed] == ["a"]


def test_missing_or_empty_folder_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        rows_of(path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no file"):
        rows_of(path=str(tmp_path))


def test_config_is_selected_by_kind_and_strict():
    config = parse_source_config({"kind": "folder", "path": "/data"})
    assert isinstance(config, FolderSource) and ".mp4" in config.extensions
    with pytest.raises(ValueError, match="recursiv"):
        parse_source_config({"kind": "folder", "path": "/data", "recursiv": False})
    with pytest.raises(ValueError):
        parse_source_config({"kind": "ftp", "path": "/data"})


def test_archive_and_camera_extensions_are_listed(tmp_path):
    names = ["a.ogv", "b.OGG", "c.mts", "d.m2ts", "e.vob", "f.mxf", "g.divx", "h.y4m"]
    for name in names:
        touch(tmp_path / name)
    listing = list_source_rows(FolderSource(kind="folder", path=str(tmp_path)))
    assert [r["video_id"] for r in listing] == [n.rsplit(".", 1)[0] for n in names]
    assert not listing.skipped_by_extension


def test_files_skipped_by_extension_are_counted(tmp_path):
    for name in ["a.mp4", "a.srt", "b.mp4", "b.srt", "sub/notes.TXT", "README", "c.tar.gz", ".hidden.txt"]:
        touch(tmp_path / name)
    (tmp_path / "folder.d").mkdir()
    listing = list_source_rows(FolderSource(kind="folder", path=str(tmp_path)))
    assert [r["video_id"] for r in listing] == ["a", "b"]
    # Hidden files and directories are not counted; extensions are lower-cased.
    assert dict(listing.skipped_by_extension) == {".srt": 2, ".txt": 1, "(none)": 1, ".gz": 1}


def test_a_folder_of_other_files_says_what_it_skipped(tmp_path):
    for name in ["a.txt", "b.txt", "c.json"]:
        touch(tmp_path / name)
    with pytest.raises(ValueError, match=r"skipped by extension: \.txt x2, \.json x1"):
        rows_of(path=str(tmp_path))


def test_skipped_extensions_are_bounded(tmp_path):
    from collections import Counter

    from operators.sources.files import list_files

    for k in range(50):
        touch(tmp_path / f"f{k}.x{k}")
    touch(tmp_path / "weird.name with space")
    skipped: Counter = Counter()
    _, _, paths = list_files(str(tmp_path), [".mp4"], skipped=skipped)
    assert paths == [] and sum(skipped.values()) == 51
    assert len(skipped) == 33 and skipped["(other)"] == 51 - 32


def test_remote_folder_counts_skipped_files(memory_root):
    for name in ["v/a.ogv", "v/a.json", "v/b.webm"]:
        write_memory(f"{memory_root}/{name}")
    listing = list_source_rows(FolderSource(kind="folder", path=f"{memory_root}/v"))
    assert [r["video_id"] for r in listing] == ["a", "b"]
    assert dict(listing.skipped_by_extension) == {".json": 1}


def test_an_ogg_video_is_listed_and_probed(tmp_path):
    # This PyAV build has no Theora encoder; VP8 in Ogg is the same container a .ogv names.
    from operators.video.probe import probe_video
    from testing.media import make_video

    make_video(tmp_path / "archive.ogv", num_frames=50, fps=25, width=64, height=48, codec="libvpx")
    (row,) = rows_of(path=str(tmp_path))
    assert row["video_id"] == "archive"
    info = probe_video(row["uri"])
    assert (info.fps, info.num_frames, info.file_duration) == (25, 50, 2.0)
