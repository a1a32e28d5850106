"""DiffCaptioner called directly (no Ray) against the local test server."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from operators.base import object_column
from operators.captions.diffsw import DiffCaptioner
from operators.captions.diffsw_prompts import (
    PromptSet,
    PromptTemplateError,
    detailed_prompt,
    differential_prompt,
    parse_caption,
    summary_prompt,
)
from operators.llm.config import PromptFiles
from operators.llm.errors import PermanentCallError
from tests.operators.llm.conftest import llm_config

CANARY = "sk-canary-THIS-KEY-MUST-NOT-LEAK-9876543210"


def write_video(root: Path, video_id: str, times: list[float], size: tuple[int, int] = (64, 48)) -> list[str]:
    """Keyframe JPEGs of one video under ``root/keyframes``; returns their relative paths."""
    paths = []
    seed = int(hashlib.sha1(video_id.encode()).hexdigest()[:6], 16)
    for k in range(len(times)):
        rel = f"keyframes/{video_id}/{k:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        color = ((seed + 70 * k) % 256, (seed // 256 + 40 * k) % 256, (seed // 65536) % 256)
        Image.new("RGB", size, color).save(root / rel, format="JPEG")
        paths.append(rel)
    return paths


def make_batch(root: Path, videos: dict[str, list[float]]) -> dict[str, Any]:
    ids = list(videos)
    return {
        "video_id": object_column(ids),
        "keyframe_paths": object_column([write_video(root, v, videos[v]) for v in ids]),
        "keyframe_timestamps": object_column([videos[v] for v in ids]),
    }


def digest(root: Path, rel: str) -> str:
    return hashlib.sha256((root / rel).read_bytes()).hexdigest()[:8]


def caption(config, root: Path, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    op = DiffCaptioner(config, output=str(root), **kwargs)
    op.setup()
    try:
        return op({k: v.copy() for k, v in batch.items()})
    finally:
        op.close()


def reason(out: dict[str, Any], i: int) -> str | None:
    """Row ``i``'s reject reason (the columns exist once some row was rejected)."""
    return out["reject_reason"][i] if "reject_reason" in out else None


def started(start_server, **settings):
    server, url = start_server(**settings)
    server.record = True
    return server, url


def test_call_sequence_and_content_for_a_known_video(start_server, tmp_path):
    server, url = started(start_server)
    times = [0.0, 2.5, 5.25]
    batch = make_batch(tmp_path, {"vid": times})
    out = caption(llm_config(url), tmp_path, batch)
    paths = list(batch["keyframe_paths"][0])
    reqs = server.requests
    assert [len(r["images"]) for r in reqs] == [1, 2, 2, 0]
    prompts = PromptSet.load()
    answers = [parse_caption(r["answer"]) for r in reqs]

    # keyframe 0: one image, the detailed prompt with its index and timestamp
    assert reqs[0]["texts"] == [detailed_prompt(prompts.detailed, 0, 0.0)]
    assert "frame 0, at timestamp 0.00 s" in reqs[0]["texts"][0]
    assert reqs[0]["images"][0].digest == digest(tmp_path, paths[0])
    assert reqs[0]["images"][0].detail == "high" and reqs[0]["max_tokens"] == 512
    # keyframe i: keyframes i-1 and i in that order, the caption written for i-1, both indices/times
    for i in (1, 2):
        r = reqs[i]
        assert [im.digest for im in r["images"]] == [
            digest(tmp_path, paths[i - 1]),
            digest(tmp_path, paths[i]),
        ]
        expected = differential_prompt(prompts.differential, answers[i - 1], i - 1, times[i - 1], i, times[i])
        assert r["texts"] == [expected]
        assert answers[i - 1] in r["texts"][0]
        assert f"frame {i - 1}, at timestamp {times[i - 1]:.2f} s" in r["texts"][0]
        assert f"frame {i}, at timestamp {times[i]:.2f} s" in r["texts"][0]
    # summary: text only, every timestamped caption
    summary_text = reqs[3]["texts"][0]
    assert reqs[3]["max_tokens"] == 1024
    for k in range(3):
        assert f"Frame {k}, timestamp {times[k]:.2f} s: {answers[k]}" in summary_text
    captions = [
        {"idx": k, "timestamp": times[k], "kind": kind, "text": answers[k]}
        for k, kind in enumerate(["detailed", "differential", "differential"])
    ]
    assert summary_text == summary_prompt(prompts.summary, captions)

    assert out["captions"][0] == [{**c, "finish_reason": "stop"} for c in captions]
    assert out["summary"][0] == answers[3]
    assert out["usage"][0]["calls"] == 4 and out["usage"][0]["cached_calls"] == 0
    assert out["usage"][0]["input_tokens"] == sum(r["prompt_tokens"] for r in reqs)
    assert reason(out, 0) is None


