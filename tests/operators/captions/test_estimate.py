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


def test_summary_model_is_priced_on_its_own():
    from operators.llm.config import ModelPrice, default_prices

    prices = {**default_prices(), "cheap": ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)}
    same = estimate_from_keyframe_counts([4] * 10, (640, 360), config())
    cheap = estimate_from_keyframe_counts([4] * 10, (640, 360), config(summary_model="cheap", prices=prices))
    assert same.input_tokens == cheap.input_tokens and same.calls == cheap.calls
    assert cheap.summary_cost_usd == 0.0 and same.summary_cost_usd > 0
    assert cheap.cost_usd == pytest.approx(same.cost_usd - same.summary_cost_usd)
    assert "of which summaries   $0.00 (cheap)" in render_estimate(cheap)
    assert cheap.summary_model == "cheap"


def test_fast_mode_is_one_call_and_one_image_per_video_and_cheaper():
    from operators.captions.estimate import compare_methods, render_comparison

    diffsw, fast = compare_methods([4, 9, 1], (640, 360), config())
    assert (fast.calls, fast.images, fast.summary_calls) == (3, 3, 0)
    assert diffsw.calls == 4 + 9 + 1 + 3
    assert fast.cost_usd < diffsw.cost_usd
    assert "fast mode costs" in render_comparison(diffsw, fast)
    assert estimate_from_keyframe_counts([4], (640, 360), config(method="fast")).method == "fast"


def test_sharecaptioner_layout_sends_one_stacked_image_per_step():
    e = estimate_from_keyframe_counts([3], (640, 360), config(prompts="sharecaptioner"))
    assert e.images == 3 and e.calls == 4
