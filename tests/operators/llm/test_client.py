from __future__ import annotations

import asyncio
import logging
import time

import pytest

from operators.llm.budget import Usage
from operators.llm.cache import ResponseCache
from operators.llm.client import LLMClient, backoff_delay, looks_like_refusal
from operators.llm.errors import MissingAPIKeyError, PermanentCallError, RefusalError, RetriesExhaustedError
from operators.llm.limiter import RateLimiter
from operators.llm.messages import image_part, text_part, user_message
from tests.operators.llm.conftest import llm_config, make_jpeg

CANARY = "sk-canary-THIS-KEY-MUST-NOT-LEAK-0123456789"


def _messages(tag: str = "a", images: int = 1) -> list[dict]:
    parts = [text_part(f"Describe keyframe {tag}, frame 3, timestamp 6.0 s")]
    parts += [image_part(make_jpeg(64 + k, 48)) for k in range(images)]
    return [user_message(*parts)]


def _run(config, coro_fn, **client_kwargs):
    async def main():
        client = LLMClient(config, **client_kwargs)
        client.setup()
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.mark.parametrize("fault", ["500", "503", "malformed", "disconnect", "timeout"])
def test_retryable_faults_are_retried(start_server, fault):
    server, url = start_server(hang_s=5)
    server.queue_faults([fault, fault])
    result = _run(llm_config(url), lambda c: c.complete(_messages(), max_tokens=100))
    assert result.attempts == 3 and "1 image(s)" in result.text and not result.cached
    assert server.stats["faults"] == {fault: 2} and server.stats["served"] == 1


def test_retries_are_bounded(start_server):
    server, url = start_server()
    server.queue_faults(["500"] * 10)
    with pytest.raises(RetriesExhaustedError) as info:
        _run(llm_config(url, max_attempts=3), lambda c: c.complete(_messages(), max_tokens=100))
    assert info.value.reason == "http_500" and server.stats["requests"] == 3


def test_429_pauses_everyone_for_retry_after(start_server):
    server, url = start_server()
    server.queue_faults(["429"])  # Retry-After: 1, retry-after-ms: 500
    limiter = RateLimiter(10**6, 10**9)
    t0 = time.monotonic()
    result = _run(llm_config(url), lambda c: c.complete(_messages(), max_tokens=100), limiter=limiter)
    assert time.monotonic() - t0 >= 0.5
    assert result.attempts == 2 and limiter.pauses == 1


def test_real_429_from_the_window_is_waited_out(start_server):
    server, url = start_server(requests_per_minute=2, window_s=1.0)
    limiter = RateLimiter(10**6, 10**9, window_s=1.0)  # knows nothing yet: learns from the 429

    async def three(client):
        return await asyncio.gather(*(client.complete(_messages(str(i)), max_tokens=100) for i in range(3)))

    results = _run(llm_config(url, rate_window_s=1.0), three, limiter=limiter)
    assert len(results) == 3 and server.stats["served"] == 3
    assert server.stats["rate_limited"] >= 1 and limiter.pauses >= 1


@pytest.mark.parametrize(
    ("settings", "reason"),
    [({"allowed_image_counts": [0]}, "bad_image"), ({}, "http_400")],
)
def test_permanent_errors_are_not_retried(start_server, settings, reason):
    server, url = start_server(**settings)

    async def call(client):
        extra = {} if settings else {"extra_body": {"frobnicate": 1}}
        return await client.complete(_messages(), max_tokens=100, **extra)

    with pytest.raises(PermanentCallError) as info:
        _run(llm_config(url), call)
    assert info.value.reason == reason and not info.value.fatal
    assert server.stats["requests"] == 1


def test_refusals_are_errors_not_captions(start_server):
    server, url = start_server(fault_rates={"refusal": 1.0})
    usage = Usage()
    with pytest.raises(RefusalError):
        _run(
            llm_config(url, refusal_retries=1), lambda c: c.complete(_messages(), max_tokens=100, usage=usage)
        )
    assert server.stats["requests"] == 2 and usage.calls == 2  # refused calls are still paid


def test_refusal_retry_can_succeed(start_server):
    server, url = start_server()
    server.queue_faults(["refusal"])
    result = _run(llm_config(url), lambda c: c.complete(_messages(), max_tokens=100))
    assert result.attempts == 2


def test_refusal_text_detection():
    assert looks_like_refusal("I'm sorry, I can't help with that.")
    assert looks_like_refusal("I can't assist with this request.")
    assert not looks_like_refusal("A man walks a dog. " * 30)
    assert not looks_like_refusal("The camera pans left as a woman says sorry to a child.")


