"""`sg4v run` end to end on a local Ray: generated, real and broken videos."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.ray_jobs.conftest import sg4v

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def read_folder(path: Path) -> list[dict]:
    rows: list[dict] = []
    for file in sorted(path.glob("*.parquet")):
        rows.extend(pq.read_table(file).to_pylist())
    return rows


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    config = {"input": [{"kind": "folder", "path": str(corpus)}], "output": str(out),
              "ray": {"num_cpus": 2}, "frames": {"short_side": 160},
              "steps": {"short_caption": False, "dedup": False, "keyframes": False,
                        "captions": False}}
    config_path = out.parent / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = sg4v("run", str(config_path), "--set", "stages.probe.batch_size=4",
                  env={"OPENAI_API_KEY": "sk-canary-e2e-secret"})
    return corpus, out, result


def test_job_exits_zero_and_reports_rejections(run):
    _, _, result = run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rejected" in result.stdout
    assert "rejected at probe" in result.stdout


def test_every_input_appears_exactly_once(run):
    corpus, out, _ = run
    inputs = sorted(str(p) for p in corpus.rglob("*")
                    if (p.is_symlink() or p.is_file()) and p.name != "manifest.csv")
    kept, rejected = read_folder(out / "dataset"), read_folder(out / "rejected")
    seen = sorted([r["uri"] for r in kept] + [r["uri"] for r in rejected])
    assert seen == inputs
    ids = [r["video_id"] for r in kept + rejected]
    assert len(ids) == len(set(ids))


def test_bad_inputs_are_rejected_with_reasons(run):
    _, out, _ = run
    rejected = {Path(r["uri"]).name: r for r in read_folder(out / "rejected")}
    for name in ("zero.mp4", "random.mp4", "truncated.mp4", "text.mp4", "audio_only.mp4",
                 "dangling.mp4", "empty.mp4", "random_bytes.mp4", "notes.mp4"):
        assert rejected[name]["stage"] == "probe", rejected[name]
        assert rejected[name]["reason"], rejected[name]
    assert rejected["audio_only.mp4"]["reason"] == "no_video_stream"
    assert rejected["zero.mp4"]["reason"] == "empty_file"
    assert rejected["too_long.mp4"]["stage"] == "duration_filter"
    assert rejected["too_long.mp4"]["reason"] == "too_long"


def test_kept_videos_have_probe_data_and_frame_times(run):
    _, out, _ = run
    kept = {Path(r["uri"]).name: r for r in read_folder(out / "dataset")}
    assert {"three_scenes.mp4", "one_scene.mp4", "moving.webm", "cockatoo.mp4", "vtest.avi",
            "Megamind.avi", "tree.avi"} <= set(kept)
    scenes = kept["three_scenes.mp4"]
    assert (scenes["fps_num"], scenes["fps_den"]) == (30000, 1001)
    times = scenes["frame_timestamps"]
    assert times[:6] == pytest.approx([0, 2, 4, 6, 8, 10], abs=1 / 29.97)
    assert times[-1] == pytest.approx(359 * 1001 / 30000, abs=1e-3)
    assert kept["vtest.avi"]["codec"] == "msmpeg4"


def test_stats_and_resolved_config_are_written(run):
    corpus, out, _ = run
    stats = json.loads((out / "stats.json").read_text())
    kept, rejected = read_folder(out / "dataset"), read_folder(out / "rejected")
    assert stats["kept"] == len(kept) and stats["rejected"] == len(rejected)
    assert sum(stats["rejected_by_reason"].values()) == len(rejected)
    assert stats["stage_worker_seconds"]["sample_frames"] > 0
    config_text = (out / "config.yaml").read_text()
    assert yaml.safe_load(config_text)["input"][0]["path"] == str(corpus)
    for path in out.rglob("*"):
        if path.is_file():
            assert b"sk-canary-e2e-secret" not in path.read_bytes(), path


def test_rerun_resumes_without_redoing_work(run):
    _, out, _ = run
    before = sorted(p.name for p in out.rglob("*.parquet"))
    result = sg4v("run", str(out.parent / "config.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done" in result.stdout
    assert sorted(p.name for p in out.rglob("*.parquet")) == before


def test_bad_config_exits_nonzero_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"input": [{"kind": "folder", "path": str(tmp_path)}],
                                    "output": str(tmp_path / "o"), "frames": {"every": 2}}))
    result = sg4v("run", str(path))
    assert result.returncode == 2
    assert "frames.every: unknown key" in result.stderr


def test_missing_input_folder_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"input": {"kind": "folder", "path": str(tmp_path / "nope")},
                                    "output": str(tmp_path / "o"),
                                    "steps": {"keyframes": False, "captions": False}}))
    result = sg4v("run", str(path))
    assert result.returncode == 2
    assert "input.0 (folder)" in result.stderr


def test_missing_api_key_fails_before_any_work(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"input": {"kind": "folder", "path": str(tmp_path)},
                                    "output": str(tmp_path / "o"),
                                    "llm": {"api_key_env": "SG4V_TEST_UNSET_KEY"}}))
    result = sg4v("run", str(path), env={"SG4V_TEST_UNSET_KEY": ""})
    assert result.returncode == 2
    assert "SG4V_TEST_UNSET_KEY" in result.stderr and "steps.captions=false" in result.stderr
    assert not (tmp_path / "o").exists()
