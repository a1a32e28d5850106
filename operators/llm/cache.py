"""A content-addressed cache of answers on the output storage, so no call is paid twice.

Key: sha256 of the canonical JSON of {model, parameters, messages}, where every image data URL
is replaced by the sha256 of its decoded bytes (the same image sent as ``image/jpeg`` or
``image/jpg``, with or without line breaks in its base64, is the same request). Entries live at
``{root}/ab/abcdef....json`` and are written atomically; concurrent writers of one key write
the same answer, so the last rename wins harmlessly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from operators.io import filesystem, join, write_bytes_atomic
from operators.llm.tokens import decode_data_url

logger = logging.getLogger(__name__)


def _canonical_messages(messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    out = copy.deepcopy(list(messages))
    for message in out:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            image = part.get("image_url") if part.get("type") == "image_url" else None
            if isinstance(image, dict) and "url" in image:
                data = decode_data_url(image["url"])
                if data is not None:
                    image["url"] = "sha256:" + hashlib.sha256(data).hexdigest()
    return out


def request_key(model: str, parameters: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str:
    """The cache key of one chat request."""
    payload = {"model": model, "parameters": dict(parameters), "messages": _canonical_messages(messages)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """get/put of answers under ``root`` (a local path or any fsspec URI). Blocking I/O: call
    it from a worker thread in async code."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> str:
        return join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        fs, path = filesystem(self.path(key))
        try:
            with fs.open(path, "rb") as f:
                entry = json.loads(f.read())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:  # a torn or foreign file: treat as a miss
            logger.warning("unreadable cache entry %s (%s); calling again", path, exc)
            self.misses += 1
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or "text" not in entry:
            logger.warning("cache entry %s does not hold key %s; calling again", path, key)
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        data = json.dumps({**entry, "key": key}, ensure_ascii=False, sort_keys=True).encode("utf-8")
        write_bytes_atomic(self.path(key), data)
