"""Comparing dotted versions such as the agent's `1.300040.0b650` against a minimum."""

from __future__ import annotations

import re

from bakery_provision.errors import ProvisionError

_LEADING_NUMBERS = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def numeric_version(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of a version: `1.300040.0b650-1` -> (1, 300040, 0).

    A build suffix (b650, -1, +bakery.testdouble) does not count: the agent's releases
    differ in their numbers, and the minimum is given as numbers only.
    """
    match = _LEADING_NUMBERS.match(text)
    if not match:
        raise ProvisionError(f"{text.strip()!r} does not start with a version number")
    return tuple(int(part) for part in match.group(1).split("."))


def version_at_least(found: str, minimum: str) -> bool:
    """Whether found >= minimum, comparing numbers part by part (missing parts are 0)."""
    have, want = numeric_version(found), numeric_version(minimum)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))
