"""Fixtures for the appsignals-doctor tests: the doctor loaded as a module, and a fake
healthy backend instance in tmp_path (see doctor_fakes)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doctor_fakes import FakeInstance, load_doctor


@pytest.fixture(scope="session")
def doctor() -> ModuleType:
    return load_doctor()


@pytest.fixture
def instance(tmp_path: Path) -> FakeInstance:
    return FakeInstance(tmp_path / "root")
