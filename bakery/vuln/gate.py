"""The vulnerability gate over one image record: its dpkg list against the security
suite, its `pip freeze` against the advisory snapshot, each finding accepted only by an
unexpired allow-list entry with its id and package. The result, with counts by
severity, goes into the record under `vulnerabilities`."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.diff import debian_packages, python_packages
from bakery.records import ImageRecord, read_record, utc_timestamp, write_record
from bakery.vuln.advisories import SNAPSHOT, advisories_for, load_snapshot
from bakery.vuln.allowlist import ALLOWLIST, Accepted, load_allowlist
from bakery.vuln.debian import pending_updates, security_index


@dataclass(frozen=True)
class Finding:
    id: str
    source: str  # "debian" (a pending security update) or "python" (an advisory)
    package: str
    installed: str
    fixed: str
    severity: str
    summary: str = ""
    accepted_by: Accepted | None = None

    def as_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("id", "source", "package", "installed", "fixed")}
        data |= {"severity": self.severity, "summary": self.summary}
        if self.accepted_by is not None:
            data["accepted_by"] = self.accepted_by.describe()
        return data


@dataclass
class VulnReport:
    findings: list[Finding] = field(default_factory=list)
    expired: list[Accepted] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    skipped: str = ""

    @property
    def open(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.accepted_by is None]

    @property
    def passed(self) -> bool:
        return not self.skipped and not self.open and not self.expired

    def counts(self) -> dict[str, int]:
        """Open findings by severity, and how many the allow-list accepted."""
        counts = dict(Counter(finding.severity for finding in self.open))
        accepted = len(self.findings) - len(self.open)
        return counts | ({"accepted": accepted} if accepted else {})

    def problems(self) -> list[str]:
        found = [f"{f.id} in {f.package} {f.installed} (fixed in {f.fixed})" for f in self.open]
        found += [f"allow-list entry expired: {entry.describe()}" for entry in self.expired]
        return found

    def as_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"status": "skipped", "skipped_by": self.skipped, "checked_at": utc_timestamp()}
        return {
            "status": "passed" if self.passed else "failed",
            "checked_at": utc_timestamp(),
            "counts": self.counts(),
            "sources": self.sources,
            "findings": [finding.as_json() for finding in self.findings],
            "expired_allow_entries": [entry.describe() for entry in self.expired],
        }


def _accepting(finding: Finding, allowlist: list[Accepted], today: dt.date) -> Accepted | None:
    for entry in allowlist:
        if entry.id == finding.id and entry.package == finding.package:
            return None if entry.expired(today) else entry
    return None


def scan(
    record: ImageRecord,
    debian_index: dict[str, str],
    snapshot: dict[str, Any],
    allowlist: list[Accepted],
    today: dt.date,
) -> VulnReport:
    """Every finding in `record`, each with the allow-list entry that accepts it, if any."""
    found = [
        Finding(update.id, "debian", update.package, update.installed, update.fixed, "unrated")
        for update in pending_updates(debian_packages(record), debian_index)
    ]
    for name, version in python_packages(record).items():
        for advisory in advisories_for(snapshot, name, version):
            found.append(
                Finding(
                    advisory.id,
                    "python",
                    name,
                    version,
                    ", ".join(advisory.fixed) or "no fix",
                    advisory.severity,
                    advisory.summary,
                )
            )
    report = VulnReport(expired=[entry for entry in allowlist if entry.expired(today)])
    report.findings = [
        Finding(**{**f.__dict__, "accepted_by": _accepting(f, allowlist, today)}) for f in found
    ]
    report.sources = {
        "advisories": f"{snapshot.get('source', '')} at {snapshot.get('commit', '')[:12]}"
        f" ({snapshot.get('date', '')})",
    }
    return report


# Fetches (description, package → version) of the security suite for an OS family and
# image architecture: the host's mirror, or a test's stand-in.
IndexFetcher = Callable[[str, str], tuple[str, dict[str, str]]]


def check_record(
    record: ImageRecord,
    skip: str = "",
    fetch_index: IndexFetcher = security_index,
    today: dt.date | None = None,
    allowlist_path: Path = ALLOWLIST,
    snapshot_path: Path = SNAPSHOT,
) -> VulnReport:
    """Scan the record's image and write the result into its record (also when skipped,
    by the flag that skipped it, so a skipped gate is never mistaken for a passed one)."""
    if skip:
        report = VulnReport(skipped=skip)
    else:
        allowlist = load_allowlist(allowlist_path)  # a bad one stops before any fetch
        snapshot = load_snapshot(snapshot_path)
        described, index = fetch_index(record.os, record.arch)
        report = scan(record, index, snapshot, allowlist, today or dt.date.today())
        report.sources["debian"] = described
    current = read_record(record.path) or record
    current.details["vulnerabilities"] = report.as_json()
    write_record(current)
    return report
