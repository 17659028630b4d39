"""The programs bakery puts on an image (the `onimage/` folder): where each one lands,
with which mode, and for which roles.

This is the one table of them. The renderer stages a role's programs beside the files of
`rootfs/` (which holds files only), and the local base image takes the `base` ones; the
provisioners then install the staged tree at the same paths. The host also loads
`launch_settings.py` from here, so config checks and the image refuse the same values.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bakery import ROLES

ONIMAGE = Path(__file__).resolve().parent.parent / "onimage"

# The local base image (bakery/local/base_image.py): only the local target has one.
BASE = "base"


@dataclass(frozen=True)
class OnImageProgram:
    """One program in `onimage/<name>` and where it lands on an image."""

    name: str
    path: str
    mode: int
    roles: tuple[str, ...]

    @property
    def source(self) -> Path:
        return ONIMAGE / self.name


LIBEXEC = "/usr/local/libexec/bakery"

ON_IMAGE_PROGRAMS: tuple[OnImageProgram, ...] = (
    # What the boot-time programs share; imported by them, never run.
    OnImageProgram("launch_settings.py", f"{LIBEXEC}/launch_settings.py", 0o644, ROLES),
    # Run by a person on an instance: `sudo appsignals-doctor`.
    OnImageProgram("appsignals-doctor", "/usr/local/bin/appsignals-doctor", 0o755, ROLES),
    # Run at every boot by the unit named in each program's docstring.
    OnImageProgram("translate-agent-config", f"{LIBEXEC}/translate-agent-config", 0o755, ROLES),
    OnImageProgram("resolve-db-password", f"{LIBEXEC}/resolve-db-password", 0o755, ("backend",)),
    # fastapi-otel.service's ExecStartPre: the app starts once the agent answers.
    OnImageProgram("wait-for-agent", f"{LIBEXEC}/wait-for-agent", 0o755, ("backend",)),
    OnImageProgram("write-nginx-upstream", f"{LIBEXEC}/write-nginx-upstream", 0o755, ("frontend",)),
    OnImageProgram("write-rum-snippet", f"{LIBEXEC}/write-rum-snippet", 0o755, ("frontend",)),
    OnImageProgram("init-app-database", f"{LIBEXEC}/init-app-database", 0o755, ("database",)),
    # init of the base image's one bootstrap boot; it deletes itself.
    OnImageProgram(
        "bakery-install-bootloader", "/usr/local/sbin/bakery-install-bootloader", 0o755, (BASE,)
    ),
)


def programs_for(role: str) -> tuple[OnImageProgram, ...]:
    """The programs an image of `role` (or the `base` image) carries, in table order."""
    return tuple(program for program in ON_IMAGE_PROGRAMS if role in program.roles)


def stage_programs(tree: Path, role: str) -> None:
    """Copy the programs of `role` into `tree` (a folder mirroring `/`), each at its path
    and with its mode from the table."""
    for program in programs_for(role):
        target = tree / program.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(program.source, target)
        target.chmod(program.mode)
