"""Which tests share the worker that records AWS calls when `invoke test` spreads the
suite over the host's cores (call_recorder.py, tests/unit/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

from .call_recorder import READER_MODULES, RECORDED_MODULES, shares_the_recording

HERE = Path(__file__).resolve().parent


def test_recorded_and_reader_modules_share_the_recording_worker() -> None:
    for module in (*RECORDED_MODULES, *READER_MODULES):
        assert shares_the_recording(f"tests/unit/aws/{module}::test_x[a-b]")


def test_other_tests_spread_freely() -> None:
    assert not shares_the_recording("tests/unit/aws/test_clients.py::test_x")
    assert not shares_the_recording("tests/unit/local/test_faults.py::test_x")
    # Same file name in another folder: not a recorded module.
    assert not shares_the_recording("tests/unit/local/test_build.py::test_x")


def test_every_module_reading_the_recording_is_a_reader_module() -> None:
    reads = re.compile(r"def test_\w+\([^)]*\brecorded_calls\b", re.S)
    readers = {path.name for path in HERE.glob("test_*.py") if reads.search(path.read_text())}
    assert readers and readers <= set(READER_MODULES), readers - set(READER_MODULES)
