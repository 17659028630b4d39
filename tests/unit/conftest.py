"""Every unit test runs under the host-state guard (host_state.py): a test that reads this
host's units, installed packages or /etc fails, naming what it read."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`invoke test` runs this suite on every core (pytest-xdist, `-n auto`): tests are
    spread one by one as with `--dist load`, except that the AWS tests whose calls are
    recorded and the tests that read the recording share one worker, in collection
    order (tests/unit/aws/call_recorder.py). xdist's own `--dist loadgroup` cannot do
    this: its group marks are lost on pytest >= 9.2, whose node ids it can no longer edit."""
    if config.getvalue("dist") != "load":
        return None
    from aws.call_recorder import shares_the_recording
    from xdist.scheduler import LoadScopeScheduling

    class RecordingSharesAWorker(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "aws-call-recording" if shares_the_recording(nodeid) else nodeid

    return RecordingSharesAWorker(config, log)
