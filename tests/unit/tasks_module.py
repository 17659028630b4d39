"""tasks.py, the invoke entry point at the repository's root (not a package module),
loaded for a test as invoke loads it: a fresh module each call, so what one test
patches on it stays its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from invoke import Collection

from bakery.config import REPO_ROOT


def load_tasks(root: Path = REPO_ROOT) -> ModuleType:
    spec = importlib.util.spec_from_file_location("tasks", root / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_collection(root: Path = REPO_ROOT) -> Collection:
    """The tasks `invoke --list` shows."""
    return Collection.from_module(load_tasks(root))