def test_cache_hit_costs_nothing_and_sends_nothing(start_server, tmp_path):
    server, url = start_server()
    cache = ResponseCache(str(tmp_path / "llm_cache"))
    usage = Usage()

    async def twice(client):
        first = await client.complete(_messages(), max_tokens=100, usage=usage)
        second = await client.complete(_messages(), max_tokens=100, usage=usage)
        return first, second

    first, second = _run(llm_config(url), twice, cache=cache)
    assert not first.cached and second.cached and second.text == first.text and second.cost_usd == 0
    assert server.stats["requests"] == 1
    assert usage.calls == 1 and usage.cached_calls == 1 and usage.input_tokens == first.prompt_tokens
    # a rerun (new client, same storage) pays nothing either
    again = _run(llm_config(url), lambda c: c.complete(_messages(), max_tokens=100), cache=cache)
    assert again.cached and server.stats["requests"] == 1


def test_failed_calls_are_not_cached(start_server, tmp_path):
    server, url = start_server(fault_rates={"refusal": 1.0})
    cache = ResponseCache(str(tmp_path))
    with pytest.raises(RefusalError):
        _run(
            llm_config(url, refusal_retries=0), lambda c: c.complete(_messages(), max_tokens=100), cache=cache
        )
    assert not list(tmp_path.rglob("*.json"))


def test_budget_cap_stops_new_videos(start_server):
    _, url = start_server()
    config = llm_config(url, budget_usd=0.0005)  # fake-vlm: $1 / $2 per 1M tokens

    async def scenario(client):
        starts, usage = [], Usage()
        for i in range(5):
            if not await client.start_video():
                starts.append(False)
                continue
            starts.append(True)
            await client.complete(_messages(str(i)), max_tokens=100, usage=usage)
        return starts, usage, client.budget.spent()

    starts, usage, spent = _run(config, scenario)
    assert starts[0] and not starts[-1]
    assert spent == pytest.approx(usage.cost_usd) and spent >= 0.0005
    assert usage.cost_usd == pytest.approx((usage.input_tokens * 1 + usage.output_tokens * 2) / 1e6)


def test_api_key_never_leaks(start_server, monkeypatch, caplog):
    server, url = start_server(required_api_key="sk-the-right-key-000000")
    monkeypatch.setenv("SG4V_TEST_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    config = llm_config(url, api_key_env="SG4V_TEST_KEY")
    with pytest.raises(PermanentCallError) as info:
        _run(config, lambda c: c.complete(_messages(), max_tokens=100))
    assert info.value.fatal and info.value.reason == "http_401"
    assert server.stats["unauthorized"] == 1  # the server did echo the canary back
    for text in (
        str(info.value),
        info.value.detail,
        repr(info.value),
        caplog.text,
        repr(LLMClient(config)),
        repr(config),
        config.model_dump_json(),
    ):
        assert CANARY not in text
        assert "THIS-KEY-MUST-NOT-LEAK" not in text
    assert (
        info.value.__cause__ is None
        and info.value.__context__ is None
        or CANARY not in str(info.value.__context__)
    )


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("SG4V_NO_SUCH_KEY", raising=False)
    client = LLMClient(llm_config("http://127.0.0.1:9/v1", api_key_env="SG4V_NO_SUCH_KEY"))
    with pytest.raises(MissingAPIKeyError, match="SG4V_NO_SUCH_KEY"):
        client.setup()


def test_request_larger_than_the_token_budget_fails_at_once(start_server):
    server, url = start_server()
    with pytest.raises(PermanentCallError, match="request_too_large"):
        _run(llm_config(url, tokens_per_minute=200), lambda c: c.complete(_messages(), max_tokens=100))
    assert server.stats["requests"] == 0


def test_backoff_is_bounded_full_jitter():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(r, 1.0, 8.0, rng) for r in range(10) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays) and max(delays) > 4


def test_steady_state_under_server_limits_has_almost_no_429(start_server):
    server, url = start_server(requests_per_minute=40, window_s=2.0)
    config = llm_config(url, requests_per_minute=40, rate_window_s=2.0, timeout_s=5)
    n = 100

    async def many(client):
        t0 = time.monotonic()
        await asyncio.gather(
            *(client.complete(_messages(f"s{i}", images=0), max_tokens=50) for i in range(n))
        )
        return time.monotonic() - t0

    elapsed = _run(config, many)
    stats = server.stats
    assert stats["served"] == n
    assert stats["rate_limited"] <= 0.01 * stats["requests"]
    # Paced at 97 % of the limit (exactly checked in virtual time in test_limiter); a loaded
    # machine adds its own delays here.
    assert (n - 1) / elapsed >= 0.8 * 40 / 2.0
