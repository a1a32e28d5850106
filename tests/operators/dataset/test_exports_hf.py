"""hf export, loaded by ``datasets.load_dataset(DIR)`` itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from operators.dataset.exports import export
from tests.operators.dataset.conftest import DURATIONS, KEPT, decoded_duration

datasets = pytest.importorskip("datasets")


def test_load_dataset_reads_the_folder_as_it_is(output, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dest = export(str(output), "hf", str(tmp_path / "hf")).dest
    ds = datasets.load_dataset(dest, cache_dir=str(tmp_path / "cache"))
    train = ds["train"]
    assert sorted(train["video_id"]) == KEPT
    for row in train:
        path = os.path.join(dest, row["video_path"])
        assert abs(decoded_duration(path) - DURATIONS[row["video_id"]]) <= 0.5
        assert row["captions"][0]["kind"] == "detailed" and row["summary"]
        assert [c["timestamp"] for c in row["captions"]] == row["keyframe_timestamps"]
    card = Path(dest, "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [f["name"] for f in header["dataset_info"]["features"]] == list(train.features)
    assert header["dataset_info"]["splits"][0]["num_examples"] == len(KEPT)
