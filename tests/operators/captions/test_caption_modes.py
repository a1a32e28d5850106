"""The caption chain's failure handling and ShareCaptioner-Video modes, against the test server."""

from __future__ import annotations

import io

from PIL import Image

from operators.captions import sharecaptioner as sc
from operators.captions.fast_caption import pick_keyframes
from operators.llm.config import LLMConfig, ModelPrice
from tests.operators.captions.test_diffsw import caption, digest, make_batch, reason, started
from tests.operators.llm.conftest import llm_config


def _rejects(out) -> list:
    return list(out["reject_reason"]) if "reject_reason" in out else [None] * len(out["summary"])


def test_truncated_caption_is_asked_again_with_a_larger_limit(start_server, tmp_path):
    server, url = started(start_server)
    # The test server's captions are ~50 tokens: 10 cuts them, 500 does not.
    config = llm_config(url, caption_max_tokens=10, max_tokens_retry=500, summary_max_tokens=500)
    out = caption(config, tmp_path, make_batch(tmp_path, {"a": [0.0, 2.0]}))
    assert reason(out, 0) is None
    assert [c["finish_reason"] for c in out["captions"][0]] == ["stop", "stop"]
    assert [r["max_tokens"] for r in server.requests] == [10, 500, 10, 500, 500]


def test_caption_truncated_twice_rejects_the_video(start_server, tmp_path):
    server, url = started(start_server)
    config = llm_config(url, caption_max_tokens=10, max_tokens_retry=20)
    out = caption(config, tmp_path, make_batch(tmp_path, {"a": [0.0, 2.0]}))
    assert reason(out, 0) == "truncated_caption"
    assert "max_tokens=20" in out["reject_detail"][0]
    assert [r["max_tokens"] for r in server.requests] == [10, 20]  # nothing after the cut


def test_skip_frame_drops_a_refused_keyframe_and_chains_from_the_last_good_one(start_server, tmp_path):
    server, url = started(start_server)
    times = [0.0, 2.5, 5.0, 7.5]
    batch = make_batch(tmp_path, {"v": times})
    paths = list(batch["keyframe_paths"][0])
    # keyframe 0 answered; keyframe 1 refused twice (the first attempt and its one retry).
    server.queue_faults([None, "refusal", "refusal"])  # type: ignore[list-item]
    out = caption(llm_config(url, on_frame_error="skip_frame"), tmp_path, batch)
    assert reason(out, 0) is None
    assert out["skipped_keyframes"][0] == [{"idx": 1, "timestamp": 2.5, "reason": "refusal"}]
    captions = out["captions"][0]
    assert [c["idx"] for c in captions] == [0, 2, 3]
    assert [c["kind"] for c in captions] == ["detailed", "differential", "differential"]
    ok = [r for r in server.requests if r["outcome"] == "ok"]
    after_skip = ok[1]  # keyframe 2 is compared with keyframe 0: its image, index and timestamp
    assert [im.digest for im in after_skip["images"]] == [digest(tmp_path, paths[0]), digest(tmp_path, paths[2])]
    assert "frame 0, at timestamp 0.00 s" in after_skip["texts"][0]
    assert "frame 2, at timestamp 5.00 s" in after_skip["texts"][0]
    assert captions[0]["text"] in after_skip["texts"][0]
    assert "Frame 1," not in ok[-1]["texts"][0] and "Frame 2, timestamp 5.00 s" in ok[-1]["texts"][0]


def test_reject_video_is_still_the_default(start_server, tmp_path):
    server, url = started(start_server)
    server.queue_faults([None, "refusal", "refusal"])  # type: ignore[list-item]
    out = caption(llm_config(url), tmp_path, make_batch(tmp_path, {"v": [0.0, 2.0, 4.0]}))
    assert reason(out, 0) == "refusal" and out["captions"][0] is None


