from __future__ import annotations

import base64
import json
import time
import urllib.request

from operators.llm.limiter import parse_duration
from operators.llm.messages import image_part, text_part, user_message
from tests.operators.llm.conftest import make_jpeg, post


def _body(*parts, **extra):
    return {"model": "fake-vlm", "messages": [user_message(*parts)], "max_tokens": 200, **extra}


def test_answers_deterministically_and_names_what_it_saw(start_server):
    server, url = start_server()
    body = _body(
        text_part("Keyframe at frame 12, timestamp 24.5 s"),
        image_part(make_jpeg(64, 48)),
        image_part(make_jpeg(32, 16)),
    )
    s1, h1, a1 = post(url, body)
    s2, _, a2 = post(url, body)
    assert s1 == s2 == 200
    assert a1["choices"][0]["message"] == a2["choices"][0]["message"]
    text = a1["choices"][0]["message"]["content"]
    assert "2 image(s)" in text and "64x48" in text and "32x16" in text
    assert "frames [12]" in text and "timestamps [24.5]" in text
    assert a1["usage"]["prompt_tokens"] > 85 * 2 and a1["usage"]["completion_tokens"] > 0
    assert server.stats["served"] == 2 and server.stats["images"] == 4


def test_bad_requests_get_openai_style_400s(start_server):
    server, url = start_server(allowed_image_counts=[0, 1])
    bad_image = {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b"nope").decode()},
    }
    cases = {
        "invalid_image_format": _body(text_part("x"), bad_image),
        "invalid_image_url": _body({"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}),
        "unexpected_image_count": _body(image_part(make_jpeg()), image_part(make_jpeg())),
        None: {"model": "fake-vlm", "messages": [{"role": "robot", "content": "x"}]},
    }
    for code, body in cases.items():
        status, _, answer = post(url, body)
        assert status == 400, code
        assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["code"] == code
    assert post(url, _body(text_part("x"), frobnicate=1))[0] == 400
    assert post(url, b"{not json")[0] == 400
    assert post(url, {"messages": []})[0] == 400
    assert server.stats["bad_requests"] == 7 and server.stats["served"] == 0


def test_rate_limits_give_429_with_retry_after_and_headers_on_every_response(start_server):
    server, url = start_server(requests_per_minute=2, tokens_per_minute=100_000, window_s=30)
    statuses, headers = [], []
    for i in range(3):
        status, h, _ = post(url, _body(text_part(f"call {i}")))
        statuses.append(status)
        headers.append(h)
    assert statuses == [200, 200, 429]
    assert headers[0]["x-ratelimit-limit-requests"] == "2"
    assert headers[0]["x-ratelimit-remaining-requests"] == "1"
    assert headers[1]["x-ratelimit-remaining-requests"] == "0"
    assert 0 < parse_duration(headers[1]["x-ratelimit-reset-requests"]) <= 30
    assert 28 <= int(headers[2]["retry-after"]) <= 30
    assert "x-ratelimit-remaining-tokens" in headers[2]
    assert server.stats["rate_limited"] == 1


def test_token_limit_429(start_server):
    _, url = start_server(tokens_per_minute=400, window_s=30)
    assert post(url, _body(text_part("a" * 800)))[0] == 200
    status, h, answer = post(url, _body(text_part("b" * 800)))
    assert status == 429 and answer["error"]["type"] == "tokens" and int(h["retry-after"]) >= 1


def test_faults_are_deterministic_for_a_seed(start_server):
    outcomes = []
    for _ in range(2):
        server, url = start_server(fault_rates={"500": 0.3, "malformed": 0.2, "refusal": 0.2}, seed=7)
        run = [post(url, _body(text_part(f"q{i}")))[0] for i in range(30)]
        outcomes.append((run, server.stats["faults"]))
    assert outcomes[0] == outcomes[1]
    assert 500 in outcomes[0][0] and sum(outcomes[0][1].values()) >= 5


def test_stats_endpoint_and_timing(start_server):
    server, url = start_server(latency_s=(0.2, 0.2))
    t0 = time.monotonic()
    post(url, _body(text_part("x")))
    assert time.monotonic() - t0 >= 0.2
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=5) as response:
        stats = json.loads(response.read())
    assert stats["served"] == 1 and stats["paths"] == {"/v1/chat/completions": 1}
