"""Prompt building and answer parsing of the DiffSW captioning calls: small pure functions.

Templates are ``str.format`` strings, one file per call kind (``operators/captions/prompts/*.txt``
unless ``llm.prompts.<kind>`` names another file). The fields each kind may use:

- ``detailed`` (keyframe 0): ``frame_index``, ``timestamp``;
- ``differential`` (keyframe i >= 1): ``prev_caption``, ``prev_index``, ``prev_timestamp``,
  ``frame_index``, ``timestamp``;
- ``summary`` (text only): ``captions`` (one "Frame k, timestamp t s: caption" paragraph per
  keyframe), ``num_keyframes``.

The "frame index" of a keyframe is its position among the video's keyframes (0, 1, 2, ...),
not its index among the sampled frames: the model sees consecutive keyframes, and the dataset's
``captions[].idx`` uses the same numbers. Timestamps are seconds from the clip start, written
with two decimals. Templates are read and checked once, on the driver, and travel with the
operator, so workers never need the files.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from operators.llm.client import looks_like_refusal
from operators.llm.config import PromptFiles

TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "detailed": frozenset({"frame_index", "timestamp"}),
    "differential": frozenset({"prev_caption", "prev_index", "prev_timestamp", "frame_index", "timestamp"}),
    "summary": frozenset({"captions", "num_keyframes"}),
}


class PromptTemplateError(ValueError):
    """A template that cannot be used (bad config): unreadable, bad syntax or unknown field."""


def _check(kind: str, text: str, origin: str) -> str:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise PromptTemplateError(f"llm.prompts.{kind} ({origin}): {exc} (write {{{{ for a brace)") from None
    unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS[kind])
    if unknown or "" in fields:
        raise PromptTemplateError(
            f"llm.prompts.{kind} ({origin}): unknown field {{{(unknown or [''])[0]}}}; "
            f"allowed: {sorted(TEMPLATE_FIELDS[kind])}"
        )
    if not text.strip():
        raise PromptTemplateError(f"llm.prompts.{kind} ({origin}): the template is empty")
    return text


def load_template(kind: str, path: str | None = None) -> str:
    """The template of ``kind``: the file at ``path`` (local or any fsspec URI), else the
    built-in one. Raises ``PromptTemplateError`` naming the key."""
    if path is None:
        text = resources.files("operators.captions.prompts").joinpath(f"{kind}.txt").read_text("utf-8")
        return _check(kind, text, "built-in")
    from operators.io import open_binary

    try:
        with open_binary(path) as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptTemplateError(f"llm.prompts.{kind}: cannot read {path}: {exc}") from None
    return _check(kind, text, path)


def format_timestamp(seconds: float) -> str:
    return f"{float(seconds):.2f}"


@dataclass(frozen=True)
class PromptSet:
    """The three templates of a run."""

    detailed: str
    differential: str
    summary: str

    @classmethod
    def load(cls, files: PromptFiles | None = None) -> PromptSet:
        files = files or PromptFiles()
        return cls(**{kind: load_template(kind, getattr(files, kind)) for kind in TEMPLATE_FIELDS})


def detailed_prompt(template: str, frame_index: int, timestamp: float) -> str:
    return template.format(frame_index=frame_index, timestamp=format_timestamp(timestamp)).strip()


def differential_prompt(
    template: str,
    prev_caption: str,
    prev_index: int,
    prev_timestamp: float,
    frame_index: int,
    timestamp: float,
) -> str:
    return template.format(
        prev_caption=prev_caption,
        prev_index=prev_index,
        prev_timestamp=format_timestamp(prev_timestamp),
        frame_index=frame_index,
        timestamp=format_timestamp(timestamp),
    ).strip()


def render_captions(captions: Sequence[Mapping[str, object]]) -> str:
    """The timestamped captions block of the summary prompt."""
    return "\n\n".join(
        f"Frame {c['idx']}, timestamp {format_timestamp(float(c['timestamp']))} s: {c['text']}"  # type: ignore[arg-type]
        for c in captions
    )


def summary_prompt(template: str, captions: Sequence[Mapping[str, object]]) -> str:
    return template.format(captions=render_captions(captions), num_keyframes=len(captions)).strip()


_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*?)\n?```$", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6}\s.*|\*\*[^*]{0,40}:?\*\*:?|[A-Z][A-Za-z ]{0,30}:)$")
_LABEL = re.compile(
    r"^\s*(\*\*|__)?(caption|description|summary|changes|video description|answer)(\*\*|__)?\s*:\s*"
    r"(\*\*|__)?\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)])\s+")
_QUOTES = {'"': '"', "“": "”", "'": "'", "«": "»"}


def _unquote(text: str) -> str:
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
        inner = text[1:-1].strip()
        if text[0] in inner:  # "a" and "b": not one quotation around the whole answer
            break
        text = inner
    return text


def _sentence(item: str) -> str:
    return item if item[-1:] in ".!?\"'”)" else item + "."


def parse_caption(text: str) -> str:
    """The caption in a model's answer; ``ValueError`` when there is none.

    Strict where it matters: an empty answer, one that is only markup, or a refusal is an error
    (the client asks again, then rejects the video), never a caption. Lenient about form: a
    code fence, a heading or a "Caption:" label around the answer, and wrapping quotes are
    removed; a list answer is kept (the content is what we pay for) with its bullet markers
    removed and consecutive items joined into one paragraph of sentences; bold/italic markers
    are dropped. Paragraphs stay separated by one blank line.
    """
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    paragraphs: list[str] = []
    current: list[str] = []
    in_list = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _HEADING.match(line):
            if current:
                paragraphs.append(" ".join(current))
            current, in_list = [], False
            continue
        if not paragraphs and not current:
            line = _LABEL.sub("", line, count=1)
        bullet = _BULLET.match(line)
        if bullet:
            line = _sentence(line[bullet.end() :].strip())
            if not in_list and current:
                paragraphs.append(" ".join(current))
                current = []
            in_list = True
        elif in_list:
            paragraphs.append(" ".join(current))
            current, in_list = [], False
        if line:
            current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    cleaned = "\n\n".join(re.sub(r"(\*\*|__)(.+?)\1", r"\2", p) for p in paragraphs if p.strip())
    cleaned = _unquote(re.sub(r"[ \t]+", " ", cleaned).strip())
    if not any(ch.isalnum() for ch in cleaned):
        raise ValueError("empty answer")
    if looks_like_refusal(cleaned):
        raise ValueError(f"refusal: {cleaned[:80]}")
    return cleaned
