"""The Packer binary: finding it, knowing what its version accepts, and running it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bakery.errors import BadInput, MissingTool, OperationFailed

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


# PACKER_* variables that change where Packer logs or caches, never what it builds.
HARMLESS_PACKER_VARIABLES = frozenset(
    {"PACKER_LOG", "PACKER_LOG_PATH", "PACKER_CACHE_DIR", "PACKER_TMP_DIR", "PACKER_NO_COLOR"}
)


def packer_environment(**settings: str) -> dict[str, str]:
    """The environment every Packer run gets: this process's, plus `settings`, with no
    update check. PKR_VAR_* (variable values) and PACKER_* (plugins, config file, ...)
    would change the build past bakery's validation and its record: refused, named."""
    leaks = sorted(
        name
        for name in os.environ
        if name.startswith("PKR_VAR_")
        or (name.startswith("PACKER_") and name not in HARMLESS_PACKER_VARIABLES)
    )
    if leaks:
        raise BadInput(
            f"environment variable {leaks[0]} is set: Packer would use it instead of "
            f"bakery's validated config; unset {' '.join(leaks)} (settings go in a config "
            "file or --set KEY=VALUE)"
        )
    # Packer 1.6 phones home for update checks; CI and offline machines must not wait.
    return {**os.environ, "CHECKPOINT_DISABLE": "1", **settings}


def detect_version() -> PackerVersion:
    """Ask the installed Packer for its version (after checking its environment, so a
    leaking variable is refused before anything is rendered or built)."""
    env = packer_environment()
    result = subprocess.run(
        [packer_binary(), "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
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
        env=packer_environment(),
    )
    output = result.stdout + result.stderr
    if log_path is not None:
        log_path.write_text(output, encoding="utf-8")
    if result.returncode != 0:
        raise OperationFailed(f"packer {args[0]} failed in {cwd}:\n{output.strip()}")
    return output
