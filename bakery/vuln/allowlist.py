"""The reviewed allow-list (config/vuln-allowlist.yaml): findings accepted on purpose,
each with the advisory id, the package, the reason and an expiry date. An expired entry
fails the gate, so an exception is reviewed again rather than kept by default."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bakery.config import REPO_ROOT
from bakery.errors import BadInput

ALLOWLIST = REPO_ROOT / "config" / "vuln-allowlist.yaml"
KEYS = ("id", "package", "reason", "expires")


@dataclass(frozen=True)
class Accepted:
    id: str
    package: str
    reason: str
    expires: dt.date

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def describe(self) -> str:
        return f"{self.id} ({self.package}, until {self.expires}: {self.reason})"


def _entry(path: Path, index: int, raw: Any) -> Accepted:
    where = f"{path}: accepted[{index}]"
    if not isinstance(raw, dict) or sorted(raw) != sorted(KEYS):
        raise BadInput(f"{where}: give exactly the keys {', '.join(KEYS)}")
    expires = raw["expires"]
    if isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            expires = None
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise BadInput(f"{where}.expires: {raw['expires']!r} is not a date (YYYY-MM-DD)")
    for key in ("id", "package", "reason"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise BadInput(f"{where}.{key}: must be a non-empty text")
    return Accepted(raw["id"], raw["package"], raw["reason"].strip(), expires)


def load_allowlist(path: Path = ALLOWLIST) -> list[Accepted]:
    """The entries, or BadInput naming the file and entry that is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: cannot read the vulnerability allow-list ({exc})") from exc
    accepted = data.get("accepted") or [] if isinstance(data, dict) else None
    if not isinstance(accepted, list):
        raise BadInput(f"{path}: expected `accepted:` holding a list of entries")
    return [_entry(path, index, raw) for index, raw in enumerate(accepted)]
