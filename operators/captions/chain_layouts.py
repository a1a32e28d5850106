"""How the DiffSW chain's calls look on the wire, per prompt set (``llm.prompts.set``).

A layout turns one step of the chain into a chat message: ``first`` (keyframe 0, or the first
kept keyframe after a skip), ``step`` (the previous kept keyframe, the current one and the
previous caption) and ``summary`` (text only). ``DefaultLayout`` sends the two keyframes as
two images with this project's templates; ``ShareCaptionerLayout`` sends them stacked in one
image with the released ShareCaptioner-Video strings. Pure functions of their inputs, so the
same step always builds the same message (and the same cache key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from operators.captions import sharecaptioner as sc
from operators.captions.diffsw_prompts import PromptSet, detailed_prompt, differential_prompt, summary_prompt
from operators.llm.config import LLMConfig
from operators.llm.messages import image_part, text_part, user_message

Message = dict[str, Any]


class ChainLayout(Protocol):
    def first(self, image: bytes, k: int, t: float) -> Message: ...

    def step(
        self, prev_image: bytes, image: bytes, prev_caption: str, prev_k: int, prev_t: float, k: int, t: float
    ) -> Message: ...

    def summary(self, captions: Sequence[Mapping[str, Any]]) -> Message: ...


@dataclass(frozen=True)
class DefaultLayout:
    prompts: PromptSet
    detail: str

    def first(self, image: bytes, k: int, t: float) -> Message:
        return user_message(text_part(detailed_prompt(self.prompts.detailed, k, t)), image_part(image, self.detail))

    def step(
        self, prev_image: bytes, image: bytes, prev_caption: str, prev_k: int, prev_t: float, k: int, t: float
    ) -> Message:
        prompt = differential_prompt(self.prompts.differential, prev_caption, prev_k, prev_t, k, t)
        return user_message(
            text_part(prompt), image_part(prev_image, self.detail), image_part(image, self.detail)
        )

    def summary(self, captions: Sequence[Mapping[str, Any]]) -> Message:
        return {"role": "user", "content": summary_prompt(self.prompts.summary, captions)}


@dataclass(frozen=True)
class ShareCaptionerLayout:
    detail: str
    jpeg_quality: int = 90

    def first(self, image: bytes, k: int, t: float) -> Message:
        return user_message(text_part(sc.FIRST_FRAME), image_part(image, self.detail))

    def step(
        self, prev_image: bytes, image: bytes, prev_caption: str, prev_k: int, prev_t: float, k: int, t: float
    ) -> Message:
        stacked = sc.stack_frames(prev_image, image, self.jpeg_quality)
        prompt = sc.differential_text(prev_caption, prev_k, prev_t, k, t)
        return user_message(text_part(prompt), image_part(stacked, self.detail))

    def summary(self, captions: Sequence[Mapping[str, Any]]) -> Message:
        return {"role": "user", "content": sc.summary_text(captions)}


def layout_for(config: LLMConfig, prompts: PromptSet) -> ChainLayout:
    if config.prompts.set == "sharecaptioner":
        return ShareCaptionerLayout(config.detail, config.image_jpeg_quality)
    return DefaultLayout(prompts, config.detail)