def test_summary_model_makes_the_text_only_call(start_server, tmp_path):
    server, url = started(start_server)
    prices = {"fake-vlm": ModelPrice(input_per_mtok=1, output_per_mtok=2),
              "fake-text": ModelPrice(input_per_mtok=0, output_per_mtok=0)}
    config = llm_config(url, summary_model="fake-text", prices=prices, budget_usd=10)
    out = caption(config, tmp_path, make_batch(tmp_path, {"v": [0.0, 2.0]}))
    assert reason(out, 0) is None
    assert [len(r["images"]) for r in server.requests] == [1, 2, 0]
    assert [r["model"] for r in server.requests] == ["fake-vlm", "fake-vlm", "fake-text"]


def test_fast_mode_sends_one_tiled_image_per_video_and_no_summary(start_server, tmp_path):
    server, url = started(start_server)
    times = [0.0, 2.0, 4.0, 6.0, 8.0]
    out = caption(llm_config(url, method="fast"), tmp_path, make_batch(tmp_path, {"a": times, "b": times[:2]}))
    assert _rejects(out) == [None, None]
    assert [len(r["images"]) for r in server.requests] == [1, 1]
    sizes = sorted((im.width, im.height) for r in server.requests for im in r["images"])
    assert sizes == [(128, 48), (192, 96)]  # 5 tiles of 64x48 in 3 columns, 2 in 2
    for row in range(2):
        assert out["captions"][row][0]["kind"] == "fast"
        assert out["summary"][row] == out["captions"][row][0]["text"]
    five = next(r for r in server.requests if r["images"][0].width == 192)
    assert "5 keyframes" in five["texts"][0] and "(3 per row)" in five["texts"][0]
    assert "taken at 0.00, 2.00, 4.00, 6.00, 8.00 seconds" in five["texts"][0]


def test_fast_mode_keyframe_choice():
    assert pick_keyframes(3, 16) == [0, 1, 2]
    assert pick_keyframes(30, 4) == [0, 10, 19, 29]


def test_sharecaptioner_prompts_send_one_stacked_image_per_call(start_server, tmp_path):
    server, url = started(start_server)
    times = [0.0, 2.0, 4.0]
    out = caption(llm_config(url, prompts="sharecaptioner"), tmp_path, make_batch(tmp_path, {"v": times}))
    assert reason(out, 0) is None
    reqs = server.requests
    assert [len(r["images"]) for r in reqs] == [1, 1, 1, 0]
    assert (reqs[0]["images"][0].width, reqs[0]["images"][0].height) == (64, 48)
    for r in reqs[1:3]:
        assert (r["images"][0].width, r["images"][0].height) == (64, 2 * 48 + sc.STACK_GAP_PX)
    assert reqs[0]["texts"] == [sc.FIRST_FRAME]
    first = out["captions"][0][0]["text"]
    assert reqs[1]["texts"] == [
        "Here are the Video frame 0 at 0.00 Second(s) and Video frame 1 at 2.00 Second(s) of a video, "
        f"describe what happend between them. What happend before is: {first}"
    ]
    summary = reqs[3]["texts"][0]
    assert summary.startswith("Summarize the following per frame descriptions:\nVideo frame 1 at 0.00 Second(s) description: ")


def test_stacked_image_layout_matches_the_release():
    def jpeg(color, size=(40, 30)):
        out = io.BytesIO()
        Image.new("RGB", size, color).save(out, format="JPEG", quality=95)
        return out.getvalue()

    with Image.open(io.BytesIO(sc.stack_frames(jpeg((255, 0, 0)), jpeg((0, 0, 255)), 95))) as im:
        assert im.size == (40, 2 * 30 + 50)
        r, g, b = im.getpixel((20, 15))
        assert r > 200 and b < 60  # the previous frame on top
        assert min(im.getpixel((20, 30 + 25))) > 240  # the white gap
        r, g, b = im.getpixel((20, 30 + 50 + 15))
        assert b > 200 and r < 60


def test_prompt_set_shorthand():
    assert LLMConfig(prompts="sharecaptioner").prompts.set == "sharecaptioner"
    assert LLMConfig().prompts.set == "default"
