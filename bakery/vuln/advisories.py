"""Known advisories for Python packages, from a dated snapshot kept in the repository
(config/advisories/pypi.json).

No live per-version advisory source answers here (PyPI's per-release JSON, where its
`vulnerabilities` field lives, is not served through this machine's index), so the
snapshot is cut from the PyPA advisory database (OSV format), for the packages the app
pins, by `invoke refresh-advisories --database PATH` (a checkout of
pypa/advisory-database); its commit and date are in the file.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

from bakery.config import REPO_ROOT
from bakery.errors import BadInput, OperationFailed

SNAPSHOT = REPO_ROOT / "config" / "advisories" / "pypi.json"
REQUIREMENTS = REPO_ROOT / "app" / "backend" / "requirements.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)", re.M)


def canonical_name(name: str) -> str:
    """PEP 503: pip freeze, requirements and advisories spell names differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    aliases: tuple[str, ...]
    summary: str
    severity: str
    fixed: tuple[str, ...]


def _affects(affected: dict[str, Any], version: Version) -> bool:
    """OSV: listed versions, or ECOSYSTEM ranges of introduced/fixed/last_affected events."""
    listed = {str(v) for v in affected.get("versions", [])}
    if str(version) in listed:
        return True
    for span in affected.get("ranges", []):
        if span.get("type") != "ECOSYSTEM":
            continue
        inside = False
        for event in span.get("events", []):
            try:
                if "introduced" in event:
                    start = event["introduced"]
                    inside = start == "0" or version >= Version(str(start))
                elif "fixed" in event and inside and version >= Version(str(event["fixed"])):
                    inside = False
                elif "last_affected" in event and inside:
                    inside = version <= Version(str(event["last_affected"]))
            except InvalidVersion:
                continue
        if inside:
            return True
    return False


def _severity(entry: dict[str, Any]) -> str:
    """The advisory's own word for it, if it has one; most PYSEC entries have none."""
    specific = entry.get("database_specific") or {}
    if isinstance(specific, dict) and specific.get("severity"):
        return str(specific["severity"]).lower()
    return "unrated"


def load_snapshot(path: Path = SNAPSHOT) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"{path}: cannot read the advisory snapshot ({exc}); refresh it with "
            "`invoke refresh-advisories --database PATH`"
        ) from exc
    return data


def advisories_for(snapshot: dict[str, Any], name: str, version: str) -> list[Advisory]:
    """The snapshot's advisories that affect `name==version`."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return []
    found = []
    for entry in snapshot.get("advisories", {}).get(canonical_name(name), []):
        for affected in entry.get("affected", []):
            if _affects(affected, parsed):
                fixed = tuple(
                    str(event["fixed"])
                    for span in affected.get("ranges", [])
                    if span.get("type") == "ECOSYSTEM"
                    for event in span.get("events", [])
                    if "fixed" in event
                )
                found.append(
                    Advisory(
                        id=str(entry["id"]),
                        package=canonical_name(name),
                        aliases=tuple(entry.get("aliases", [])),
                        summary=str(entry.get("summary") or entry.get("details", ""))[:160],
                        severity=_severity(entry),
                        fixed=fixed,
                    )
                )
                break
    return found


def pinned_names(requirements: Path = REQUIREMENTS) -> list[str]:
    return sorted({canonical_name(m.group(1)) for m in _PIN.finditer(requirements.read_text())})


def build_snapshot(database: Path, names: list[str]) -> dict[str, Any]:
    """The snapshot document for `names`, cut from a pypa/advisory-database checkout."""
    vulns = database / "vulns"
    if not vulns.is_dir():
        raise BadInput(
            f"--database {database}: no vulns/ folder; "
            "give a checkout of the PyPA advisory database"
        )
    try:
        commit = subprocess.run(
            ["git", "-C", str(database), "log", "-1", "--format=%H %cI"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        raise OperationFailed(f"cannot read the commit of {database}: {exc}") from exc
    advisories: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(vulns.iterdir()):
        name = canonical_name(folder.name)
        if name not in names or not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.yaml")):
            entry = yaml.safe_load(file.read_text(encoding="utf-8"))
            if entry.get("withdrawn"):
                continue
            keep = (
                "id",
                "aliases",
                "summary",
                "details",
                "affected",
                "database_specific",
                "published",
            )
            kept = {k: entry[k] for k in keep if k in entry}
            # YAML reads timestamps as datetimes; the snapshot keeps them as text.
            advisories.setdefault(name, []).append(json.loads(json.dumps(kept, default=str)))
    return {
        "source": "PyPA advisory database (OSV format)",
        "commit": commit[0],
        "date": commit[1],
        "refresh": "invoke refresh-advisories --database PATH",
        "packages": names,
        "advisories": advisories,
    }
