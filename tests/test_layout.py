"""The tree is the architecture: who may import whom.

- ``ray_jobs`` is the job and the only package that imports Ray.
- ``operators`` (stages, the client layer, the on-disk format) imports neither ``ray_jobs`` nor
  ``testing``; ``testing`` (the test harness) imports ``operators`` only.
- ``bench/`` and the packages never import ``tests``.
Checked on the source (every ``import`` statement, wherever it sits in a module), so an import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "ray_jobs", "testing")
#: Top-level names each package may import from this repository.
ALLOWED = {
    "operators": {"operators"},
    "testing": {"operators", "testing"},
    "ray_jobs": {"operators", "testing", "ray_jobs"},
    "bench": {"operators", "testing", "ray_jobs"},
}


def imported_top_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("package", [*PACKAGES, "bench"])
def test_imports_follow_the_layers(package):
    local = {*PACKAGES, "tests"}
    bad = []
    for path in python_files(package):
        for name in imported_top_names(path) & local:
            if name not in ALLOWED[package]:
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert bad == []


@pytest.mark.parametrize("package", ["operators", "testing", "bench"])
def test_only_ray_jobs_imports_ray(package):
    users = [str(p.relative_to(REPO)) for p in python_files(package) if "ray" in imported_top_names(p)]
    if package == "bench":
        # Benchmarks of the job itself (bench/llm.py runs the API stage on Ray Data,
        # bench/scale.py the job's control plane) may start Ray.
        users = [u for u in users if u not in ("bench/llm.py", "bench/scale.py")]
    assert users == []


def test_ray_jobs_does_import_ray():
    assert any("ray" in imported_top_names(p) for p in python_files("ray_jobs"))