def test_many_videos_in_flight_at_once(start_server, tmp_path):
    server, url = started(start_server, latency_s=(0.3, 0.3))
    videos = {f"v{i}": [0.0, 2.0] for i in range(12)}  # 3 sequential calls each
    t0 = time.monotonic()
    out = caption(llm_config(url, concurrency_per_actor=16), tmp_path, make_batch(tmp_path, videos))
    elapsed = time.monotonic() - t0
    assert all(len(c) == 2 for c in out["captions"]) and server.stats["served"] == 36
    assert elapsed < 3.0  # sequential would be 12 x 3 x 0.3 = 10.8 s; in parallel ~0.9 s


def test_concurrent_batches_from_threads_share_the_slots(start_server, tmp_path):
    """Ray Data may call one actor's operator from two threads at once (max_concurrent_batches):
    both batches run on the one loop, every video takes one of the same slots, and each call
    gets back its own rows."""
    from concurrent.futures import ThreadPoolExecutor

    assert DiffCaptioner.max_concurrent_batches == 2
    server, url = started(start_server, latency_s=(0.2, 0.2))
    slow = make_batch(tmp_path, {f"a{i}": [0.0, 1.0, 2.0] for i in range(3)})  # 4 calls each
    quick = make_batch(tmp_path, {f"b{i}": [0.0] for i in range(4)})  # 2 calls each
    op = DiffCaptioner(llm_config(url, concurrency_per_actor=4), output=str(tmp_path))
    op.setup()
    in_flight, peak = 0, 0
    inner = op._client.complete

    async def counted(*args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await inner(*args, **kwargs)
        finally:
            in_flight -= 1

    op._client.complete = counted
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(op, {k: v.copy() for k, v in b.items()}) for b in (slow, quick)]
            out_slow, out_quick = (f.result(timeout=30) for f in futures)
    finally:
        op.close()
    assert list(out_slow["video_id"]) == ["a0", "a1", "a2"] and list(out_quick["video_id"]) == ["b0", "b1", "b2", "b3"]
    assert all(len(c) == 3 for c in out_slow["captions"]) and all(len(c) == 1 for c in out_quick["captions"])
    assert server.stats["served"] == 3 * 4 + 4 * 2
    assert peak == 4  # one pool of slots for both batches: never more than concurrency_per_actor


def test_transient_500_is_retried(start_server, tmp_path):
    server, url = started(start_server)
    server.queue_faults(["500", "503"])
    out = caption(llm_config(url), tmp_path, make_batch(tmp_path, {"v": [0.0, 1.0]}))
    assert out["captions"][0] is not None and reason(out, 0) is None
    assert server.stats["faults"] == {"500": 1, "503": 1} and server.stats["served"] == 3


def test_permanent_bad_image_rejects_only_that_video(start_server, tmp_path):
    server, url = started(start_server, allowed_image_counts=[0, 1])  # 2-image calls get a 400
    batch = make_batch(tmp_path, {"two": [0.0, 1.0], "one": [0.0]})
    out = caption(llm_config(url), tmp_path, batch)
    assert out["reject_stage"][0] == "diff_caption" and out["reject_reason"][0] == "bad_image"
    assert "unexpected_image_count" in out["reject_detail"][0]
    assert out["captions"][0] is None and out["usage"][0]["calls"] == 1  # the paid detailed call
    assert out["reject_reason"][1] is None and out["summary"][1]
    assert server.stats["bad_requests"] == 1  # not retried


def test_refusals_reject_the_video(start_server, tmp_path):
    server, url = started(start_server, fault_rates={"refusal": 1.0})
    out = caption(llm_config(url, refusal_retries=1), tmp_path, make_batch(tmp_path, {"v": [0.0, 1.0]}))
    assert out["reject_stage"][0] == "diff_caption" and out["reject_reason"][0] == "refusal"
    assert server.stats["requests"] == 2 and out["usage"][0]["calls"] == 2


def test_exhausted_retries_use_the_reason_a_rerun_retries(start_server, tmp_path):
    from operators.dataset.resume import RETRYABLE_REASONS

    server, url = started(start_server)
    server.queue_faults(["500"] * 3)
    out = caption(llm_config(url, max_attempts=3), tmp_path, make_batch(tmp_path, {"v": [0.0]}))
    assert out["reject_reason"][0] == "retries_exhausted" in RETRYABLE_REASONS
    assert "http_500" in out["reject_detail"][0]


