"""The one exception type a step raises: its message says what failed and what to do."""

from __future__ import annotations


class ProvisionError(Exception):
    """A step cannot go on; provision.py turns this into exit code 1."""
