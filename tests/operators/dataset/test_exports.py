"""The export registry: formats, destinations, bad input, object storage, streaming."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from operators.dataset.exports import FORMATS, ExportError, ExportOptions, export
from operators.dataset.exports.dest import MARKER
from operators.dataset.exports.options import parse_size
from ray_jobs.cli import build_parser
from tests.operators.dataset.conftest import KEPT, write_media_output
from tests.ray_jobs.conftest import sg4v
from tests.ray_jobs.fake_output import write_output


def test_the_cli_offers_exactly_the_registered_formats():
    parser = build_parser()
    export_parser = parser._subparsers._group_actions[0].choices["export"]
    choices = next(a.choices for a in export_parser._actions if a.dest == "format")
    assert tuple(choices) == tuple(FORMATS) == ("sharegpt4video", "llava", "webdataset", "hf")


def test_unknown_format_is_named(output):
    with pytest.raises(ExportError, match="unknown export format 'csv'"):
        export(str(output), "csv")


def test_missing_output_and_uncaptioned_run_exit_2_with_one_line(tmp_path):
    result = sg4v("export", str(tmp_path / "nowhere"), "--format", "llava", "--dest", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such output folder"]
    uncaptioned = write_output(tmp_path / "out", videos=[])  # only a row from before the API stage
    result = sg4v("export", str(uncaptioned), "--format", "hf", "--dest", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "none of its 1 kept videos has captions" in lines[0]
    assert not (tmp_path / "d").exists()


def test_a_folder_holding_another_export_needs_overwrite(output, tmp_path):
    dest = tmp_path / "d"
    first = sg4v("export", str(output), "--format", "webdataset", "--dest", str(dest), "--shard-size", "1")
    assert first.returncode == 0, first.stderr
    assert "4 videos exported" in first.stdout and len(list(dest.glob("*.tar"))) == 4
    again = sg4v("export", str(output), "--format", "llava", "--dest", str(dest))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: --dest {dest} holds a webdataset export of {output}; pass --overwrite to replace it"]
    replaced = sg4v("export", str(output), "--format", "webdataset", "--dest", str(dest), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in dest.glob("*.tar")) == ["00000.tar"]  # no stale shard left
    assert json.loads((dest / MARKER).read_text())["complete"] is True


def test_a_non_empty_folder_that_is_no_export_is_never_touched(output, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="not empty and holds no export"):
            export(str(output), "llava", str(tmp_path / "mine"), ExportOptions(overwrite=overwrite))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_spans_without_a_clip_file_are_left_out_with_the_reason(tmp_path, caplog):
    out = write_media_output(tmp_path / "out", clip_file=False)
    result = export(str(out), "llava", str(tmp_path / "llava"))
    assert result.tally.exported == len(KEPT) - 1 and result.tally.no_clip_file == 1
    assert "writer.clips: none" in caplog.text
    records = json.loads(Path(result.dest, "llava.json").read_text())
    assert "clip.7" not in {r["id"] for r in records}


def test_exports_read_and_write_object_storage(output):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(output), "/sg4v-out", recursive=True)
    try:
        export("memory://sg4v-out", "sharegpt4video", "memory://sg4v-exports/sg")
        lines = fs.cat_file("/sg4v-exports/sg/sharegpt4video.jsonl").decode().splitlines()
        assert len(lines) == len(KEPT)
        export("memory://sg4v-out", "webdataset", "memory://sg4v-exports/wds", ExportOptions(shard_size=3))
        assert sorted(p.rsplit("/", 1)[1] for p in fs.glob("/sg4v-exports/wds/*.tar")) == ["00000.tar", "00001.tar"]
        with fs.open("/sg4v-exports/wds/00001.tar", "rb") as f:
            assert len(tarfile.open(fileobj=f).getnames()) == 3
        assert not [p for p in fs.find("/sg4v-exports") if ".tmp-" in p]
    finally:
        for root in ("/sg4v-out", "/sg4v-exports"):
            if fs.exists(root):
                fs.rm(root, recursive=True)


def test_exports_stream_in_batches(output, monkeypatch):
    """Rows are read with ParquetFile.iter_batches, never a whole file or dataset at once."""
    import pyarrow.parquet as pq

    from operators.dataset.exports import rows

    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("whole-file read"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("whole-table read"))
    monkeypatch.setattr(rows, "READ_BATCH_ROWS", 1)
    assert sorted(r["video_id"] for r in rows.captioned_rows(str(output))) == KEPT


def test_sizes_parse():
    assert parse_size("2G") == 2 * 1024**3 and parse_size("500M") == 500 * 1024**2
    assert parse_size("1048576") == 1048576
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def run_config(output: Path, **export_section):
    from ray_jobs.config import load_config

    return load_config({"input": {"kind": "folder", "path": str(output)}, "output": str(output),
                        "export": export_section})


def test_a_run_exports_only_what_its_config_asks_after_its_output_is_written(tmp_path):
    from ray_jobs.runner import RunSummary, run_exports

    out = write_media_output(tmp_path / "out")
    summary = RunSummary(output=str(out))
    run_exports(run_config(out), summary)
    assert summary.exports == [] and not (out / "exports").exists()
    config = run_config(out, formats=["llava", "hf"], llava_media="video")
    for _ in range(2):  # a rerun replaces the exports the previous run wrote
        summary = RunSummary(output=str(out))
        run_exports(config, summary)
    assert summary.exports == [str(out / "exports" / "llava"), str(out / "exports" / "hf")]
    records = json.loads((out / "exports" / "llava" / "llava.json").read_text())
    assert records[0]["conversations"][0]["value"].startswith("<video>\n")
    uncaptioned = write_output(tmp_path / "early", videos=[])
    summary = RunSummary(output=str(uncaptioned))
    run_exports(run_config(uncaptioned, formats=["webdataset"]), summary)
    assert len(summary.export_errors) == 1 and "has captions" in summary.export_errors[0]


def test_run_export_config_is_checked_up_front(tmp_path):
    from ray_jobs.config import ConfigError, load_config

    base = {"input": {"kind": "folder", "path": str(tmp_path)}, "output": str(tmp_path)}
    with pytest.raises(ConfigError, match="unknown export format 'csv'"):
        load_config({**base, "export": {"formats": ["csv"]}})
    with pytest.raises(ConfigError, match="export.formats needs steps.captions"):
        load_config({**base, "export": {"formats": ["llava"]}, "steps": {"captions": False}})
    with pytest.raises(ConfigError, match="export.archive_size"):
        load_config({**base, "export": {"archive_size": "lots"}})
