"""Synthetic ImageRecords for unit tests: the record of a built local image, with the
fields a test cares about given and the rest fixed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bakery.records import ImageRecord


def local_record(
    path: Path,
    *,
    role: str = "backend",
    inputs_hash: str = "1234",
    details: dict[str, Any] | None = None,
    **fields: Any,
) -> ImageRecord:
    """A local `role` image's record at `path`, its qcow2 named by role and inputs hash;
    `fields` set any other ImageRecord field (status, git_commit, ...)."""
    record = ImageRecord(
        role=role,
        os="debian12",
        target="local",
        image=f"{role}-{inputs_hash}.qcow2",
        inputs_hash=inputs_hash,
        git_commit="abc",
        packer_version="1.6.6",
        built_at="2026-12-01T00:00:00Z",
        path=path,
        details=details or {},
    )
    return replace(record, **fields)
