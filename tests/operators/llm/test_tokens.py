from __future__ import annotations

import sys
import types

import pytest

from operators.llm import tokens
from operators.llm.messages import image_part, text_part, user_message
from tests.operators.llm.conftest import make_jpeg


@pytest.mark.parametrize(
    ("size", "detail", "expected"),
    [
        ((1024, 1024), "high", 765),  # OpenAI's worked example: 768x768 -> 4 tiles
        ((2048, 4096), "high", 1105),  # -> 1024x2048 -> 768x1536 -> 6 tiles
        ((4096, 8192), "low", 85),
        ((1024, 576), "high", 85 + 170 * 4),  # shortest side 576 < 768: no scaling, 2x2 tiles
        ((1365, 768), "high", 85 + 170 * 6),
        ((100, 100), "auto", 85 + 170),
    ],
)
def test_image_tokens_follow_the_published_rule(size, detail, expected):
    assert tokens.image_tokens(*size, detail=detail) == expected


def test_fallback_estimate_overcounts_english_and_fits_cjk():
    english = "The quick brown fox jumps over the lazy dog. " * 10
    assert tokens.estimate_text_tokens_fallback(english) >= len(english) / 4
    assert tokens.estimate_text_tokens_fallback("视频字幕") == 4
    assert tokens.estimate_text_tokens_fallback("") == 0


def test_auto_mode_without_cached_file_never_touches_tiktoken(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    fake = types.SimpleNamespace(get_encoding=lambda name: pytest.fail("would download"))
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    tokens.text_counter.cache_clear()
    try:
        count = tokens.text_counter("gpt-4o", "auto")
        assert count is tokens.estimate_text_tokens_fallback
    finally:
        tokens.text_counter.cache_clear()


def test_auto_mode_uses_tiktoken_when_file_is_cached(monkeypatch):
    encoder = types.SimpleNamespace(encode=lambda text, disallowed_special=(): text.split())
    monkeypatch.setattr(tokens, "_tiktoken_file_cached", lambda name: True)
    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(get_encoding=lambda name: encoder))
    tokens.text_counter.cache_clear()
    try:
        assert tokens.text_counter("gpt-4o", "auto")("a b c") == 3
    finally:
        tokens.text_counter.cache_clear()


def test_broken_tiktoken_falls_back(monkeypatch):
    def fail(name):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(get_encoding=fail))
    tokens.text_counter.cache_clear()
    try:
        assert tokens.text_counter("gpt-4o", "tiktoken") is tokens.estimate_text_tokens_fallback
    finally:
        tokens.text_counter.cache_clear()


def test_prompt_estimate_counts_images_by_their_real_size():
    messages = [
        user_message(
            text_part("x" * 30),
            image_part(make_jpeg(1024, 1024), "high"),
            image_part(make_jpeg(64, 48), "low"),
        )
    ]
    expected = 3 + 3 + 10 + 765 + 85
    assert tokens.estimate_prompt_tokens(messages, tokens.estimate_text_tokens_fallback) == expected
