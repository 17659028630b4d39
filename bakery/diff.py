"""`invoke diff A B`: what changed between two image records. Debian and pip packages,
the files bakery owns (by sha256, mode, owner), enabled units, listening ports, users,
and the Packer, agent and OTEL distro versions; as text for people or JSON for machines.

A and B name records: a record file, `ROLE` or `ROLE:HASH` (a local image, current or
kept in build/records/local/), an AMI id (build/records/aws/ROLE-AMI.json), or, for one
role on AWS, `released:ENV` (the AMI its SSM parameter names) and `newest` (the newest
verified AMI), whose records CI keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.aws.clients import ec2_client, ssm_client
from bakery.aws.images import newest_first, role_images, status
from bakery.aws.release import check_environment, parameter_history, parameter_name
from bakery.aws.tags import VERIFIED
from bakery.config import BakeryConfig
from bakery.errors import BadInput
from bakery.records import ImageRecord, read_record
from bakery.render import BUILD_ROOT

LOCAL_IMAGES = BUILD_ROOT / "images"
LOCAL_HISTORY = BUILD_ROOT / "records" / "local"
AWS_RECORDS = BUILD_ROOT / "records" / "aws"
ROLES = ("backend", "frontend", "database")
DISTRO_PACKAGE = "aws-opentelemetry-distro"


def history_path(role: str, inputs_hash: str, history: Path = LOCAL_HISTORY) -> Path:
    """Where a local bake keeps a copy of its record, so `ROLE:HASH` finds it later."""
    return history / f"{role}-{inputs_hash}.json"


def resolve_record(
    ref: str, images: Path = LOCAL_IMAGES, history: Path = LOCAL_HISTORY, aws: Path = AWS_RECORDS
) -> ImageRecord:
    """The record `ref` names, or BadInput saying what was looked for."""
    candidates: list[Path] = []
    role, _, inputs_hash = ref.partition(":")
    if Path(ref).suffix == ".json" or "/" in ref:
        candidates = [Path(ref)]
    elif ref.startswith("ami-"):
        candidates = sorted(aws.glob(f"*-{ref}.json"))
    elif role in ROLES and not inputs_hash:
        candidates = [images / role / "record.json"]
    elif role in ROLES:
        current = read_record(images / role / "record.json")
        if current and current.inputs_hash.startswith(inputs_hash):
            candidates = [current.path]
        candidates += sorted(history.glob(f"{role}-{inputs_hash}*.json"))
    for path in candidates:
        record = read_record(path)
        if record is not None:
            return record
    where = ", ".join(str(path) for path in candidates) or "nowhere (not a path, role or AMI id)"
    raise BadInput(
        f"diff: no image record for {ref!r} (looked in {where}); give a record.json path, "
        "ROLE, ROLE:HASH of a local bake, or an AMI id with a record in build/records/aws/"
    )


def aws_ami(ref: str, cfg: BakeryConfig | None) -> str | None:
    """The AMI id `released:ENV` or `newest` names for cfg's role; None for other refs."""
    if ref != "newest" and not ref.startswith("released:"):
        return None
    if cfg is None or cfg.target != "aws":
        raise BadInput(f"diff: {ref!r} needs --target aws and one --role")
    if ref == "newest":
        images = newest_first(role_images(ec2_client(cfg.aws.region), cfg.role, cfg.arch))
        verified = [image["ImageId"] for image in images if status(image) == VERIFIED]
        if not verified:
            raise BadInput(f"diff: no verified {cfg.role} AMI in {cfg.aws.region}")
        return verified[0]
    environment = check_environment(ref.partition(":")[2])
    name = parameter_name(cfg, environment)
    history = parameter_history(ssm_client(cfg.aws.region), name)
    if not history:
        raise BadInput(f"diff: nothing released to {environment} for {cfg.role} ({name})")
    return history[-1].value


@dataclass
class Changes:
    """One aspect's differences: what B has that A lacks, the reverse, and what differs."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": {key: {"a": old, "b": new} for key, (old, new) in self.changed.items()},
        }


def compare(a: dict[str, str], b: dict[str, str]) -> Changes:
    return Changes(
        added={key: b[key] for key in sorted(b.keys() - a.keys())},
        removed={key: a[key] for key in sorted(a.keys() - b.keys())},
        changed={key: (a[key], b[key]) for key in sorted(a.keys() & b.keys()) if a[key] != b[key]},
    )


def _manifest(record: ImageRecord) -> dict[str, Any]:
    manifest = record.details.get("manifest")
    return manifest if isinstance(manifest, dict) else {}


def debian_packages(record: ImageRecord) -> dict[str, str]:
    """name → version from the record's dpkg list (`name\\tversion\\tarch` lines)."""
    found = {}
    for line in _manifest(record).get("packages", []):
        name, _, rest = str(line).partition("\t")
        found[name] = rest.partition("\t")[0]
    return found


