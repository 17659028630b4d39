"""The Debian mirror this host already uses, read from its apt sources.

The repo never names a mirror: whatever the machine's apt is configured with (a
corporate mirror, a snapshot, the default) is what the base image is built from.
"""

from __future__ import annotations

import re
from pathlib import Path

from bakery.errors import BadInput

APT_DIR = Path("/etc/apt")


def _deb822_uris(text: str, suite: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if (
            suite in fields.get("suites", "").split()
            and "main" in fields.get("components", "").split()
        ):
            uris.extend(fields.get("uris", "").split())
    return uris


def _one_line_uris(text: str, suite: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        parts = re.sub(r"\[[^\]]*\]", "", line).split()
        if len(parts) >= 4 and parts[0] == "deb" and parts[2] == suite and "main" in parts[3:]:
            uris.append(parts[1])
    return uris


def host_debian_mirror(suite: str, apt_dir: Path = APT_DIR) -> str:
    """The first `deb` URI that serves `suite main` on this host."""
    candidates: list[str] = []
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        candidates += _deb822_uris(path.read_text(encoding="utf-8"), suite)
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += _one_line_uris(path.read_text(encoding="utf-8"), suite)
    if not candidates:
        raise BadInput(
            f"no apt source on this host serves Debian '{suite} main' "
            f"(looked in {apt_dir}/sources.list and sources.list.d/): add one, "
            "e.g. a deb822 file with Types: deb, URIs: <mirror>, Suites: "
            f"{suite}, Components: main"
        )
    return candidates[0]
