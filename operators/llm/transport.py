"""How the client layer reaches an endpoint: one small injected object.

``LLMClient`` owns the policy (limits, retries, cache, budget); a transport only sends one chat
completion and reports what came back, as a :class:`ChatResponse` or one of the
:class:`TransportError` kinds below. :class:`OpenAITransport` (``openai.AsyncOpenAI`` against
any ``base_url``: OpenAI, Azure OpenAI, vLLM, SGLang) is the default; tests inject a fake one to
drive the policy with the limiter's virtual clock, no HTTP involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatResponse:
    """One chat completion as the client needs it."""

    text: str
    finish_reason: str | None = None
    refusal: str | None = None
    #: The provider's counts; None when the server reports no usage.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class TransportError(Exception):
    """The endpoint gave no chat completion. ``detail`` may quote the server: scrub it."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class StatusError(TransportError):
    """An HTTP error status, with the error body's ``code`` and ``message`` and the headers."""

    def __init__(self, status: int, headers: Mapping[str, str], code: str = "", message: str = "") -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.headers, self.code, self.message = status, dict(headers), code, message


class Timeout(TransportError):
    """No answer within the configured timeout."""


class ConnectionFailure(TransportError):
    """The connection could not be made or was dropped."""


class MalformedResponse(TransportError):
    """An answer came back but it is not a chat completion."""

    def __init__(self, detail: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.headers = dict(headers or {})


class ChatTransport(Protocol):
    async def create(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResponse: ...

    async def close(self) -> None: ...


class OpenAITransport:
    """``openai.AsyncOpenAI`` with the SDK's own retries off (the client layer retries)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        import openai

        self._timeout_s = timeout_s
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                          timeout=timeout_s)

    async def create(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResponse:
        import openai

        # Errors are raised outside the except blocks: no exception chain keeps the SDK's
        # message (which may quote the key) attached to ours.
        failure: TransportError | None = None
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=model, messages=list(messages), **params)
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
            failure = StatusError(exc.status_code, dict(exc.response.headers),
                                  str(error.get("code") or error.get("type") or ""),
                                  str(error.get("message") or exc.message))
        except openai.APITimeoutError:
            failure = Timeout(f"no answer within {self._timeout_s} s")
        except openai.APIConnectionError as exc:
            failure = ConnectionFailure(str(exc.__cause__ or exc))
        if failure is not None:
            raise failure
        headers = dict(raw.headers)
        try:
            completion = raw.parse()
            choice = completion.choices[0]
            message = choice.message
        except Exception as exc:  # the body is not a chat completion
            failure = MalformedResponse(f"{type(exc).__name__}: {exc}"[:300], headers)
        if failure is not None:
            raise failure
        usage = completion.usage
        return ChatResponse(
            text=(message.content or "").strip(),
            finish_reason=choice.finish_reason,
            refusal=getattr(message, "refusal", None),
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
            headers=headers,
        )

    async def close(self) -> None:
        await self._client.close()
