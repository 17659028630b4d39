"""Where the AWS target keeps its image records (bakery/records.py) and JUnit reports:
one record per AMI under build/records/aws/, which CI keeps as artifacts."""

from __future__ import annotations

from pathlib import Path

from bakery.render import BUILD_ROOT

RECORDS_DIR = BUILD_ROOT / "records" / "aws"
REPORTS_DIR = BUILD_ROOT / "reports" / "aws"


def record_path(records_dir: Path, role: str, ami_id: str) -> Path:
    return records_dir / f"{role}-{ami_id}.json"
