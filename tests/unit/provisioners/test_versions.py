"""Comparing the agent's versions against the minimum for Application Signals."""

from __future__ import annotations

import pytest
from bakery_provision.errors import ProvisionError
from bakery_provision.versions import numeric_version, version_at_least


@pytest.mark.parametrize(
    ("found", "minimum", "expected"),
    [
        ("1.300040.0", "1.300040.0", True),
        ("1.300040.0b650", "1.300040.0", True),
        ("1.300040.0b650-1", "1.300040.0", True),
        ("1.300041.0", "1.300040.0", True),
        ("1.300039.1", "1.300040.0", False),
        ("1.300040", "1.300040.0", True),
        ("1.300040.1", "1.300040", True),
        ("1.9", "1.300040.0", False),
        ("2.0", "1.300040.0", True),
        ("0.1.0+bakery.testdouble", "1.300040.0", False),
    ],
)
def test_version_at_least(found: str, minimum: str, expected: bool) -> None:
    assert version_at_least(found, minimum) is expected


def test_numeric_version_ignores_build_suffixes() -> None:
    assert numeric_version("1.300040.0b650") == (1, 300040, 0)
    assert numeric_version("v1.2") == (1, 2)


def test_a_version_without_numbers_is_an_error() -> None:
    with pytest.raises(ProvisionError, match="does not start with a version number"):
        numeric_version("latest")
