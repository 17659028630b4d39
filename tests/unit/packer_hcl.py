"""Rendered Packer HCL read in tests as Packer reads it (python-hcl2 keeps the quotes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2


def unquote(value: Any) -> Any:
    """A value as Packer sees it: python-hcl2 returns strings with their quotes."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if isinstance(value, list):
        return [unquote(item) for item in value]
    return value


def variable_defaults(directory: Path) -> dict[str, Any]:
    """The rendered template's variable defaults, by variable name."""
    parsed = hcl2.loads((directory / "variables.pkr.hcl").read_text())
    return {
        unquote(name): unquote(body.get("default"))
        for block in parsed["variable"]
        for name, body in block.items()
    }
