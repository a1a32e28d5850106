"""``llava``: one JSON list of conversations, for LLaVA-NeXT-style trainers.

    DIR/llava.json
    DIR/videos/<video>.mp4

Each record: ``id``, ``video`` (relative to DIR: pass DIR as the trainer's ``--video_folder``;
LLaVA-NeXT's ``LazySupervisedDataset`` opens ``os.path.join(video_folder, record["video"])``),
``conversations``. The first human turn holds the media token exactly once: ``<image>`` by
default, the only token LLaVA-NeXT / LLaVA-Video / LLaVA-OneVision turn into vision features
(``preprocess_multimodal`` moves it to the front; a turn without it trains without vision, with
no error), or ``<video>`` for Video-LLaVA / Video-ChatGPT-style code. The summary is the answer;
``keyframe_turns`` adds a question and its caption per keyframe. Media tokens that a caption
happens to contain are defused, so no other turn carries one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from operators.dataset import schema as col
from operators.dataset.exports.dest import Destination
from operators.dataset.exports.media import copy_video
from operators.dataset.exports.options import DEFAULT_PROMPT, ExportOptions
from operators.dataset.exports.rows import Tally, rows_with_video, sorted_captions

logger = logging.getLogger(__name__)

RECORDS = "llava.json"
MEDIA_TOKENS = ("<image>", "<video>")


def defuse(text: str) -> str:
    """``text`` with no media token in it (a caption quoting ``<image>`` would add a second
    image position that has no features behind it)."""
    for token in MEDIA_TOKENS:
        text = text.replace(token, token[1:-1])
    return text


def _keyframe_question(caption: dict[str, Any], previous: dict[str, Any] | None) -> str:
    t = caption[col.CAPTION_TIMESTAMP]
    if previous is None or caption.get(col.CAPTION_KIND) == "detailed":
        return f"Describe the frame at {t:.1f} s in detail."
    return f"What changes between {previous[col.CAPTION_TIMESTAMP]:.1f} s and {t:.1f} s?"


def llava_record(row: dict[str, Any], video: str, keyframe_turns: bool = False,
                 prompt: str = DEFAULT_PROMPT, video_token: str = "image") -> dict[str, Any]:
    """One conversation; ``video`` is the path relative to the export folder."""
    token = f"<{video_token}>"
    turns = [{"from": "human", "value": f"{token}\n{defuse(prompt)}"},
             {"from": "gpt", "value": defuse(row[col.SUMMARY])}]
    if keyframe_turns:
        previous = None
        for caption in sorted_captions(row):
            turns.append({"from": "human", "value": _keyframe_question(caption, previous)})
            turns.append({"from": "gpt", "value": defuse(caption[col.CAPTION_TEXT] or "")})
            previous = caption
    return {"id": row[col.VIDEO_ID], "video": video, "conversations": turns}


def export(output: str, dest: Destination, options: ExportOptions) -> Tally:
    tally = Tally()
    with dest.writing(RECORDS) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for row, uri in rows_with_video(output, tally):
            video = copy_video(dest, row, uri)
            record = llava_record(row, video, options.keyframe_turns, options.prompt,
                                  options.video_token)
            # One record at a time: the list is never held in memory.
            f.write(("\n" if not tally.exported else ",\n") + json.dumps(record, ensure_ascii=False))
            tally.exported += 1
        f.write("\n]\n")
    logger.info("exported %d conversations to %s", tally.exported, dest.uri)
    return tally
