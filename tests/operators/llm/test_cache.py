from __future__ import annotations

import base64

from operators.llm.cache import ResponseCache, request_key
from operators.llm.messages import image_part, text_part, user_message
from tests.operators.llm.conftest import make_jpeg

PARAMS = {"max_tokens": 100, "temperature": 0.2}


def _with_url(url: str) -> list[dict]:
    return [
        user_message(
            text_part("describe"), {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
        )
    ]


def test_same_image_bytes_give_the_same_key_whatever_the_data_url_form():
    jpeg = make_jpeg()
    b64 = base64.b64encode(jpeg).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    keys = {
        request_key("m", PARAMS, _with_url(f"data:image/jpeg;base64,{b64}")),
        request_key("m", PARAMS, _with_url(f"data:image/jpg;base64,{b64}")),
        request_key("m", PARAMS, _with_url(f"data:image/jpeg;base64,{wrapped}")),
    }
    assert len(keys) == 1


def test_anything_that_changes_the_answer_changes_the_key():
    messages = [user_message(text_part("describe"), image_part(make_jpeg()))]
    base = request_key("m", PARAMS, messages)
    assert request_key("m2", PARAMS, messages) != base
    assert request_key("m", {**PARAMS, "temperature": 0.3}, messages) != base
    assert (
        request_key(
            "m", PARAMS, [user_message(text_part("describe"), image_part(make_jpeg(color=(0, 0, 9))))]
        )
        != base
    )
    assert (
        request_key("m", PARAMS, [user_message(text_part("describe"), image_part(make_jpeg(), "low"))])
        != base
    )
    assert request_key("m", dict(reversed(PARAMS.items())), messages) == base


def test_put_get_round_trip_and_torn_entries_are_misses(tmp_path):
    cache = ResponseCache(str(tmp_path / "llm_cache"))
    key = request_key("m", PARAMS, [user_message(text_part("hi"))])
    assert cache.get(key) is None
    cache.put(key, {"text": "hello", "prompt_tokens": 3, "completion_tokens": 1})
    assert cache.path(key).endswith(f"/{key[:2]}/{key}.json")
    assert cache.get(key)["text"] == "hello"
    with open(cache.path(key), "w") as f:
        f.write('{"text": "hel')
    assert cache.get(key) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_cache_on_fsspec_memory_storage():
    cache = ResponseCache("memory://run/llm_cache")
    cache.put("ab" + "0" * 62, {"text": "x", "prompt_tokens": 1, "completion_tokens": 1})
    assert cache.get("ab" + "0" * 62)["text"] == "x"
