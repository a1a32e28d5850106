"""Prompt re-captioning (``sg4v recaption``): short text-to-video prompts into detailed captions
in the dataset's style, or detailed captions into generation prompts.

ShareCaptioner-Video's fourth mode, text only, on any endpoint. The input is JSON Lines: each
line an object holding the text (``--to detailed`` reads the first of ``prompt``, ``text``,
``caption``, ``short_caption``; ``--to prompt`` the first of ``summary``, ``detailed_caption``,
``caption``, ``text``) or a bare JSON string. The output is JSON Lines in input order: each
input object with ``detailed_caption`` (or ``generation_prompt``) added, ``recaption_reason``
(null, or why that line has no new text: ``no_text``, ``bad_json``, an API reason) and
``usage``. A line that cannot be used is written with its reason, never dropped.

Lines are read and answered in chunks of ``chunk`` with at most ``llm.concurrency_per_actor``
calls in flight, so memory stays flat on any input; every call goes through the client's
cache (asking again pays nothing), limiter and budget, on ``llm.summary_model`` when set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from operators.captions.diffsw_prompts import parse_caption
from operators.llm.budget import Usage
from operators.llm.config import LLMConfig
from operators.llm.errors import BudgetExceededError, LLMCallError, PermanentCallError

Direction = Literal["detailed", "prompt"]

#: The fields a line's text is read from, first present wins.
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "detailed": ("prompt", "text", "caption", "short_caption"),
    "prompt": ("summary", "detailed_caption", "caption", "text"),
}
#: The field each direction writes.
OUTPUT_FIELD: dict[str, str] = {"detailed": "detailed_caption", "prompt": "generation_prompt"}
REASON_FIELD = "recaption_reason"

TO_DETAILED = (
    "You write captions for a video-language training dataset. A text-to-video prompt is given "
    "below. Expand it into the detailed caption of a video that matches it, in the dataset's "
    "style: chronological, objective prose in one or two paragraphs describing the subjects and "
    "their appearance, their actions, the objects and the setting, the lighting, changes of scene "
    "and the movements of the camera. Keep everything the prompt states and contradict none of "
    "it; add only plausible visual detail. No lists, headings, markdown, timestamps or frame "
    "numbers. Answer with the caption alone.\n\nPrompt: {text}"
)
TO_PROMPT = (
    "You write prompts for a text-to-video generation model. A detailed caption of a video is "
    "given below. Condense it into one generation prompt of at most 60 words: the main subjects, "
    "their actions, the setting, the visual style and the camera movement, in one flowing "
    "sentence or two. Keep only what the caption states. No lists, quotes or markdown. Answer "
    "with the prompt alone.\n\nCaption: {text}"
)
TEMPLATES: dict[str, str] = {"detailed": TO_DETAILED, "prompt": TO_PROMPT}


def read_lines(lines: Iterator[bytes | str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line_number, record, problem)`` per non-blank line: a JSON object as it is, a JSON
    string as ``{"text": ...}``; anything else has ``record`` None and ``problem`` set."""
    for n, raw in enumerate(lines, start=1):
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, None, f"line {n}: not JSON ({exc.msg})"
            continue
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict):
            yield n, None, f"line {n}: expected a JSON object or string, got {type(value).__name__}"
            continue
        yield n, value, None


def source_text(record: Mapping[str, Any], direction: Direction) -> str | None:
    for field in SOURCE_FIELDS[direction]:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def recaption_message(text: str, direction: Direction) -> dict[str, Any]:
    return {"role": "user", "content": TEMPLATES[direction].format(text=text)}


async def recaption_record(client: Any, config: LLMConfig, record: dict[str, Any] | None,
                           problem: str | None, direction: Direction) -> dict[str, Any]:
    """The output line of one input line."""
    out: dict[str, Any] = dict(record) if record is not None else {"line_error": problem}
    usage = Usage()
    out[OUTPUT_FIELD[direction]] = None
    out[REASON_FIELD] = None
    text = source_text(record, direction) if record is not None else None
    if record is None:
        out[REASON_FIELD] = "bad_json"
    elif text is None:
        out[REASON_FIELD] = "no_text"
    elif not await client.start_video():  # llm.budget_usd spent: nothing more is started
        out[REASON_FIELD] = BudgetExceededError.REJECT_REASON
    else:
        try:
            result = await client.complete(
                [recaption_message(text, direction)],
                max_tokens=config.summary_max_tokens,
                usage=usage,
                parse=parse_caption,
                model=config.text_model,
                caller=str(record.get("id") or record.get("video_id") or "recaption"),
                max_tokens_retry=config.max_tokens_retry,
            )
            out[OUTPUT_FIELD[direction]] = result.text
        except PermanentCallError as exc:
            if exc.fatal:
                raise
            out[REASON_FIELD] = exc.reason
        except LLMCallError as exc:
            out[REASON_FIELD] = exc.reason
    out["usage"] = usage.as_dict()
    return out
