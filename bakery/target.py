"""The interface every target implements: make an image, boot it to an SSH target.

Everything else (rendering, the inputs hash, the Packer runner, the record, the suites
and the verdict) is shared; a target adapter (bakery/local, bakery/aws) only knows how
to produce an image from a rendered role and how to start a machine from it. See
docs/architecture.md for adding a third target.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from bakery.config import BakeryConfig
from bakery.records import ImageRecord
from bakery.render import RenderedRole
from bakery.verify.suites import SshTarget, SuiteResult


class ImageTarget(Protocol):
    """A place images are baked and booted (local QEMU, AWS EC2, ...)."""

    name: str

    def build(self, cfg: BakeryConfig, rendered: RenderedRole) -> ImageRecord:
        """Bake `rendered` into an image; its record is written. Raise on failure, and
        leave nothing of the failed run behind."""
        ...

    def boot(
        self, cfg: BakeryConfig, record: ImageRecord, settings: dict[str, str]
    ) -> AbstractContextManager[SshTarget]:
        """Start a machine from the image with `settings` as launch-time user data;
        yield how to reach it over SSH and stop it (removing all it made) on exit."""
        ...

    def mark(self, cfg: BakeryConfig, record: ImageRecord, result: SuiteResult) -> None:
        """Put the verdict where this target's users look for it (e.g. AMI tags); the
        record itself is updated by the gate."""
        ...
