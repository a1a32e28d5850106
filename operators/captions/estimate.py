"""``sg4v estimate``: what the API stage will cost and how long it will take, before paying.

Pure arithmetic on what a dry run up to keyframe selection measured (the keyframe count and
image size of each video); no call is made. Per video with K keyframes the stage makes K vision
calls (1 image for keyframe 0, 2 for each later one) and one text-only summary call.

- Input tokens: the provider's image rule (``operators.llm.tokens.image_tokens``) for
  ``llm.detail`` at the size the images are sent (longest side ``llm.image_longest_side``;
  'auto' counted as 'high'), the rendered prompt templates counted with the run's tokenizer,
  the chat format's per-message tokens, and the previous caption (differential calls) and all
  captions (summary call) at an assumed typical length.
- Output tokens: an assumed typical length per caption (150 tokens) and per summary (400),
  never above ``llm.caption_max_tokens`` / ``llm.summary_max_tokens``; the worst case bills
  every call at its ``max_tokens``.
- Wall time: the slower of calls / requests-per-minute and tokens / tokens-per-minute (both
  minus ``llm.rate_headroom``, as the limiter paces), and never less than the longest video's
  chain of sequential calls at ``latency_s`` each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from operators.captions import sharecaptioner as sc
from operators.captions.diffsw_prompts import PromptSet, detailed_prompt, differential_prompt, summary_prompt
from operators.llm.budget import call_cost
from operators.llm.config import LLMConfig, ModelPrice
from operators.llm.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, image_tokens, text_counter

TYPICAL_CAPTION_TOKENS = 150
TYPICAL_SUMMARY_TOKENS = 400
#: "Frame 12, timestamp 34.56 s: " in front of each caption of the summary prompt.
CAPTION_LABEL_TOKENS = 12


@dataclass(frozen=True)
class Estimate:
    videos: int
    keyframes: int
    calls: int
    vision_calls: int
    summary_calls: int
    images: int
    input_tokens: int
    output_tokens: int
    output_tokens_max: int
    cost_usd: float | None
    cost_usd_max: float | None
    minutes: float
    binding: str  # "requests", "tokens" or "latency"
    requests_per_minute: int
    tokens_per_minute: int
    sample_scale: float = 1.0
    method: str = "diffsw"  # llm.method
    summary_model: str | None = None  # the text-only calls' model (llm.summary_model or llm.model)
    summary_cost_usd: float | None = None  # the summary calls' share of cost_usd

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def sent_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """The size an image is sent at: longest side at most ``longest_side``, never upscaled."""
    scale = min(1.0, longest_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def estimate_from_keyframe_counts(
    keyframe_counts: Sequence[int],
    image_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None,
    config: LLMConfig,
    *,
    total_videos: int | None = None,
    caption_tokens: int = TYPICAL_CAPTION_TOKENS,
    summary_tokens: int = TYPICAL_SUMMARY_TOKENS,
    latency_s: float = 3.0,
) -> Estimate:
    """The expected calls, tokens, cost and wall time of captioning these videos.

    ``keyframe_counts[i]`` is video i's number of keyframes; ``image_sizes`` is each video's
    keyframe (width, height), or one size for all, or None for 16:9 at
    ``llm.image_longest_side``. When the counts come from a sample of the inputs, pass
    ``total_videos``: every total is scaled by ``total_videos / len(keyframe_counts)``.
    """
    counts = [int(k) for k in keyframe_counts if int(k) > 0]
    n = len(counts)
    if image_sizes is None or (len(image_sizes) == 2 and isinstance(image_sizes[0], (int, float))):
        size = image_sizes or (config.image_longest_side, round(config.image_longest_side * 9 / 16))
        sizes = [tuple(size)] * len(keyframe_counts)  # type: ignore[arg-type]
    else:
        sizes = list(image_sizes)  # type: ignore[arg-type]
        if len(sizes) != len(keyframe_counts):
            raise ValueError(f"{len(sizes)} image sizes for {len(keyframe_counts)} videos")
    sizes = [s for s, k in zip(sizes, keyframe_counts, strict=True) if int(k) > 0]

    c = config
    if c.method == "fast":
        return estimate_fast(counts, sizes, c, scale_to=total_videos, summary_tokens=summary_tokens,
                             latency_s=latency_s)
    count = text_counter(c.model, c.tokenizer)
    overhead = TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
    detail = "high" if c.detail == "auto" else c.detail
    caption_out = min(caption_tokens, c.caption_max_tokens)
    summary_out = min(summary_tokens, c.summary_max_tokens)
    stacked = c.prompts.set == "sharecaptioner"  # one image per step: both frames, 50 px apart
    if stacked:
        first_text = count(sc.FIRST_FRAME) + overhead
        diff_text = count(sc.differential_text("", 0, 0.0, 1, 2.0)) + overhead + caption_out
        summary_base = count(sc.SUMMARY_HEAD) + overhead
        label = count(sc.SUMMARY_LINE.format(number=12, timestamp="34.56", text=""))
    else:
        prompts = PromptSet.load(c.prompts)
        first_text = count(detailed_prompt(prompts.detailed, 0, 0.0)) + overhead
        diff_text = count(differential_prompt(prompts.differential, "", 0, 0.0, 1, 2.0)) + overhead + caption_out
        summary_base = count(summary_prompt(prompts.summary, [])) + overhead
        label = CAPTION_LABEL_TOKENS
    summary_calls = sum(1 for k in counts if k > 1 or c.summarize_single_keyframe)

    def tokens_of(w: int, h: int) -> int:
        return image_tokens(w, h, detail, c.image_base_tokens, c.image_tile_tokens)

    vision_in = summary_in = output = output_max = summary_output = summary_output_max = 0
    for k, (w, h) in zip(counts, sizes, strict=True):
        sw, sh = sent_size(int(w), int(h), c.image_longest_side)
        image = tokens_of(sw, sh)
        step_images = tokens_of(sw, 2 * sh + sc.STACK_GAP_PX) if stacked else 2 * image
        vision_in += first_text + image + (k - 1) * (diff_text + step_images)
        output += k * caption_out
        output_max += k * c.caption_max_tokens
        if k > 1 or c.summarize_single_keyframe:
            summary_in += summary_base + k * (caption_out + label)
            summary_output += summary_out
            summary_output_max += c.summary_max_tokens

    scale = (total_videos / n) if total_videos and n else 1.0
    keyframes = sum(counts)
    calls = keyframes + summary_calls
    vision_cost = _cost(c.price(), vision_in, output, output_max)
    summary_cost = _cost(c.price(c.text_model), summary_in, summary_output, summary_output_max)
    input_tokens = vision_in + summary_in
    eff = 1.0 - c.rate_headroom
    by_requests = scale * calls / (c.requests_per_minute * eff)
    by_tokens = scale * (input_tokens + output + summary_output) / (c.tokens_per_minute * eff)
    by_latency = (max(counts) + 1) * latency_s / 60 if counts else 0.0
    minutes, binding = max((by_requests, "requests"), (by_tokens, "tokens"), (by_latency, "latency"))
    total, total_max = _sum_costs(vision_cost, summary_cost)
    return Estimate(
        videos=round(scale * n),
        keyframes=round(scale * keyframes),
        calls=round(scale * calls),
        vision_calls=round(scale * keyframes),
        summary_calls=round(scale * summary_calls),
        images=round(scale * (keyframes if stacked else sum(2 * k - 1 for k in counts))),
        input_tokens=round(scale * input_tokens),
        output_tokens=round(scale * (output + summary_output)),
        output_tokens_max=round(scale * (output_max + summary_output_max)),
        cost_usd=None if total is None else scale * total,
        cost_usd_max=None if total_max is None else scale * total_max,
        minutes=minutes,
        binding=binding,
        requests_per_minute=c.requests_per_minute,
        tokens_per_minute=c.tokens_per_minute,
        sample_scale=scale,
        method="diffsw",
        summary_model=c.text_model,
        summary_cost_usd=None if summary_cost[0] is None else scale * summary_cost[0],
    )


def _cost(price: ModelPrice | None, inputs: int, output: int, output_max: int) -> tuple[float | None, float | None]:
    """(typical, worst case) USD of calls with these tokens; None without a price."""
    if price is None:
        return None, None
    return call_cost(price, inputs, output), call_cost(price, inputs, output_max)


def _sum_costs(*costs: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    if any(c[0] is None for c in costs):
        return None, None
    return sum(c[0] for c in costs), sum(c[1] for c in costs)  # type: ignore[misc]


def estimate_fast(
    counts: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    config: LLMConfig,
    *,
    scale_to: int | None = None,
    summary_tokens: int = TYPICAL_SUMMARY_TOKENS,
    latency_s: float = 3.0,
) -> Estimate:
    """``llm.method: fast``: one call per video on a grid of at most ``llm.fast_max_keyframes``
    keyframe tiles, sent at ``llm.image_longest_side``; its answer (a summary's length, within
    ``llm.caption_max_tokens``) is the caption."""
    from operators.captions.fast_caption import FAST_PROMPT, grid_columns

    c = config
    count = text_counter(c.model, c.tokenizer)
    detail = "high" if c.detail == "auto" else c.detail
    out = min(summary_tokens, c.caption_max_tokens)
    inputs = 0
    for k, (w, h) in zip(counts, sizes, strict=True):
        tiles = min(k, c.fast_max_keyframes)
        columns = grid_columns(tiles, c)
        tw, th = sent_size(int(w), int(h), c.image_longest_side)
        rows = -(-tiles // columns)
        gw, gh = sent_size(columns * tw, rows * th, c.image_longest_side)
        text = sc.FAST if c.prompts.set == "sharecaptioner" else FAST_PROMPT.format(
            n=tiles, columns=columns, times=", ".join(["12.34"] * tiles))
        inputs += count(text) + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY + image_tokens(
            gw, gh, detail, c.image_base_tokens, c.image_tile_tokens)
    n = len(counts)
    scale = (scale_to / n) if scale_to and n else 1.0
    cost, cost_max = _cost(c.price(), inputs, n * out, n * c.caption_max_tokens)
    eff = 1.0 - c.rate_headroom
    by_requests = scale * n / (c.requests_per_minute * eff)
    by_tokens = scale * (inputs + n * out) / (c.tokens_per_minute * eff)
    minutes, binding = max((by_requests, "requests"), (by_tokens, "tokens"), (latency_s / 60, "latency"))
    return Estimate(
        videos=round(scale * n), keyframes=round(scale * sum(counts)), calls=round(scale * n),
        vision_calls=round(scale * n), summary_calls=0, images=round(scale * n),
        input_tokens=round(scale * inputs), output_tokens=round(scale * n * out),
        output_tokens_max=round(scale * n * c.caption_max_tokens),
        cost_usd=None if cost is None else scale * cost, cost_usd_max=None if cost_max is None else scale * cost_max,
        minutes=minutes, binding=binding, requests_per_minute=c.requests_per_minute,
        tokens_per_minute=c.tokens_per_minute, sample_scale=scale, method="fast",
        summary_model=None, summary_cost_usd=None,
    )


def _duration(minutes: float) -> str:
    if minutes < 1:
        return f"{math.ceil(minutes * 60)} s"
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{minutes / 60:.1f} h"


def _summary_line(e: Estimate) -> list[str]:
    if e.method != "diffsw" or e.summary_cost_usd is None:
        return []
    return [f"  of which summaries   ${e.summary_cost_usd:,.2f} ({e.summary_model})"]


def render_comparison(diffsw: Estimate, fast: Estimate) -> str:
    """One line per method, for ``sg4v estimate`` to show what ``llm.method: fast`` saves."""
    def line(name: str, e: Estimate) -> str:
        cost = "unknown" if e.cost_usd is None else f"${e.cost_usd:,.2f}"
        return f"{name:<22} {e.calls:>10,} calls {e.images:>10,} images {e.input_tokens + e.output_tokens:>14,} tokens  {cost}"

    ratio = ""
    if diffsw.cost_usd and fast.cost_usd is not None:
        ratio = f"\nfast mode costs {fast.cost_usd / diffsw.cost_usd:.0%} of DiffSW (one call per video, no summary)"
    return "\n".join(["method comparison:", line("diffsw", diffsw), line("fast", fast)]) + ratio


def compare_methods(
    keyframe_counts: Sequence[int],
    image_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None,
    config: LLMConfig,
    *,
    total_videos: int | None = None,
) -> tuple[Estimate, Estimate]:
    """(DiffSW, fast) estimates of the same videos, whichever ``llm.method`` the config has."""
    both = [
        estimate_from_keyframe_counts(
            keyframe_counts, image_sizes, config.model_copy(update={"method": m}), total_videos=total_videos
        )
        for m in ("diffsw", "fast")
    ]
    return both[0], both[1]


def render_estimate(e: Estimate) -> str:
    """The estimate as the CLI prints it."""
    cost = "unknown (no llm.prices entry for the model)" if e.cost_usd is None else f"${e.cost_usd:,.2f}"
    worst = (
        "" if e.cost_usd_max is None else f" (at most ${e.cost_usd_max:,.2f} if every answer hit max_tokens)"
    )
    sample = "" if e.sample_scale == 1.0 else f" (scaled x{e.sample_scale:.2f} from a sample)"
    lines = [
        f"videos to caption      {e.videos:,}{sample}",
        f"keyframes              {e.keyframes:,} ({e.keyframes / max(e.videos, 1):.1f} per video)",
        f"API calls              {e.calls:,} ({e.vision_calls:,} vision with {e.images:,} images, "
        f"{e.summary_calls:,} summaries)",
        f"input tokens           {e.input_tokens:,}",
        f"output tokens          {e.output_tokens:,} (typical length; {e.output_tokens_max:,} at max_tokens)",
        f"cost                   {cost}{worst}",
        *_summary_line(e),
        f"wall time              {_duration(e.minutes)} at {e.requests_per_minute:,} requests/min and "
        f"{e.tokens_per_minute:,} tokens/min ({e.binding} bind)",
    ]
    return "\n".join(lines)
