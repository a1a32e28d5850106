"""``sg4v summarize-clip`` and ``sg4v recaption`` against the local test server (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ray_jobs.cli import main
from testing.outputs import write_synthetic_output

PRICES = {"fake-vlm": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
          "fake-text": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}


def llm_section(url: str, **extra) -> dict:
    return {"model": "fake-vlm", "base_url": url, "api_key_env": None, "token_accounting": "usage",
            "prices": PRICES, **extra}


def write_run_config(out: Path, url: str, **llm) -> None:
    """The ``config.yaml`` a run leaves in its output (the resolved config)."""
    config = {"input": [{"kind": "folder", "path": str(out / "videos")}], "output": str(out),
              "llm": llm_section(url, **llm), "test_server": {"enabled": False}}
    (out / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def captioned(tmp_path) -> Path:
    """Six videos, keyframes (and captions) at 0, 2, 4, 6 and 8 s."""
    out = tmp_path / "out"
    write_synthetic_output(out, rows=6, keyframes_per_row=5)
    return out


def texts_sent(server) -> list[str]:
    return ["\n".join(r["texts"]) for r in server.requests]


def test_summarize_clip_sends_only_the_span_and_pays_once(captioned, start_server, capsys):
    server, url = start_server(record=True)
    write_run_config(captioned, url, summary_model="fake-text")
    argv = ["summarize-clip", str(captioned), "--video-id", "video-00000003", "--start", "1.5",
            "--end", "6.0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (sent,) = texts_sent(server)
    # The captions at 2, 4 and 6 s, in order; not those at 0 and 8 s, nor another video's.
    inside = [sent.index(f"video-00000003 at {t:.1f}s") for t in (2, 4, 6)]
    assert inside == sorted(inside)
    assert "video-00000003 at 0.0s" not in sent and "video-00000003 at 8.0s" not in sent
    assert "video-00000002" not in sent
    assert "from 1.50 s to 6.00 s" in sent
    assert server.requests[0]["model"] == "fake-text" and not server.requests[0]["images"]
    (file,) = (captioned / "clip_summaries").glob("*.parquet")
    (row,) = pq.read_table(file).to_pylist()
    assert (row["video_id"], row["start"], row["end"], row["num_captions"]) == ("video-00000003", 1.5, 6.0, 3)
    assert row["caption"] == server.requests[0]["answer"] and row["reason"] is None
    assert row["usage"]["calls"] == 1 and row["usage"]["cost_usd"] > 0
    assert row["caption"] in printed
    # Asking again is answered by the run's cache: no request, no cost, the same caption,
    # and the file is replaced rather than doubled.
    assert main(argv) == 0
    assert len(server.requests) == 1
    (again,) = pq.read_table(file).to_pylist()
    assert again["caption"] == row["caption"]
    assert again["usage"] == {"calls": 0, "cached_calls": 1, "input_tokens": 0, "output_tokens": 0,
                              "cost_usd": 0.0}
    assert len(list((captioned / "clip_summaries").glob("*.parquet"))) == 1


def test_summarize_clip_spans_file_says_why_a_span_has_no_summary(captioned, start_server, tmp_path, capsys):
    server, url = start_server(record=True)
    write_run_config(captioned, url)
    spans = tmp_path / "spans.csv"
    spans.write_text("video_id,start,end\nvideo-00000001,0,2.5\nvideo-00000001,2.5,3.5\n"
                     "no-such-video,0,10\nvideo-00000005,7,100\n")
    dest = tmp_path / "summaries"
    assert main(["summarize-clip", str(captioned), "--spans", str(spans), "--dest", str(dest)]) == 0
    (file,) = dest.glob("*.parquet")
    rows = pq.read_table(file).to_pylist()
    assert [(r["video_id"], r["num_captions"], r["reason"]) for r in rows] == [
        ("video-00000001", 2, None), ("video-00000001", 0, "no_captions_in_span"),
        ("no-such-video", 0, "unknown_video"), ("video-00000005", 1, None)]
    assert len(server.requests) == 2  # only the spans holding captions cost a call
    assert "no summary (unknown_video)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--video-id", "v"], "need --video-id, --start and --end"),
    (["--video-id", "v", "--start", "5", "--end", "2"], "0 <= start <= end"),
])
def test_summarize_clip_bad_arguments_are_named(captioned, argv, message, capsys):
    assert main(["summarize-clip", str(captioned), *argv]) == 2
    assert message in capsys.readouterr().err


def test_summarize_clip_needs_a_config_outside_a_run_output(tmp_path, capsys):
    assert main(["summarize-clip", str(tmp_path), "--video-id", "v", "--start", "0", "--end", "1"]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def write_llm_config(path: Path, url: str, **llm) -> Path:
    path.write_text(yaml.safe_dump({"input": [{"kind": "folder", "path": str(path.parent)}],
                                    "output": str(path.parent / "unused"), "llm": llm_section(url, **llm),
                                    "test_server": {"enabled": False}}))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recaption_prompts_to_detailed_captions(start_server, tmp_path, capsys):
    server, url = start_server(record=True)
    config = write_llm_config(tmp_path / "llm.yaml", url, concurrency_per_actor=3)
    prompts = [f"a corgi surfing wave number {i} at sunset" for i in range(7)]
    source = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"id": f"p{i}", "prompt": p}) for i, p in enumerate(prompts)]
    lines[3] = "{not json"
    lines.insert(5, json.dumps({"id": "empty", "prompt": "   "}))
    lines.append(json.dumps("a bare string prompt of a red kite"))
    source.write_text("\n".join(lines) + "\n\n")
    dest = tmp_path / "out" / "detailed.jsonl"
    argv = ["recaption", str(source), "--to", "detailed", "--dest", str(dest), "--config", str(config)]
    assert main(argv) == 0
    rows = read_jsonl(dest)
    # One output line per input line, in input order, none dropped.
    assert [r.get("id") for r in rows] == ["p0", "p1", "p2", None, "p4", "empty", "p5", "p6", None]
    assert rows[3]["recaption_reason"] == "bad_json" and "line 4" in rows[3]["line_error"]
    assert rows[5]["recaption_reason"] == "no_text" and rows[5]["detailed_caption"] is None
    good = [r for r in rows if r["recaption_reason"] is None]
    assert len(good) == 7 and len(server.requests) == 7
    answers = {r["answer"] for r in server.requests}
    assert {r["detailed_caption"] for r in good} == answers
    sent = texts_sent(server)
    for p in prompts[:3] + prompts[4:] + ["a bare string prompt of a red kite"]:
        assert sum(f"Prompt: {p}" in t for t in sent) == 1
    assert all("detailed caption" in t for t in sent)
    assert f"{dest}: 7 call(s), 0 from the cache" in capsys.readouterr().out
    assert not dest.with_name(dest.name + ".partial").exists()
    # Asked again: all from the cache, nothing paid.
    assert main(argv) == 0
    assert len(server.requests) == 7
    assert "0 call(s), 7 from the cache, $0.0000" in capsys.readouterr().out
    assert [r["detailed_caption"] for r in read_jsonl(dest)] == [r["detailed_caption"] for r in rows]


def test_recaption_detailed_captions_to_prompts_on_the_summary_model(start_server, tmp_path):
    server, url = start_server(record=True)
    config = write_llm_config(tmp_path / "llm.yaml", url, summary_model="fake-text")
    source = tmp_path / "captions.jsonl"
    source.write_text("\n".join(json.dumps({"video_id": f"v{i}", "summary": f"The video opens on a harbour {i}."})
                                for i in range(3)) + "\n")
    dest = tmp_path / "prompts.jsonl"
    assert main(["recaption", str(source), "--to", "prompt", "--dest", str(dest), "--config", str(config)]) == 0
    rows = read_jsonl(dest)
    assert [r["video_id"] for r in rows] == ["v0", "v1", "v2"]
    assert all(r["generation_prompt"] and r["recaption_reason"] is None for r in rows)
    assert all(r["usage"]["calls"] == 1 for r in rows)
    assert {r["model"] for r in server.requests} == {"fake-text"}
    sent = texts_sent(server)
    assert all("generation prompt" in t for t in sent)
    assert sorted(t.split("Caption: ")[1] for t in sent) == [f"The video opens on a harbour {i}." for i in range(3)]


def test_recaption_stops_paying_at_the_budget(start_server, tmp_path):
    server, url = start_server(record=True)
    config = write_llm_config(tmp_path / "llm.yaml", url, budget_usd=0.0005, concurrency_per_actor=1)
    source = tmp_path / "prompts.jsonl"
    source.write_text("\n".join(json.dumps({"prompt": f"prompt {i} " * 40}) for i in range(20)) + "\n")
    dest = tmp_path / "detailed.jsonl"
    assert main(["recaption", str(source), "--to", "detailed", "--dest", str(dest), "--config", str(config)]) == 0
    rows = read_jsonl(dest)
    assert len(rows) == 20
    stopped = [r for r in rows if r["recaption_reason"] == "budget"]
    assert stopped and len(server.requests) < 20
    assert sum(r["usage"]["cost_usd"] for r in rows) <= 0.0005 * 1.5
