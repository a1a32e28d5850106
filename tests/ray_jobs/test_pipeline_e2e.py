"""The smoke config end to end: every step of the method with tiny models on a local Ray."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from operators.io import join, open_binary, parse_range_uri
from testing.samples import SAMPLE_CAPTIONS
from tests.ray_jobs.conftest import REPO, sg4v

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def rows(folder: Path) -> dict[str, dict]:
    out = {}
    for file in sorted(folder.glob("*.parquet")):
        for row in pq.read_table(file).to_pylist():
            assert row["video_id"] not in out, f"{row['video_id']} written twice"
            out[row["video_id"]] = row
    return out


def smoke_config(samples: Path, out: Path, manifest: Path | None = None) -> dict:
    text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text()
    config = yaml.safe_load(text.replace("out/samples", str(samples)).replace("out/smoke", str(out)))
    if manifest is not None:
        config["input"][0].update(path=str(manifest), root=str(samples))
    return config


@pytest.fixture(scope="module")
def smoke(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "out"
    config = out.parent / "smoke.yaml"
    config.write_text(yaml.safe_dump(smoke_config(samples, out)))
    result = sg4v("run", str(config), "--export", "sharegpt4video")
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_every_sample_appears_once_with_its_fate(smoke):
    out, result = smoke
    kept, rejected = rows(out / "dataset"), rows(out / "rejected")
    assert not set(kept) & set(rejected)
    assert set(kept) | set(rejected) == {Path(name).stem for name in SAMPLE_CAPTIONS}
    assert set(kept) == {"three_scenes", "one_scene", "moving"}
    assert "rejected at semantic_dedup: duplicate x1" in result.stdout


def test_near_identical_source_captions_are_deduplicated(smoke):
    out, _ = smoke
    dup = rows(out / "rejected")["three_scenes_again"]
    assert (dup["stage"], dup["reason"]) == ("semantic_dedup", "duplicate")
    detail = json.loads(dup["detail"])
    assert detail["nearest_id"] == "three_scenes"
    assert 0.85 <= detail["similarity"] < 1.0
    kept = rows(out / "dataset")
    ranks = sorted([r["dedup_rank"] for r in kept.values()] + [dup["dedup_rank"]])
    assert ranks == list(range(len(ranks)))


def test_short_captions_come_from_source_or_model(smoke):
    out, _ = smoke
    kept = rows(out / "dataset")
    assert kept["three_scenes"]["short_caption"] == "A red screen turns green and then blue."
    assert kept["moving"]["short_caption"]  # no source caption: the tiny captioner wrote one
    assert len(kept["moving"]["text_embedding"]) > 0


def test_keyframes_are_written_and_addressable(smoke):
    out, _ = smoke
    for row in rows(out / "dataset").values():
        times, paths = row["keyframe_timestamps"], row["keyframe_paths"]
        assert times[0] == 0.0 and len(times) == len(paths) >= 1
        assert times == sorted(times)
        for t, path in zip(times, paths, strict=True):
            with open_binary(join(str(out), path)) as f:  # a packed member, read by byte range
                assert f.read(3) == b"\xff\xd8\xff", path
            assert re.search(rf"_{round(t * 1000)}\.jpg$", parse_range_uri(path).member)


def test_rerun_rebuilds_dedup_state_from_kept_rows(samples, tmp_path):
    """A first run sees only the original; the rerun on the same output sees the paraphrase
    and must drop it against the video kept by the first run."""
    manifest = (samples / "manifest.csv").read_text().splitlines()
    first = tmp_path / "first.csv"
    first.write_text("\n".join(line for line in manifest if "three_scenes_again" not in line) + "\n")
    out = tmp_path / "out"
    for i, listing in enumerate([first, samples / "manifest.csv"]):
        config = tmp_path / f"run{i}.yaml"
        config.write_text(yaml.safe_dump(smoke_config(samples, out, listing)))
        result = sg4v("run", str(config))
        assert result.returncode == 0, result.stderr[-4000:]
    dup = rows(out / "rejected")["three_scenes_again"]
    assert dup["reason"] == "duplicate"
    assert json.loads(dup["detail"])["nearest_id"] == "three_scenes"
    assert "already done" in result.stdout
    assert not (out / "exports").exists()  # a run exports only when asked to


def test_calibrate_keyframes_prints_counts_per_threshold(samples, tmp_path):
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(smoke_config(samples, tmp_path / "out")))
    result = sg4v("calibrate-keyframes", str(config), "--sample", "8", "--thresholds", "0.5,0.93,0.999")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.index("feature cls:") < out.index("feature embed:")
    for table in (out[out.index("feature cls:"):out.index("feature embed:")], out[out.index("feature embed:"):]):
        lines = [line for line in table.splitlines() if line.startswith("| 0.")]
        assert [line.split("|")[1].strip() for line in lines] == ["0.500", "0.930 (default)", "0.999"]
        means = [float(line.split("|")[2]) for line in lines]
        assert means == sorted(means) and means[0] >= 1.0
    assert "4 videos (4 rejected on the way)" in out
    (matched,) = [line for line in out.splitlines() if line.startswith("embed threshold giving")]
    assert "cls gives at 0.930" in matched
    assert len([line for line in out.splitlines() if line.startswith("| ") and "@" not in line
                and not line.startswith("| 0.") and not line.startswith("| threshold")]) == 4  # per video
    assert not (tmp_path / "out" / "dataset").exists()


def test_keyframes_are_captioned_and_summarized(smoke):
    out, result = smoke
    stats = json.loads((out / "stats.json").read_text())
    calls = 0
    for row in rows(out / "dataset").values():
        captions = row["captions"]
        assert [c["idx"] for c in captions] == list(range(len(row["keyframe_paths"])))
        assert [c["kind"] for c in captions] == ["detailed"] + ["differential"] * (len(captions) - 1)
        assert [c["timestamp"] for c in captions] == row["keyframe_timestamps"]
        assert row["summary"] and row["usage"]["calls"] == len(captions) + 1
        calls += row["usage"]["calls"]
    assert stats["api_usage"]["calls"] == calls
    assert f"API: {calls} calls paid" in result.stdout
    release_dir = out / "exports" / "sharegpt4video"  # asked for with --export, after stats.json
    release = [json.loads(line) for line in (release_dir / "sharegpt4video.jsonl").read_text().splitlines()]
    assert {r["video_id"] for r in release} == set(rows(out / "dataset"))
    assert all(r["captions"][-1]["idx"] == "-1" for r in release)
    assert f"exported to {release_dir}" in result.stdout


def test_estimate_predicts_the_calls_of_the_run(smoke, samples, tmp_path):
    out, _ = smoke
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(smoke_config(samples, tmp_path / "out")))
    result = sg4v("estimate", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    line = next(x for x in result.stdout.splitlines() if x.startswith("API calls"))
    assert int(line.split()[2]) == stats["api_usage"]["calls"]
    assert not (tmp_path / "out").exists()


def test_summarize_clip_on_the_run_output_uses_its_own_config(smoke, tmp_path):
    """The run's resolved ``config.yaml`` is enough: the smoke config's test server answers."""
    out, _ = smoke
    video_id, row = sorted(rows(out / "dataset").items())[0]
    times = row["keyframe_timestamps"]
    dest = tmp_path / "summaries"
    result = sg4v("summarize-clip", str(out), "--video-id", video_id, "--start", "0",
                  "--end", str(times[-1]), "--dest", str(dest))
    assert result.returncode == 0, result.stderr[-3000:]
    (file,) = dest.glob("*.parquet")
    (summary,) = pq.read_table(file).to_pylist()
    assert summary["num_captions"] == len(times) and summary["caption"]
    assert summary["caption"] in result.stdout
