from __future__ import annotations

from pathlib import Path

import pytest

from testing.tiny_models import save_tiny_bert, save_tiny_git, save_tiny_llava


@pytest.fixture(scope="session")
def tiny_git_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_git(tmp_path_factory.mktemp("git_video"), num_image_with_embedding=6)


@pytest.fixture(scope="session")
def tiny_git_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_git(tmp_path_factory.mktemp("git_image"), num_image_with_embedding=None)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("llava"))
