"""``LLMClient``: every API call of the pipeline goes through here.

One call: cache lookup -> limiter.acquire(estimate) -> HTTP call -> reconcile the usage, adopt
the rate-limit headers, charge the budget, store the answer. Retryable failures (429, 408, 409,
5xx, timeouts, dropped connections, malformed bodies) back off with full jitter up to
``max_attempts``; a 429, or a 503 of a server whose queue is full (vLLM's
``--max-num-queued-reqs``), pauses every caller of the limiter for Retry-After. Endpoint failures
(5xx, timeouts, dropped connections) are reported to the limiter's circuit
(:mod:`.circuit`): once it opens for an outage, failures no longer count against the call's
retries and every caller waits for the probe. An answer cut at ``max_tokens`` is asked again
once with ``max_tokens_retry``, then raises ``TruncatedAnswerError``. Errors retrying cannot
fix raise ``PermanentCallError`` at once. The limiter, the budget and the transport are
injected: a Ray actor proxy (any object with the same async methods) can stand in for the local
limiter and budget, and a fake transport (:mod:`operators.llm.transport`) for the endpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from operators.llm.budget import Budget, Usage, call_cost
from operators.llm.cache import ResponseCache, request_key
from operators.llm.config import LLMConfig
from operators.llm.errors import (
    LLMCallError,
    MissingAPIKeyError,
    PermanentCallError,
    RefusalError,
    RetriesExhaustedError,
    TruncatedAnswerError,
    scrub,
)
from operators.llm.limiter import Permit, limiter_from_config, retry_after_seconds
from operators.llm.tokens import estimate_prompt_tokens, estimate_text_tokens_fallback, text_counter
from operators.llm.transport import (
    ChatTransport,
    ConnectionFailure,
    MalformedResponse,
    OpenAITransport,
    StatusError,
    Timeout,
)

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409} | set(range(500, 600))
# A 503 that says the server is busy, not down (vLLM's queue limit, overloaded gateways).
_BUSY = re.compile(r"queue|overload|capacity|busy|too many", re.IGNORECASE)
_REFUSAL = re.compile(
    r"^\s*(I['’]m sorry|I am sorry|I apologi[sz]e|Sorry,? (but )?I|I can(['’]|no)t (help|assist|comply)"
    r"|I['’]m (unable|not able) to (help|assist|comply))",
    re.IGNORECASE,
)


class Limiter(Protocol):
    async def acquire(self, est_tokens: int) -> Permit: ...
    async def reconcile(self, permit: Permit, actual_tokens: int) -> None: ...
    async def observe_headers(self, headers: Mapping[str, str]) -> None: ...
    async def pause_for(self, seconds: float) -> None: ...
    async def record_outcome(self, permit: Permit, failed: bool, caller: str) -> bool: ...


@dataclass(frozen=True)
class CallResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    attempts: int = 0
    finish_reason: str | None = None


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**retry)] (retry 0 = the first retry)."""
    return rng.uniform(0.0, min(max_s, base_s * 2.0**retry))


def looks_like_refusal(text: str) -> bool:
    """A short answer that opens like a refusal. Long answers are captions, whatever they open with."""
    return len(text) < 400 and _REFUSAL.match(text) is not None


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _parsed(text: str, parse: Callable[[str], str] | None) -> str | None:
    """``parse(text)``, or None when the parser rejects it."""
    if parse is None:
        return text
    try:
        return parse(text)
    except ValueError:
        return None


