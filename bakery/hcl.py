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
        if "{{" in value or "}}" in value:
            # Packer runs some strings (tags, AMI names) as Go templates: `{{ .SourceAMI }}`
            # would become a value; config refuses these, this is the last guard.
            raise ValueError(f"{value!r}: {{{{ }}}} would run as a Packer template")
        # JSON string escapes are valid HCL (raw UTF-8 too: HCL's \u takes no surrogate
        # pairs, so non-BMP characters stay as they are); `${` and `%{` must be doubled.
        return json.dumps(value, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")
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
