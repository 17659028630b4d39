"""The image record: one JSON file per image, what was built from what and what its
verification found. Written, read, updated and listed the same way for every target;
only the folder differs (`build/images/<role>/record.json` locally,
`build/records/aws/<role>-<ami>.json` for AWS, which CI keeps as artifacts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.durable import write_atomically

# The life of an image: built by a target, then verified or rejected by the gate.
BUILT = "built"
VERIFIED = "verified"
REJECTED = "rejected"

# Keys every record has; whatever else a target records (region, snapshots, base image,
# accelerator, ...) sits beside them in `details`.
_COMMON = (
    "role",
    "os",
    "arch",
    "target",
    "image",
    "inputs_hash",
    "git_commit",
    "packer_version",
    "built_at",
    "status",
    "packer_log",
)


@dataclass
class ImageRecord:
    """One built image on one target.

    `image` is what the target calls the image: the qcow2 file name locally, the AMI id
    on AWS. `verification` is what the gate found (absent until it ran).
    """

    role: str
    os: str
    target: str
    image: str
    inputs_hash: str
    git_commit: str
    packer_version: str
    built_at: str
    path: Path
    status: str = BUILT
    packer_log: str = ""
    # Records written before arm64 existed have no `arch`: they are all x86_64.
    arch: str = "x86_64"
    details: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.details}
        data.update({name: getattr(self, name) for name in _COMMON})
        if self.verification is not None:
            data["verification"] = self.verification
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> ImageRecord:
        details = {k: v for k, v in data.items() if k not in (*_COMMON, "verification")}
        return cls(
            role=str(data.get("role", "")),
            os=str(data.get("os", "")),
            target=str(data.get("target", "")),
            image=str(data.get("image", "")),
            inputs_hash=str(data.get("inputs_hash", "")),
            git_commit=str(data.get("git_commit", "")),
            packer_version=str(data.get("packer_version", "")),
            built_at=str(data.get("built_at", "")),
            path=path,
            status=str(data.get("status", BUILT)),
            packer_log=str(data.get("packer_log", "")),
            arch=str(data.get("arch", "x86_64")),
            details=details,
            verification=data.get("verification"),
        )


# `invoke images`: the same columns for every target (a target may add its own after).
LISTING_COLUMNS = (
    "role",
    "arch",
    "image",
    "built",
    "status",
    "inputs hash",
    "size MB",
    "hardening",
)


def listing_row(record: ImageRecord, image: str | None = None) -> tuple[str, ...]:
    """The record's row under LISTING_COLUMNS; `image` is how to show the image (a path
    locally), its id by default."""
    size = record.details.get("size_bytes")
    return (
        record.role,
        record.arch,
        image or record.image,
        record.built_at or "-",
        record.status or "-",
        record.inputs_hash or "-",
        f"{int(size) / 1e6:.0f}" if size else "-",
        hardening_index(record),
    )


def hardening_index(record: ImageRecord) -> str:
    """The lynis hardening index the gate measured on the image, or `-` before it ran."""
    hardening = (record.verification or {}).get("hardening") or {}
    index = hardening.get("index")
    return str(index) if isinstance(index, int) else "-"


def utc_timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically and durably: a reader, even after a power
    loss, sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_record(record: ImageRecord) -> Path:
    """Write the whole record to its path, replacing what was there."""
    _replace_json(record.path, record.as_json())
    return record.path


def read_record(path: Path) -> ImageRecord | None:
    """The record at `path`, or None when none was written (never built, or elsewhere)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # not a whole record (written before writes were atomic): rebuild
    return ImageRecord.from_json(data, path)


def record_verdict(path: Path, status: str, verification: dict[str, Any]) -> ImageRecord | None:
    """Set the gate's verdict on the record at `path`, and return the record.

    An image built elsewhere (an AMI built by another machine) gets a partial record,
    so the verdict is never lost.
    """
    record = read_record(path)
    data = record.as_json() if record else {}
    data.update(status=status, verification=verification)
    _replace_json(path, data)
    return read_record(path)
