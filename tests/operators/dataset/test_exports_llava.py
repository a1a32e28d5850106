"""llava export, checked with LLaVA-NeXT's access pattern: ``os.path.join(video_folder,
record["video"])`` opened as a video, the media token counted in the first human turn."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from operators.dataset.exports import ExportOptions, export
from operators.dataset.exports.llava import defuse, llava_record
from tests.operators.dataset.conftest import DURATIONS, KEPT, decoded_duration

TOKENS = re.compile(r"<(image|video)>")


@pytest.mark.parametrize("token", ["image", "video"])
def test_first_turn_holds_the_chosen_token_once_and_videos_decode(output, tmp_path, token):
    dest = export(str(output), "llava", str(tmp_path / "llava"),
                  ExportOptions(video_token=token, keyframe_turns=True)).dest
    records = json.loads(Path(dest, "llava.json").read_text())
    assert sorted(r["id"] for r in records) == KEPT
    for rec in records:
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert TOKENS.findall(turns[0]["value"]) == [token]
        assert not any(TOKENS.search(t["value"]) for t in turns[1:])
        path = os.path.join(dest, rec["video"])
        assert not os.path.isabs(rec["video"]) and os.path.isfile(path)
        assert abs(decoded_duration(path) - DURATIONS[rec["id"]]) <= 0.5
        assert "clip" not in rec


def test_keyframe_turns(output, tmp_path):
    dest = export(str(output), "llava", str(tmp_path / "llava"), ExportOptions(keyframe_turns=True)).dest
    alpha = next(r for r in json.loads(Path(dest, "llava.json").read_text()) if r["id"] == "alpha")
    turns = alpha["conversations"]
    assert turns[0]["value"] == "<image>\nDescribe this video in detail."
    assert turns[1]["value"] == "Summary of alpha: things happen."
    assert len(turns) == 2 + 2 * 3
    assert turns[2]["value"] == "Describe the frame at 0.0 s in detail."
    assert turns[4]["value"] == "What changes between 0.0 s and 4.0 s?"
    assert turns[5]["value"] == "alpha caption 1 at 4.00s"


def test_a_caption_quoting_a_media_token_is_defused():
    row = {"video_id": "v", "summary": "The sign reads <image> and <video>.", "captions": [
        {"idx": 0, "timestamp": 0.0, "kind": "detailed", "text": "A <image> tag."}]}
    rec = llava_record(row, "videos/v.mp4", keyframe_turns=True)
    values = [t["value"] for t in rec["conversations"]]
    assert sum(len(TOKENS.findall(v)) for v in values) == 1
    assert defuse("<image>") == "image"
