"""The Packer binary: finding it, knowing what its version accepts, and running it."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import MissingTool, OperationFailed

INSTALL_HINT = (
    "install it with `apt-get install packer` (1.6.x) or HashiCorp's release (>= 1.10), "
    "or run `./scripts/run invoke doctor`"
)


@dataclass(frozen=True)
class PackerVersion:
    """What one Packer release accepts; templates are rendered for exactly this."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def has_plugin_system(self) -> bool:
        """>= 1.7: `required_plugins` and `packer init`; 1.6 rejects the block."""
        return (self.major, self.minor) >= (1, 7)

    @property
    def has_modern_amazon_plugin(self) -> bool:
        """The amazon plugin of 1.7+ knows imds_support, metadata_options, deprecate_at,
        ami_org_arns; 1.6's built-in amazon-ebs rejects all four."""
        return self.has_plugin_system

    @classmethod
    def parse(cls, text: str) -> PackerVersion:
        match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
        if not match:
            raise OperationFailed(f"cannot read Packer's version from {text.strip()!r}")
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)


def packer_binary() -> str:
    found = shutil.which("packer")
    if found is None:
        raise MissingTool("packer", INSTALL_HINT)
    return found


def detect_version() -> PackerVersion:
    """Ask the installed Packer for its version."""
    result = subprocess.run(
        [packer_binary(), "version"], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise OperationFailed(f"`packer version` failed: {result.stderr.strip()}")
    return PackerVersion.parse(result.stdout)


def run_packer(args: list[str], cwd: Path, log_path: Path | None = None) -> str:
    """Run one Packer command in `cwd`; raise with its output when it fails."""
    result = subprocess.run(
        [packer_binary(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=_packer_env(),
    )
    output = result.stdout + result.stderr
    if log_path is not None:
        log_path.write_text(output, encoding="utf-8")
    if result.returncode != 0:
        raise OperationFailed(f"packer {args[0]} failed in {cwd}:\n{output.strip()}")
    return output


def _packer_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    # Packer 1.6 phones home for update checks; CI and offline machines must not wait.
    env.setdefault("CHECKPOINT_DISABLE", "1")
    return env