class _Retryable(Exception):
    def __init__(
        self, reason: str, detail: str, pause_s: float | None = None, endpoint: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.pause_s = reason, detail, pause_s
        self.endpoint = endpoint  # an endpoint failure (5xx, timeout, connection): the circuit's


class LLMClient:
    """Chat completions against ``config.base_url`` with limits, retries, cache and budget."""

    def __init__(
        self,
        config: LLMConfig,
        limiter: Limiter | None = None,
        budget: Any = None,
        cache: ResponseCache | None = None,
        base_url: str | None = None,
        rng: random.Random | None = None,
        transport: ChatTransport | None = None,
    ) -> None:
        self.config = config
        self.base_url = base_url or config.base_url
        self.limiter = limiter or limiter_from_config(config)
        self.budget = budget if budget is not None else Budget(config.budget_usd)
        self.cache = cache
        self._rng = rng or random.Random()
        self._secret: str | None = None
        self._transport: ChatTransport | None = transport
        self._count_text = estimate_text_tokens_fallback

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, model={self.config.model!r}, api_key=***)"

    def setup(self) -> None:
        """Read the key from the environment and open the transport (once per worker); an
        injected transport is used as it is."""
        self._count_text = text_counter(self.config.model, self.config.tokenizer)
        if self._transport is not None:
            return
        env = self.config.api_key_env
        key = os.environ.get(env) if env else "unused"
        if not key:
            raise MissingAPIKeyError(f"environment variable {env} (llm.api_key_env) is not set")
        self._secret = key if env else None
        self._transport = OpenAITransport(self.base_url, key, self.config.timeout_s)

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()

    async def start_video(self) -> bool:
        """Whether the budget allows one more video to start."""
        return bool(await _resolve(self.budget.can_start()))

    def estimate_tokens(self, messages: Sequence[Mapping[str, Any]], max_tokens: int) -> int:
        """What the provider counts against tokens/min: the prompt plus ``max_tokens``."""
        c = self.config
        return max_tokens + estimate_prompt_tokens(
            messages, self._count_text, c.image_base_tokens, c.image_tile_tokens, c.detail
        )

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int,
        usage: Usage | None = None,
        parse: Callable[[str], str] | None = None,
        model: str | None = None,
        caller: str | None = None,
        max_tokens_retry: int | None = None,
        **parameters: Any,
    ) -> CallResult:
        """One answer for ``messages``; raises ``LLMCallError`` subclasses, never returns a refusal.

        ``parse`` turns the raw answer into the result's text and raises ``ValueError`` for an
        unusable one; that counts as a refusal (asked again up to ``refusal_retries`` times, then
        ``RefusalError("unusable_answer")``), so an unusable answer is never cached. The cache
        keeps raw answers and parses them again on a hit: a stricter parser never trusts an
        answer an older one let through. ``model`` overrides ``llm.model`` (the text-only
        calls' ``llm.summary_model``); ``caller`` names the video, for the outage circuit. With
        ``max_tokens_retry``, an answer cut at ``max_tokens`` is asked again once with that
        limit and raises ``TruncatedAnswerError`` when it is cut again.
        """
        result = await self._complete_once(messages, max_tokens, usage, parse, model, caller, parameters)
        if result.finish_reason != "length" or max_tokens_retry is None:
            return result
        logger.warning("answer cut at max_tokens=%d; asking again with %d", max_tokens, max_tokens_retry)
        if max_tokens_retry > max_tokens:
            result = await self._complete_once(
                messages, max_tokens_retry, usage, parse, model, caller, parameters
            )
        if result.finish_reason == "length":
            raise TruncatedAnswerError(
                f"the answer was cut at max_tokens={max(max_tokens, max_tokens_retry)} "
                "(llm.max_tokens_retry)"
            )
        return result

    async def _complete_once(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        usage: Usage | None,
        parse: Callable[[str], str] | None,
        model: str | None,
        caller: str | None,
        parameters: Mapping[str, Any],
    ) -> CallResult:
        if self._transport is None:
            raise RuntimeError("LLMClient.setup() was not called")
        usage = usage if usage is not None else Usage()
        model = model or self.config.model
        params = {"max_tokens": max_tokens, "temperature": self.config.temperature, **parameters}
        key = request_key(model, params, messages) if self.cache else None
        if key is not None:
            entry = await asyncio.to_thread(self.cache.get, key)
            text = _parsed(entry["text"], parse) if entry is not None else None
            if entry is not None and text is None:
                logger.warning("cached answer %s is unusable now; calling again", key[:12])
            if entry is not None and text is not None:
                usage.add_call(entry["prompt_tokens"], entry["completion_tokens"], 0.0, cached=True)
                return CallResult(
                    text,
                    entry["prompt_tokens"],
                    entry["completion_tokens"],
                    0.0,
                    cached=True,
                    finish_reason=entry.get("finish_reason"),
                )
        est = self.estimate_tokens(messages, max_tokens)
        if est > self.config.tokens_per_minute:
            raise PermanentCallError("request_too_large", f"~{est} tokens > llm.tokens_per_minute")
        caller = caller or f"call-{id(usage):x}"
        result = await self._call_with_retries(messages, params, est, usage, parse, model, caller)
        if key is not None:
            entry = {
                "model": model,
                "text": result.text,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
            }
            await asyncio.to_thread(self.cache.put, key, entry)
        if parse is not None:
            result = replace(result, text=parse(result.text))
        return result

    async def _call_with_retries(
        self,
        messages: Any,
        params: dict[str, Any],
        est: int,
        usage: Usage,
        parse: Callable[[str], str] | None,
        model: str,
        caller: str,
    ) -> CallResult:
        c = self.config
        refusals = attempt = 0
        last: _Retryable | None = None
        backoff = False
        while attempt < c.max_attempts:
            if backoff:
                await asyncio.sleep(backoff_delay(attempt - 1, c.backoff_base_s, c.backoff_max_s, self._rng))
            permit = await self.limiter.acquire(est)  # waits out an open circuit
            try:
                result = await self._attempt(messages, params, permit, usage, attempt + 1, parse, model)
            except _Retryable as exc:
                last = exc
                if await self.limiter.record_outcome(permit, exc.endpoint, caller) and exc.endpoint:
                    # An outage: the circuit holds every caller; this video's retries are kept.
                    logger.info("call failed during an endpoint outage (%s); waiting", exc.reason)
                    backoff = False
                    continue
                attempt += 1
                logger.warning(
                    "call attempt %d/%d failed (%s: %s)", attempt, c.max_attempts, exc.reason, exc.detail
                )
                backoff = exc.pause_s is None
                if exc.pause_s is not None:
                    await self.limiter.pause_for(exc.pause_s)
                continue
            except RefusalError as exc:
                await self.limiter.record_outcome(permit, False, caller)
                attempt += 1
                refusals += 1
                if refusals > c.refusal_retries or attempt == c.max_attempts:
                    raise
                last, backoff = _Retryable(exc.reason, exc.detail), True
                logger.warning("model refused (%s); asking again", exc.detail[:80])
                continue
            except PermanentCallError:
                await self.limiter.record_outcome(permit, False, caller)
                raise
            await self.limiter.record_outcome(permit, False, caller)
            return result
        assert last is not None
        raise RetriesExhaustedError(last.reason, f"{c.max_attempts} attempts; last: {last.detail}")

    async def _attempt(
        self,
        messages: Any,
        params: dict[str, Any],
        permit: Permit,
        usage: Usage,
        attempt: int,
        parse: Callable[[str], str] | None,
        model: str,
    ) -> CallResult:
        # Failures are raised outside the except blocks: no exception chain keeps the server's
        # message (which may quote the key) attached to ours.
        failure: LLMCallError | _Retryable | None = None
        try:
            response = await self._transport.create(model, messages, **params)
        except StatusError as exc:
            await self.limiter.observe_headers(exc.headers)
            failure = await self._status_error(exc, permit)
        except Timeout as exc:
            failure = _Retryable("timeout", exc.detail, endpoint=True)
        except ConnectionFailure as exc:
            failure = _Retryable("connection", scrub(exc.detail, self._secret), endpoint=True)
        except MalformedResponse as exc:
            await self.limiter.observe_headers(exc.headers)
            failure = _Retryable("malformed_response", scrub(exc.detail, self._secret))
        if failure is not None:
            raise failure
        await self.limiter.observe_headers(response.headers)
        text = response.text
        if response.prompt_tokens is not None and response.completion_tokens is not None:
            prompt, output = response.prompt_tokens, response.completion_tokens
        else:  # some servers omit usage: bill our estimate
            prompt, output = permit.tokens - params["max_tokens"], self._count_text(text)
        cost = call_cost(self.config.price(model), prompt, output)
        await self.limiter.reconcile(permit, prompt + self._counted_output(params, output))
        await _resolve(self.budget.charge(cost))
        usage.add_call(prompt, output, cost, cached=False)
        if response.finish_reason == "content_filter":
            raise PermanentCallError("content_policy", "the answer was stopped by the content filter")
        refusal = response.refusal
        if refusal or not text or looks_like_refusal(text):
            raise RefusalError("refusal", scrub(refusal or text or "empty answer", self._secret)[:300])
        if parse is not None and _parsed(text, parse) is None:
            raise RefusalError("unusable_answer", scrub(text, self._secret)[:300])
        return CallResult(
            text, prompt, output, cost, cached=False, attempts=attempt, finish_reason=response.finish_reason
        )

    def _counted_output(self, params: Mapping[str, Any], output: int) -> int:
        """The output tokens the provider counts against tokens/min (``llm.token_accounting``)."""
        return int(params["max_tokens"]) if self.config.token_accounting == "reserved" else output

    async def _status_error(self, exc: StatusError, permit: Permit) -> LLMCallError | _Retryable:
        status, code, headers = exc.status, exc.code, exc.headers
        detail = scrub(f"HTTP {status} {code}: {exc.message}", self._secret)[:500]
        busy = status == 503 and (
            "retry-after" in {k.lower() for k in headers} or _BUSY.search(detail) is not None
        )
        if (status == 429 and code != "insufficient_quota") or busy:
            # A busy server (429, or vLLM's 503 when its queue is full) answered: it is up, so
            # every caller pauses for Retry-After, as for a rate limit, and the circuit stays shut.
            pause = retry_after_seconds(headers)
            pause = (
                pause
                if pause is not None
                else backoff_delay(0, self.config.backoff_base_s, self.config.backoff_max_s, self._rng)
            )
            await self.limiter.reconcile(permit, 0)  # a 429 used no tokens
            return _Retryable("rate_limited" if status == 429 else "server_busy", detail, pause_s=pause)
        if status in RETRYABLE_STATUS:
            return _Retryable(f"http_{status}", detail, endpoint=status >= 500)
        if "content_policy" in code or "content_filter" in code:
            return PermanentCallError("content_policy", detail)
        if status == 400 and "image" in (code + detail).lower():
            return PermanentCallError("bad_image", detail)
        fatal = status in (401, 403, 404) or code == "insufficient_quota"
        return PermanentCallError(f"http_{status}", detail, fatal=fatal)