def python_packages(record: ImageRecord) -> dict[str, str]:
    """canonical name → version from the record's `pip freeze` of the app's venv."""
    found = {}
    for line in _manifest(record).get("pip_freeze", []):
        name, separator, version = str(line).partition("==")
        if separator:
            found[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return found


def _describe(entry: dict[str, Any]) -> str:
    if entry.get("missing"):
        return "missing"
    content = f"sha256:{entry['sha256']}" if "sha256" in entry else f"-> {entry.get('link')}"
    return f"{content} {entry.get('mode')} {entry.get('owner')}:{entry.get('group')}"


def owned_files(record: ImageRecord) -> dict[str, str]:
    files = _manifest(record).get("inventory", {}).get("files", {})
    return {path: _describe(entry) for path, entry in files.items() if not entry.get("missing")}


def _listed(record: ImageRecord, key: str) -> dict[str, str]:
    return {item: "" for item in _manifest(record).get("inventory", {}).get(key, [])}


def users(record: ImageRecord) -> dict[str, str]:
    accounts = _manifest(record).get("inventory", {}).get("users", [])
    return {a["name"]: f"uid {a['uid']} home {a['home']} shell {a['shell']}" for a in accounts}


def versions(record: ImageRecord) -> dict[str, str]:
    """The tool versions the image was made with and ships, by name."""
    manifest = _manifest(record)
    found = {"packer": record.packer_version, "os": record.os}
    agent = manifest.get("agent", {}).get("version") or "".join(manifest.get("agent_version", []))
    if agent:
        found["agent"] = str(agent)
    distro = python_packages(record).get(DISTRO_PACKAGE)
    if distro:
        found["otel distro"] = distro
    base = record.details.get("base_image", {})
    if isinstance(base, dict) and base.get("sha256"):
        found["base image"] = str(base["sha256"])
    return found


# The aspects, in the order people read them, each with how to read it from a record.
ASPECTS = {
    "versions": versions,
    "debian packages": debian_packages,
    "python packages": python_packages,
    "owned files": owned_files,
    "enabled units": lambda record: _listed(record, "enabled_units"),
    "listening ports": lambda record: _listed(record, "listening"),
    "users": users,
}


@dataclass
class ImageDiff:
    a: ImageRecord
    b: ImageRecord
    aspects: dict[str, Changes]

    @property
    def empty(self) -> bool:
        return not any(self.aspects.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "a": {"role": self.a.role, "image": self.a.image, "inputs_hash": self.a.inputs_hash},
            "b": {"role": self.b.role, "image": self.b.image, "inputs_hash": self.b.inputs_hash},
            "empty": self.empty,
            "changes": {name: changes.as_json() for name, changes in self.aspects.items()},
        }

    def as_text(self) -> list[str]:
        lines = [f"{self.a.role} {self.a.image} -> {self.b.role} {self.b.image}"]
        if self.empty:
            return [*lines, "no differences"]
        for name, changes in self.aspects.items():
            if not changes:
                continue
            counts = f"{len(changes.added)} added, {len(changes.removed)} removed, "
            lines.append(f"{name}: {counts}{len(changes.changed)} changed")
            lines += [f"  + {key} {value}".rstrip() for key, value in changes.added.items()]
            lines += [f"  - {key} {value}".rstrip() for key, value in changes.removed.items()]
            lines += [f"  ~ {key}: {old} -> {new}" for key, (old, new) in changes.changed.items()]
        return lines


def diff_records(a: ImageRecord, b: ImageRecord) -> ImageDiff:
    """Compare two records; refuses one without a manifest (baked before it was kept)."""
    for record in (a, b):
        if "inventory" not in _manifest(record):
            raise BadInput(
                f"diff: the record {record.path} has no inventory (baked before bakery kept "
                f"one): rebuild it with `invoke build --role {record.role or 'ROLE'} --force`"
            )
    return ImageDiff(a, b, {name: compare(read(a), read(b)) for name, read in ASPECTS.items()})
