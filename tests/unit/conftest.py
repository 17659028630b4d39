"""Every unit test runs under the host-state guard (host_state.py): a test that reads this
host's units, installed packages or /etc fails, naming what it read."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_state import watching


@pytest.fixture(autouse=True)
def host_state_guard() -> Iterator[None]:
    with watching() as reads:
        yield
    if reads:
        pytest.fail(
            "this unit test read host state (a fresh machine would differ): "
            + "; ".join(sorted(set(reads))),
            pytrace=False,
        )
