"""Build records: one JSON file per AMI under build/records/aws/, what was built from
what, and later what its verification found. CI keeps them as artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bakery.durable import write_atomically
from bakery.render import BUILD_ROOT

RECORDS_DIR = BUILD_ROOT / "records" / "aws"
REPORTS_DIR = BUILD_ROOT / "reports" / "aws"


def record_path(records_dir: Path, role: str, ami_id: str) -> Path:
    return records_dir / f"{role}-{ami_id}.json"


def read_record(path: Path) -> dict[str, Any]:
    """The record at `path`, or an empty one when none was written (built elsewhere)."""
    if not path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def update_record(path: Path, changes: dict[str, Any]) -> Path:
    """Merge `changes` into the record at `path`, replacing the file atomically."""
    record = read_record(path) | changes
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path
