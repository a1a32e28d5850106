"""Errors of the client layer. Each carries a short ``reason`` (the ``reject_reason`` of the video)
and a ``detail`` that never contains the API key."""

from __future__ import annotations

import re

_KEY_LIKE = re.compile(r"\b(sk|sess|org|proj)-[A-Za-z0-9_\-*]{6,}")


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` with the API key and anything shaped like an OpenAI key masked."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub(lambda m: m.group(1) + "-***", text)


class LLMCallError(Exception):
    """A call that produced no usable answer."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PermanentCallError(LLMCallError):
    """Retrying cannot fix it (bad image, content policy, bad request). ``fatal`` marks errors
    that will fail every call alike (bad key, unknown model, no quota): bad config, stop the run."""

    def __init__(self, reason: str, detail: str = "", fatal: bool = False) -> None:
        super().__init__(reason, detail)
        self.fatal = fatal


class RefusalError(PermanentCallError):
    """The model refused or answered nothing: no caption, even if the HTTP call succeeded."""


class TruncatedAnswerError(PermanentCallError):
    """The answer was cut at ``max_tokens`` even with ``llm.max_tokens_retry``."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("truncated_caption", detail)


class RetriesExhaustedError(LLMCallError):
    """Every attempt failed with a retryable error. A rerun may fix it."""

    #: The video's ``reject_reason`` (the last attempt's reason goes into the detail).
    REJECT_REASON = "retries_exhausted"


class BudgetExceededError(LLMCallError):
    """``llm.budget_usd`` is spent: the video is not started. A rerun (with more budget) may
    caption it."""

    REJECT_REASON = "budget"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.REJECT_REASON, detail)


#: Rejection reasons a later run may overturn: resume takes those videos out of ``rejected/``
#: and processes them again. Every other rejection is final.
RETRYABLE_REASONS = frozenset(cls.REJECT_REASON for cls in (RetriesExhaustedError, BudgetExceededError))


class MissingAPIKeyError(ValueError):
    """The environment variable named by ``llm.api_key_env`` is not set (bad config)."""
