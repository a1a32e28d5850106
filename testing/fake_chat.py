"""What the local test server does with one request body: validate it as OpenAI does, and
answer deterministically, saying which images (size and short hash) and which frame numbers and
timestamps it was given, so tests can check what a caller sent."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

from operators.llm.tokens import estimate_prompt_tokens

KNOWN_PARAMETERS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "seed",
    "stop",
    "user",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "stream",
}
ROLES = {"system", "user", "assistant", "developer"}
_DATA_URL = re.compile(r"^data:image/(jpeg|jpg|png|webp|gif);base64,(.*)$", re.DOTALL)
_FRAME = re.compile(r"\bframe\s*(?:index\s*)?(?:#|no\.?\s*)?(\d+)", re.IGNORECASE)
_TIMESTAMP = re.compile(r"\btimestamp[^0-9]{0,20}(\d+(?:\.\d+)?)", re.IGNORECASE)


class InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class SeenImage:
    width: int
    height: int
    digest: str
    detail: str


@dataclass
class ParsedRequest:
    model: str
    max_tokens: int | None
    texts: list[str] = field(default_factory=list)
    images: list[SeenImage] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


def _decode_image(url: Any, where: str) -> tuple[bytes, int, int]:
    from PIL import Image

    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidRequest(
            "Invalid image URL: expected a base64 data URL of an image.", where, "invalid_image_url"
        )
    try:
        data = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return data, image.width, image.height
    except (binascii.Error, ValueError, OSError) as exc:
        raise InvalidRequest(
            f"You uploaded an unsupported image ({type(exc).__name__}). Please make sure "
            "your image is valid.",
            where,
            "invalid_image_format",
        ) from None


def _parse_part(part: Any, where: str, out: ParsedRequest) -> None:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
        raise InvalidRequest("Each content part must be {type: text|image_url, ...}.", where)
    if part["type"] == "text":
        if not isinstance(part.get("text"), str):
            raise InvalidRequest("A text part needs a string 'text'.", f"{where}.text")
        out.texts.append(part["text"])
        return
    image = part.get("image_url")
    if not isinstance(image, dict):
        raise InvalidRequest("An image_url part needs an object 'image_url'.", f"{where}.image_url")
    detail = image.get("detail", "auto")
    if detail not in ("low", "high", "auto"):
        raise InvalidRequest("detail must be low, high or auto.", f"{where}.image_url.detail")
    data, width, height = _decode_image(image.get("url"), f"{where}.image_url.url")
    out.images.append(SeenImage(width, height, hashlib.sha256(data).hexdigest()[:8], detail))


def parse_request(body: Any) -> ParsedRequest:
    """Validate a chat completion body; raises ``InvalidRequest`` (-> HTTP 400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_PARAMETERS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", "model")
    if body.get("stream"):
        raise InvalidRequest("stream is not supported by this test server", "stream")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidRequest("max_tokens must be a positive integer", "max_tokens")
    temperature = body.get("temperature", 1)
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise InvalidRequest("temperature must be a number in [0, 2]", "temperature")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", "messages")
    out = ParsedRequest(model=body["model"], max_tokens=max_tokens, messages=messages)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequest(f"{where} needs a role among {sorted(ROLES)}", f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            out.texts.append(content)
        elif isinstance(content, list) and content:
            for j, part in enumerate(content):
                _parse_part(part, f"{where}.content[{j}]", out)
        else:
            raise InvalidRequest(f"{where}.content must be a string or a non-empty array", f"{where}.content")
    return out


def count_tokens_server(text: str) -> int:
    """The server's own text count (chars/4), a stand-in for the provider's tokenizer."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def answer(request: ParsedRequest) -> Answer:
    """The deterministic answer: the same request always gets the same text and usage."""
    seen = "; ".join(f"#{k + 1} {im.width}x{im.height} {im.digest}" for k, im in enumerate(request.images))
    joined = "\n".join(request.texts)
    frames = [int(f) for f in _FRAME.findall(joined)]
    stamps = [float(t) for t in _TIMESTAMP.findall(joined)]
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    text = (
        f"A test caption of {len(request.images)} image(s)"
        + (f" ({seen})" if seen else "")
        + f", frames {frames}, timestamps {stamps}, prompt {digest}. The scene shows a steady view; "
        "nothing else changes."
    )
    prompt = estimate_prompt_tokens(request.messages, count_tokens_server)
    completion = count_tokens_server(text)
    if request.max_tokens is not None and completion > request.max_tokens:
        return Answer(text[: request.max_tokens * 4], prompt, request.max_tokens, "length")
    return Answer(text, prompt, completion, "stop")
