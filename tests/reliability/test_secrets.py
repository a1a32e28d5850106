"""The API key never lands anywhere a run writes: outputs, config.yaml, logs, Ray's session
files, stdout or stderr. A canary key is used for real (the server requires it) and then
searched for in everything."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from testing.fake_server import FakeOpenAIServer
from testing.fake_server_config import FakeServerConfig
from tests.ray_jobs.conftest import REPO, sg4v

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CANARY = "sk-canary-7f3a9c1e5b2d48e6a0c4"


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_canary_key_is_used_but_never_written(tmp_path):
    samples = tmp_path / "samples"
    made = sg4v("samples", str(samples))
    assert made.returncode == 0, made.stderr[-2000:]
    server = FakeOpenAIServer(FakeServerConfig(latency_s=(0.0, 0.05), allowed_image_counts=[0, 1, 2]),
                              required_api_key=CANARY)
    url, stop = server.start_in_thread()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's sockets live here
    try:
        text = (REPO / "ray_jobs" / "configs" / "smoke.yaml").read_text()
        config = yaml.safe_load(text.replace("out/samples", str(samples)).replace("out/smoke", str(tmp_path / "out")))
        config["llm"] = {"model": "fake-vlm", "base_url": url, "api_key_env": "SG4V_CANARY_KEY",
                         "token_accounting": "usage"}
        config["test_server"] = {"enabled": False}  # the calls go to the server that needs the key
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(config))
        result = sg4v("run", str(path), env={"SG4V_CANARY_KEY": CANARY, "RAY_TMPDIR": str(ray_tmp)})
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.stats["served"] > 0 and server.stats["unauthorized"] == 0  # the key was sent
        assert CANARY not in result.stdout + result.stderr
        assert files_containing(tmp_path / "out", CANARY.encode()) == []
        assert files_containing(tmp_path, CANARY.encode()) == []
        assert list(ray_tmp.rglob("*.log")) or list(ray_tmp.rglob("*.out")), "no Ray logs to search"
        assert files_containing(ray_tmp, CANARY.encode()) == []
    finally:
        stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
