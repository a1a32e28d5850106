from __future__ import annotations

import uuid
from collections.abc import Iterator

import fsspec
import pytest


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` folder standing in for an s3:// or gs:// bucket."""
    root = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root[len("memory://") :]
    if fs.exists(path):
        fs.rm(path, recursive=True)


def touch(path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_memory(uri: str, data: bytes = b"") -> None:
    with fsspec.open(uri, "wb") as f:
        f.write(data)


def live(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["reject_reason"] is None]
