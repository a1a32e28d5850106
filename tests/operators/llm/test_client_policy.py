"""The client's policy (limits, retries, budget) driven through an injected fake transport and
the limiter's virtual clock: no HTTP, no real waiting on rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from operators.llm.budget import Budget
from operators.llm.client import LLMClient
from operators.llm.errors import RETRYABLE_REASONS, PermanentCallError, RetriesExhaustedError
from operators.llm.limiter import RateLimiter
from operators.llm.transport import ChatResponse, ConnectionFailure, StatusError, Timeout
from tests.operators.llm.conftest import llm_config
from tests.operators.llm.test_limiter import FakeClock, max_in_window

MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "describe the frame"}]}]


class ScriptedTransport:
    """Answers from a script: each entry is a ChatResponse to return or an exception to raise;
    past the script, every call succeeds. Records the virtual time of every call."""

    def __init__(self, clock: FakeClock, script: Sequence[Any] = ()) -> None:
        self.clock, self.script, self.calls = clock, list(script), []

    async def create(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResponse:
        self.calls.append(self.clock.now())
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        return step or ChatResponse("A red square on a white table.", "stop", prompt_tokens=100,
                                    completion_tokens=20, headers={})

    async def close(self) -> None:
        pass


def client_with(script: Sequence[Any] = (), **overrides: Any) -> tuple[LLMClient, ScriptedTransport, FakeClock]:
    config = llm_config("http://fake.invalid/v1", cache=False, **overrides)
    clock = FakeClock()
    limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute, config.rate_window_s,
                          headroom=config.rate_headroom, clock=clock)
    transport = ScriptedTransport(clock, script)
    client = LLMClient(config, limiter=limiter, budget=Budget(config.budget_usd), transport=transport)
    client.setup()
    return client, transport, clock


def complete(client: LLMClient, **kwargs: Any):
    return asyncio.run(client.complete(MESSAGES, max_tokens=64, **kwargs))


def test_429_pauses_every_caller_for_retry_after_then_succeeds():
    client, transport, clock = client_with([StatusError(429, {"retry-after": "7"}, "rate_limit_exceeded")])
    result = complete(client)
    assert result.text.startswith("A red square") and result.attempts == 2
    assert transport.calls[1] - transport.calls[0] >= 7.0  # the limiter held the retry 7 virtual s


def test_transient_failures_are_retried_then_exhausted_with_the_retryable_reason():
    failures = [StatusError(500, {}), Timeout("no answer"), ConnectionFailure("reset"), StatusError(503, {})]
    client, transport, _ = client_with(failures, max_attempts=4)
    with pytest.raises(RetriesExhaustedError) as caught:
        complete(client)
    assert len(transport.calls) == 4 and caught.value.reason == "http_503"
    assert RetriesExhaustedError.REJECT_REASON in RETRYABLE_REASONS


def test_bad_key_is_fatal_and_not_retried():
    client, transport, _ = client_with([StatusError(401, {}, "invalid_api_key", "Incorrect API key")])
    with pytest.raises(PermanentCallError) as caught:
        complete(client)
    assert caught.value.fatal and len(transport.calls) == 1


def test_requests_per_minute_hold_in_virtual_time():
    client, transport, clock = client_with(requests_per_minute=10, tokens_per_minute=10**8, rate_window_s=60.0)

    async def many() -> None:
        await asyncio.gather(*(client.complete(MESSAGES, max_tokens=64) for _ in range(35)))

    asyncio.run(many())
    assert len(transport.calls) == 35
    assert max_in_window(transport.calls, [1] * 35, 60.0) <= 10
    assert transport.calls[-1] - transport.calls[0] >= 3 * 60.0 * 0.9  # 35 calls need > 3 windows


def test_budget_is_charged_at_the_model_price_and_a_missing_usage_is_estimated():
    client, _, _ = client_with([ChatResponse("A dog runs across a field.", "stop")], budget_usd=1.0)
    first = complete(client)  # no usage reported: prompt from the estimate, output counted
    assert first.prompt_tokens > 0 and first.completion_tokens > 0
    second = complete(client)
    assert second.prompt_tokens == 100 and second.completion_tokens == 20
    assert second.cost_usd == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)  # fake-vlm: $1 / $2 per 1M
    assert client.budget.spent() == pytest.approx(first.cost_usd + second.cost_usd)
