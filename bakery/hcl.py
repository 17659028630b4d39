"""Python values as HCL literals, the only way values reach rendered HCL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def hcl_literal(value: Any) -> str:
    """A Python value as an HCL literal; strings cannot inject interpolations."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        # JSON string escapes are valid HCL; `${` and `%{` must be doubled to stay text.
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl_literal(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pairs = ", ".join(f"{hcl_literal(str(k))} = {hcl_literal(v)}" for k, v in value.items())
        return "{ " + pairs + " }"
    if value is None:
        return "null"
    raise TypeError(f"no HCL form for {type(value).__name__}")


def write_var_file(path: Path, values: Mapping[str, Any]) -> Path:
    """Write a `.pkrvars.hcl` file of run inputs (sorted, so it is deterministic)."""
    width = max((len(key) for key in values), default=0)
    lines = [f"{key.ljust(width)} = {hcl_literal(values[key])}" for key in sorted(values)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
