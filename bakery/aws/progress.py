"""Showing that a long AWS wait is alive: waiters paced for AMIs (copies of large images
take tens of minutes), and progress lines through the Progress the CLI installed
(bakery/progress.py); this module prints nothing itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bakery.progress import installed_progress

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import WaiterConfigTypeDef

# Poll every 15 s for up to an hour; the first poll is immediate.
AMI_WAIT: WaiterConfigTypeDef = {"Delay": 15, "MaxAttempts": 240}
# Instances start and stop within minutes.
INSTANCE_WAIT: WaiterConfigTypeDef = {"Delay": 5, "MaxAttempts": 120}


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner saying what bakery waits for, then a line saying it is done."""
    with installed_progress().waiting(what):
        yield


def say(message: str) -> None:
    """One line of progress (on the CLI's stderr)."""
    installed_progress().line(message)
