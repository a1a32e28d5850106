from __future__ import annotations

import pytest

from operators.captions.diffsw_prompts import PromptSet
from operators.captions.estimate import estimate_from_keyframe_counts, render_estimate, sent_size
from operators.llm.tokens import estimate_text_tokens_fallback
from tests.operators.llm.conftest import llm_config


def config(**overrides):
    settings = dict(model="gpt-4o", tokenizer="estimate", requests_per_minute=500, tokens_per_minute=30_000)
    return llm_config("https://api.openai.com/v1", **{**settings, **overrides})


def test_calls_and_images_follow_diffsw():
    e = estimate_from_keyframe_counts([3, 1, 5], (1280, 720), config())
    assert e.videos == 3 and e.keyframes == 9
    assert e.vision_calls == 9 and e.summary_calls == 3 and e.calls == 12
    assert e.images == (1 + 2 + 2) + 1 + (1 + 2 * 4)
    assert estimate_from_keyframe_counts([1], None, config(summarize_single_keyframe=False)).calls == 1


def test_tokens_and_cost_for_one_known_video():
    c = config(detail="high", image_longest_side=1024)
    e = estimate_from_keyframe_counts([2], (1920, 1080), c)
    # 1024x576 -> shortest side 576 <= 768, 2x2 tiles: 85 + 4 * 170 = 765 tokens per image
    assert sent_size(1920, 1080, 1024) == (1024, 576)
    prompts = PromptSet.load()
    count = estimate_text_tokens_fallback
    detailed = count(prompts.detailed.format(frame_index=0, timestamp="0.00")) + 6 + 765
    diff = (
        count(
            prompts.differential.format(
                prev_caption="", prev_index=0, prev_timestamp="0.00", frame_index=1, timestamp="2.00"
            ).strip()
        )
        + 6
        + 150
        + 2 * 765
    )
    summary = count(prompts.summary.format(captions="", num_keyframes=0).strip()) + 6 + 2 * (150 + 12)
    assert e.input_tokens == pytest.approx(detailed + diff + summary, abs=3)
    assert e.output_tokens == 2 * 150 + 400 and e.output_tokens_max == 2 * 512 + 1024
    assert e.cost_usd == pytest.approx((e.input_tokens * 2.5 + e.output_tokens * 10) / 1e6)
    assert e.cost_usd_max > e.cost_usd


def test_wall_time_from_the_binding_limit_and_sample_scaling():
    c = config(requests_per_minute=60, tokens_per_minute=10**9, rate_headroom=0.0)
    e = estimate_from_keyframe_counts([4] * 10, (640, 360), c, total_videos=100)
    assert e.calls == 500 and e.binding == "requests" and e.minutes == pytest.approx(500 / 60)
    t = estimate_from_keyframe_counts(
        [4] * 10, (640, 360), config(requests_per_minute=10**6, rate_headroom=0.0)
    )
    assert t.binding == "tokens"
    assert t.minutes == pytest.approx((t.input_tokens + t.output_tokens) / 30_000)
    low = estimate_from_keyframe_counts([4] * 10, (640, 360), config(detail="low"))
    assert low.input_tokens < t.input_tokens
    text = render_estimate(e)
    assert "500 (400 vision" in text and "requests bind" in text and "x10.00" in text
    assert "unknown" in render_estimate(estimate_from_keyframe_counts([2], None, config(model="my-vllm")))


def test_sizes_must_match_the_videos():
    with pytest.raises(ValueError, match="2 image sizes for 3 videos"):
        estimate_from_keyframe_counts([1, 2, 3], [(640, 360), (640, 360)], config())
