from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from operators.sources import SourceConfig, list_source_rows, make_row, parse_source_config
from operators.sources.common import clip_id, parse_seconds, reject_duplicates

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sources.md"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        ("7.25", 7.25),
        ("0:00:05.005", 5.005),
        ("1:02:03.5", 3723.5),
        ("02:03", 123.0),
        ("0:01:05.005", 65.005),
    ],
)
def test_parse_seconds(value, seconds):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", None, True, [1]])
def test_parse_seconds_rejects(value):
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_clip_ids():
    assert clip_id("v", None, None) == "v"
    assert clip_id("v", 0.0, 60.0) == "v_0-60"
    assert clip_id("v", 5.005, 8.8) == "v_5.005-8.8"


def test_duplicates_keep_the_first_and_leave_rejected_rows_alone():
    rows = [
        make_row("a", "folder", "/1"),
        make_row("a", "folder", "/2"),
        make_row("b", "folder", "/3", reject_reason="missing_file", reject_detail="gone"),
        make_row("b", "folder", "/4"),
    ]
    out = list(reject_duplicates(rows))
    assert [r["reject_reason"] for r in out] == [None, "duplicate_id", "missing_file", "duplicate_id"]
    assert out[1]["uri"] == "/2" and "'a'" in out[1]["reject_detail"]


def test_every_yaml_example_in_the_docs_validates():
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    kinds = set()
    for block in blocks:
        for entry in yaml.safe_load(block)["input"]:
            kinds.add(parse_source_config(entry).kind)
    assert kinds == {"folder", "manifest", "panda70m", "ego4d", "bdd100k", "webdataset"}


def test_dispatcher_lists_through_the_union(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    config: SourceConfig = parse_source_config({"kind": "folder", "path": str(tmp_path)})
    assert [r["video_id"] for r in list_source_rows(config)] == ["a"]


def test_every_config_field_is_described():
    from operators.sources import (
        BDD100KSource,
        Ego4DSource,
        FolderSource,
        ManifestSource,
        Panda70MSource,
        WebDatasetSource,
    )

    for model in (FolderSource, ManifestSource, Panda70MSource, Ego4DSource, BDD100KSource, WebDatasetSource):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
