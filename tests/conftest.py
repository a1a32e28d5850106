"""Settings every test shares.

Ray >= 2.60 turns on token authentication: ``ray start`` refuses to run without a token, and a
local ``ray.init()`` writes one into ``~/.ray/auth_token`` when none exists. Tests must neither
depend on a token an earlier run left in the home folder nor leave one there, so the whole test
session gets its own token in a temporary folder, named by ``RAY_AUTH_TOKEN_PATH`` before any
Ray code runs (subprocesses, ``ray start`` and Ray's workers inherit it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TOKEN_DIR: Path | None = None


def pytest_configure(config) -> None:
    global _TOKEN_DIR
    _TOKEN_DIR = Path(tempfile.mkdtemp(prefix="sg4v-ray-auth-"))
    token_path = _TOKEN_DIR / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    # A cluster address from the user's shell would send the tests' jobs to that cluster.
    os.environ.pop("RAY_ADDRESS", None)


def pytest_unconfigure(config) -> None:
    if _TOKEN_DIR is not None:
        shutil.rmtree(_TOKEN_DIR, ignore_errors=True)


@pytest.fixture
def start_server() -> Iterator[Callable[..., tuple[Any, str]]]:
    """Starts local OpenAI-compatible test servers (``testing.fake_server``); stops them after."""
    from testing.fake_server import FakeOpenAIServer
    from testing.fake_server_config import FakeServerConfig

    stops: list[Callable[[], None]] = []

    def start(required_api_key: str | None = None, record: bool = False, **settings: Any) -> tuple[Any, str]:
        server = FakeOpenAIServer(FakeServerConfig(**settings), required_api_key=required_api_key,
                                  record=record)
        url, stop = server.start_in_thread()
        stops.append(stop)
        return server, url

    yield start
    for stop in stops:
        stop()