def test_missing_keyframe_is_rejected_without_calls(start_server, tmp_path):
    server, url = started(start_server)
    batch = make_batch(tmp_path, {"v": [0.0, 1.0]})
    (tmp_path / batch["keyframe_paths"][0][0]).unlink()
    out = caption(llm_config(url), tmp_path, batch)
    assert out["reject_reason"][0] == "missing_keyframe" and server.stats["requests"] == 0


def test_rerun_is_served_from_the_cache(start_server, tmp_path):
    server, url = started(start_server)
    batch = make_batch(tmp_path, {"a": [0.0, 1.0, 2.0], "b": [0.0, 3.0]})
    first = caption(llm_config(url), tmp_path, batch)
    sent = server.stats["requests"]
    second = caption(llm_config(url), tmp_path, batch)
    assert sent == 7 and server.stats["requests"] == sent
    assert list(second["captions"]) == list(first["captions"])
    assert list(second["summary"]) == list(first["summary"])
    assert [u["calls"] for u in second["usage"]] == [0, 0]
    assert [u["cached_calls"] for u in second["usage"]] == [4, 3]


def test_failed_video_keeps_its_finished_calls_cached(start_server, tmp_path):
    server, url = started(start_server, allowed_image_counts=[0, 1])
    batch = make_batch(tmp_path, {"v": [0.0, 1.0, 2.0]})
    first = caption(llm_config(url), tmp_path, batch)
    assert first["reject_reason"][0] == "bad_image" and server.stats["requests"] == 2
    server2, url2 = started(start_server)  # the problem is fixed: a rerun pays only what failed
    second = caption(llm_config(url2), tmp_path, batch)
    assert reason(second, 0) is None
    assert server2.stats["requests"] == 3  # 2 differential calls + the summary; keyframe 0 cached
    assert second["usage"][0]["cached_calls"] == 1 and second["usage"][0]["calls"] == 3


def test_budget_cap_rejects_videos_not_started(start_server, tmp_path):
    server, url = started(start_server)
    config = llm_config(url, budget_usd=0.0005, concurrency_per_actor=1)  # one video costs ~$0.002
    out = caption(config, tmp_path, make_batch(tmp_path, {f"v{i}": [0.0, 1.0] for i in range(4)}))
    assert out["reject_reason"][0] is None
    assert list(out["reject_reason"][1:]) == ["budget"] * 3
    assert all(s == "diff_caption" for s in out["reject_stage"][1:]) and "budget_usd" in out["reject_detail"][1]
    assert server.stats["requests"] == 3  # nothing sent for the videos not started


def test_single_keyframe_summary_call_is_configurable(start_server, tmp_path):
    server, url = started(start_server)
    batch = make_batch(tmp_path, {"v": [0.0]})
    out = caption(llm_config(url, summarize_single_keyframe=False, cache=False), tmp_path, batch)
    assert server.stats["requests"] == 1 and out["summary"][0] == out["captions"][0][0]["text"]
    caption(llm_config(url, cache=False), tmp_path, batch)
    assert server.stats["requests"] == 3


def test_prompt_templates_are_overridable_and_checked(start_server, tmp_path):
    server, url = started(start_server)
    custom = tmp_path / "detailed.txt"
    custom.write_text('Describe frame {frame_index} at {timestamp} s. JSON looks like {{"a": 1}}.')
    config = llm_config(url, prompts=PromptFiles(detailed=str(custom)))
    caption(config, tmp_path, make_batch(tmp_path, {"v": [0.0]}))
    assert server.requests[0]["texts"] == ['Describe frame 0 at 0.00 s. JSON looks like {"a": 1}.']
    custom.write_text("Describe {frame} please")
    with pytest.raises(PromptTemplateError, match=r"llm.prompts.detailed.*unknown field \{frame\}"):
        DiffCaptioner(config, output=str(tmp_path))
    with pytest.raises(PromptTemplateError, match="cannot read"):
        DiffCaptioner(llm_config(url, prompts=PromptFiles(summary=str(tmp_path / "nope.txt"))), output="x")


