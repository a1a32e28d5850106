"""Files a folder listing leaves out for their extension reach the run summary and stats.json."""

from __future__ import annotations

import json
from collections import Counter

from ray_jobs.config import load_config
from ray_jobs.runner import RunSummary, collect_rows


def test_counts_of_all_sources_reach_summary_and_stats(tmp_path):
    for folder, names in {"one": ["a.mp4", "a.srt", "b.ogv"], "two": ["c.mts", "c.json", "d.srt"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    config = load_config({
        "input": [{"kind": "folder", "path": str(tmp_path / "one")},
                  {"kind": "folder", "path": str(tmp_path / "two")}],
        "output": str(tmp_path / "out"),
    })
    summary = RunSummary(output=config.output)
    rows = collect_rows(config, summary.skipped_by_extension)
    assert [r["video_id"] for r in rows] == ["a", "b", "c"]
    assert summary.skipped_by_extension == Counter({".srt": 2, ".json": 1})

    stats = json.loads(json.dumps(summary.to_json()))
    assert stats["skipped_by_extension"] == 3
    assert stats["skipped_by_extension_detail"] == {".srt": 2, ".json": 1}
    assert "3 files: .srt x2, .json x1" in summary.render()


def test_nothing_skipped_says_nothing(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    config = load_config({"input": {"kind": "folder", "path": str(tmp_path)}, "output": str(tmp_path / "o")})
    summary = RunSummary(output=config.output)
    collect_rows(config, summary.skipped_by_extension)
    assert summary.to_json()["skipped_by_extension"] == 0 and "not listed" not in summary.render()
    assert len(collect_rows(config)) == 1  # the count is optional
