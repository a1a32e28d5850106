from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

from PIL import Image

from operators.llm.config import LLMConfig, default_prices
from testing.fake_server_config import FakeServerConfig


def make_jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """POST JSON to the server, return (status, lower-cased headers, parsed body or raw text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url + "/chat/completions",
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, hdrs, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, exc.headers, exc.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode()
    return status, {k.lower(): v for k, v in hdrs.items()}, parsed


def llm_config(url: str, **overrides: Any) -> LLMConfig:
    """A client config for the local server: fast backoff, short timeout, no key needed."""
    settings: dict[str, Any] = dict(
        base_url=url,
        model="fake-vlm",
        api_key_env=None,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        timeout_s=1.0,
        tokenizer="estimate",
        requests_per_minute=10**5,
        tokens_per_minute=10**8,
        # The list prices, and the test server's model at what a run prices it.
        prices={**default_prices(), "fake-vlm": FakeServerConfig().price},
    )
    settings.update(overrides)
    return LLMConfig(**settings)
