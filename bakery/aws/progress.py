"""Showing that a long AWS wait is alive: a spinner with what is awaited, and waiters
paced for AMIs (copies of large images take tens of minutes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bakery.cli import console

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import WaiterConfigTypeDef

# Poll every 15 s for up to an hour; the first poll is immediate.
AMI_WAIT: WaiterConfigTypeDef = {"Delay": 15, "MaxAttempts": 240}
# Instances start and stop within minutes.
INSTANCE_WAIT: WaiterConfigTypeDef = {"Delay": 5, "MaxAttempts": 120}


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner saying what bakery waits for, then a line saying it is done."""
    with console.status(f"waiting for {what}…"):
        yield
    console.print(f"[green]done[/] {what}")


def say(message: str) -> None:
    """One line of progress on stderr."""
    console.print(message, soft_wrap=True)
