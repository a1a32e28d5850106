"""Fast captioning (``llm.method: fast``): one call per video, on its keyframes tiled into one image.

ShareCaptioner-Video's cheap mode: no differential chain, no summary call; the answer is the
video's caption (``summary``, and one ``captions`` entry of kind ``fast``). At most
``llm.fast_max_keyframes`` keyframes are tiled (evenly chosen, first and last kept), row by row,
each at the first one's size, and the grid is sent at ``llm.image_longest_side``. With the
default prompt set the prompt states the time of every tile; with ``llm.prompts:
sharecaptioner`` it is the released string alone, as that model was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operators.captions import sharecaptioner as sc
from operators.llm.config import LLMConfig
from operators.llm.messages import image_part, resize_for_api, text_part, user_message

FAST_PROMPT = (
    "You are an expert video analyst who writes captions for a video-language training dataset.\n\n"
    "The image shows {n} keyframes of one video, tiled in time order from left to right and top to "
    "bottom ({columns} per row), taken at {times} seconds.\n\n"
    "Describe the whole video in detail and in chronological order: the subjects and their "
    "appearance, their actions and how they unfold, the objects and the setting, changes of scene, "
    "and the movements of the camera. Write precise, objective prose in one to three paragraphs, "
    "with no lists, headings or markdown, and without timestamps or tile numbers. Describe only what "
    "is visible, do not mention keyframes, tiles, images or a grid, and answer with the video "
    "description alone."
)


def pick_keyframes(count: int, limit: int) -> list[int]:
    """Up to ``limit`` of ``count`` positions, evenly spread, first and last included."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [0]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def grid_columns(n: int, config: LLMConfig) -> int:
    import math

    return max(1, min(n, config.fast_grid_columns or math.ceil(math.sqrt(n))))


def fast_message(frames: Sequence[bytes], times: Sequence[float], config: LLMConfig) -> dict[str, Any]:
    """The one message of a video in fast mode (``frames``: the chosen keyframes' JPEGs)."""
    columns = grid_columns(len(frames), config)
    grid = sc.tile_frames(frames, columns, config.image_jpeg_quality)
    grid = resize_for_api(grid, config.image_longest_side, config.image_jpeg_quality)
    if config.prompts.set == "sharecaptioner":
        prompt = sc.FAST
    else:
        stamps = ", ".join(f"{float(t):.2f}" for t in times)
        prompt = FAST_PROMPT.format(n=len(frames), columns=columns, times=stamps)
    return user_message(text_part(prompt), image_part(grid, config.detail))
