"""What every step works with: the plan, the command runner and the filesystem root.

All on-image paths go through `StepContext.path`, so a test can point `root` at a
temporary folder and check what a step wrote or removed there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bakery_provision.commands import CommandRunner
from bakery_provision.packages import PackageManager, package_manager
from bakery_provision.plan import BakePlan


@dataclass
class StepContext:
    """One step's view of the image."""

    plan: BakePlan
    step: str
    runner: CommandRunner = field(default_factory=CommandRunner)
    root: Path = Path("/")
    out: TextIO | None = None
    _packages: PackageManager | None = field(default=None, init=False, repr=False)

    def path(self, absolute: str) -> Path:
        """An absolute path on the image, under this context's root."""
        return self.root / absolute.lstrip("/")

    @property
    def stage(self) -> Path:
        """The uploaded stage (/tmp/bakery): provisioners, rootfs, artifacts, plan."""
        return self.path(self.plan.stage)

    @property
    def rootfs(self) -> Path:
        """Files that land on the image, rendered on the host, mirroring `/`."""
        return self.stage / "rootfs"

    @property
    def artifacts(self) -> Path:
        """What the host build prepared: agent package, wheelhouse, app, bake CA."""
        return self.stage / "artifacts"

    @property
    def packages(self) -> PackageManager:
        if self._packages is None:
            self._packages = package_manager(self.plan.os, self.runner, self)
        return self._packages

    def say(self, message: str) -> None:
        """A short progress line, prefixed with the step's name."""
        for line in message.splitlines() or [""]:
            print(f"{self.step}: {line}", file=self.out or sys.stdout, flush=True)