def test_fatal_errors_stop_the_run_and_the_key_never_leaks(start_server, tmp_path, monkeypatch, caplog):
    server, url = started(start_server, required_api_key="sk-the-right-key-000000")
    monkeypatch.setenv("SG4V_TEST_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    batch = make_batch(tmp_path, {f"v{i}": [0.0, 1.0] for i in range(3)})
    with pytest.raises(PermanentCallError) as info:
        caption(llm_config(url, api_key_env="SG4V_TEST_KEY"), tmp_path, batch)
    assert info.value.fatal and info.value.reason == "http_401"
    texts = [str(info.value), repr(info.value), caplog.text, str(info.value.__context__)]
    assert all(CANARY not in t and "MUST-NOT-LEAK" not in t for t in texts)


def test_the_key_is_never_written_to_the_output(start_server, tmp_path, monkeypatch, caplog):
    server, url = started(start_server, required_api_key=CANARY)
    monkeypatch.setenv("SG4V_TEST_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    out = caption(llm_config(url, api_key_env="SG4V_TEST_KEY"), tmp_path, make_batch(tmp_path, {"v": [0, 1]}))
    assert out["summary"][0] and server.stats["unauthorized"] == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("llm_cache" in str(p) for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes()
    assert CANARY not in caplog.text and CANARY not in repr(out)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  A man walks.  ", "A man walks."),
        ('"A man walks a dog."', "A man walks a dog."),
        ("```\nA man walks.\n```", "A man walks."),
        ("## Caption\nA man walks.\n\nThe dog follows.", "A man walks.\n\nThe dog follows."),
        ("**Caption:** A man walks.", "A man walks."),
        ("Changes:\n- The man sits down\n- A dog enters.", "The man sits down. A dog enters."),
        ("1. A **red** car\n2) A bus", "A red car. A bus."),
        ('He said "hi" and "bye"', 'He said "hi" and "bye"'),
    ],
)
def test_parse_caption_cleans_form(answer, expected):
    assert parse_caption(answer) == expected


@pytest.mark.parametrize(
    "answer", ["", "   \n ", "```\n```", "## Caption", "- \n-", "I'm sorry, I can't help with that."]
)
def test_parse_caption_rejects_empty_and_refusals(answer):
    with pytest.raises(ValueError):
        parse_caption(answer)


def test_unusable_answers_are_asked_again_and_never_cached(start_server, tmp_path):
    import asyncio

    from operators.llm.cache import ResponseCache
    from operators.llm.client import LLMClient
    from operators.llm.errors import RefusalError
    from operators.llm.messages import text_part, user_message

    server, url = started(start_server)

    def reject_all(text: str) -> str:
        raise ValueError("no")

    async def main():
        client = LLMClient(llm_config(url, refusal_retries=1), cache=ResponseCache(str(tmp_path)))
        client.setup()
        try:
            await client.complete([user_message(text_part("hi"))], max_tokens=50, parse=reject_all)
        finally:
            await client.close()

    with pytest.raises(RefusalError) as info:
        asyncio.run(main())
    assert info.value.reason == "unusable_answer" and server.stats["requests"] == 2
    assert not list(tmp_path.rglob("*.json"))


def test_operator_declares_what_it_writes(start_server, tmp_path):
    _, url = started(start_server)
    op = DiffCaptioner(llm_config(url, concurrency_per_actor=7), output=str(tmp_path))
    assert op.resources.batch_size == 7 and op.stateful and op.resources.concurrency == (1, 4)
    batch = make_batch(tmp_path, {"v": [0.0]})
    out = caption(llm_config(url), tmp_path, batch)
    assert set(out) - set(batch) == set(DiffCaptioner.output_columns)
    assert set(DiffCaptioner.input_columns) <= set(batch)
    img = Image.open(io.BytesIO((tmp_path / batch["keyframe_paths"][0][0]).read_bytes()))
    assert img.format == "JPEG"


def test_packed_keyframes_are_read_by_byte_range(start_server, tmp_path):
    """Keyframes packed into an archive (``keyframes.packing: archive``) reach the API as the
    same images as loose files; an archive that is gone rejects the video without a call."""
    from operators.dataset.archive import write_archive

    server, url = started(start_server)
    times = [0.0, 2.5, 5.25]
    loose = make_batch(tmp_path / "loose", {"vid": times})
    caption(llm_config(url), tmp_path / "loose", loose)
    expected = [[im.digest for im in r["images"]] for r in server.requests]
    packed_root = tmp_path / "packed"
    members = [(p.split("/", 1)[1], (tmp_path / "loose" / p).read_bytes()) for p in loose["keyframe_paths"][0]]
    uris = write_archive(str(packed_root), ["vid"], members)
    assert all("#offset=" in u for u in uris) and not list(packed_root.rglob("*.jpg"))
    packed = {**loose, "keyframe_paths": object_column([uris])}
    n = len(server.requests)
    out = caption(llm_config(url, cache=False), packed_root, packed)
    assert reason(out, 0) is None and [[im.digest for im in r["images"]] for r in server.requests[n:]] == expected
    for archive in (packed_root / "keyframes").iterdir():
        archive.unlink()
    n = len(server.requests)
    out = caption(llm_config(url, cache=False), packed_root, packed)
    assert reason(out, 0) == "missing_keyframe" and len(server.requests) == n
