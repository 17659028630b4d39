"""Fixtures for the tests of the on-image programs (onimage/, one test file per program):
each program loaded as a module, and a fake healthy backend instance for the doctor."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
ONIMAGE = HERE.parents[2] / "onimage"
# The programs import launch_settings from their own folder, as on the image.
for folder in (HERE, ONIMAGE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from doctor_fakes import FakeInstance, load_doctor  # noqa: E402


@pytest.fixture(scope="session")
def doctor() -> ModuleType:
    return load_doctor()


@pytest.fixture
def instance(tmp_path: Path) -> FakeInstance:
    return FakeInstance(tmp_path / "root")
