"""One small package-manager interface over apt (debian12) and dnf (al2023).

Steps ask for packages by what they are for (`PACKAGE_NAMES[os]["nginx"]`), and every
install skips what is already installed, so a second run issues no install command.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bakery_provision.commands import CommandRunner
from bakery_provision.errors import ProvisionError

if TYPE_CHECKING:
    from bakery_provision.context import StepContext

# The distro's names for what each step installs.
PACKAGE_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "debian12": {
        "gpg": ("gnupg",),
        "nginx": ("nginx",),
        "mariadb": ("mariadb-server",),
        "python": ("python3", "python3-venv"),
    },
    "al2023": {
        # The minimal build is what AL2023 ships; it verifies signatures, and the full
        # gnupg2 conflicts with it.
        "gpg": ("gnupg2-minimal",),
        "nginx": ("nginx",),
        "mariadb": ("mariadb105-server",),
        # The system python3 is 3.9; aws-opentelemetry-distro >= 0.18 needs >= 3.10.
        "python": ("python3.11", "python3.11-pip"),
    },
}


class PackageManager:
    """What the steps need from a distro's package manager."""

    def __init__(self, runner: CommandRunner, ctx: StepContext) -> None:
        self.runner = runner
        self.ctx = ctx

    def refresh(self) -> None:
        """Bring the package lists up to date."""
        raise NotImplementedError

    def installed_version(self, name: str) -> str | None:
        """The installed version of a package, or None when it is not installed."""
        raise NotImplementedError

    def install(self, packages: Sequence[str]) -> list[str]:
        """Install what is missing of packages; return the names it installed."""
        missing = [name for name in packages if self.installed_version(name) is None]
        if missing:
            self._install(missing)
        return missing

    def _install(self, packages: Sequence[str]) -> None:
        raise NotImplementedError

    def local_package(self, file: Path) -> tuple[str, str]:
        """(name, version) of a package file, in the form installed_version reports."""
        raise NotImplementedError

    def install_local(self, file: Path) -> None:
        """Install a package file, with its dependencies from the distro's repositories."""
        raise NotImplementedError

    def list_installed(self) -> list[str]:
        """`name<TAB>version<TAB>arch` of every installed package, sorted."""
        raise NotImplementedError

    def clean(self) -> list[str]:
        """Drop downloaded packages and package lists; return what was removed."""
        raise NotImplementedError

    def _remove_contents(self, folder: str) -> list[str]:
        removed = []
        directory = self.ctx.path(folder)
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(f"{folder.rstrip('/')}/{entry.name}")
        return removed


class Apt(PackageManager):
    """Debian's apt, never interactive, keeping our config files on upgrades."""

    ENV: ClassVar[dict[str, str]] = {"DEBIAN_FRONTEND": "noninteractive"}
    INSTALL = (
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        # No fsync per unpacked file: a bake that dies is thrown away whole, and the
        # VM's shutdown flushes the disk; under emulation each sync is dear.
        "-o",
        "Dpkg::Options::=--force-unsafe-io",
    )

    def refresh(self) -> None:
        self.runner.run(["apt-get", "update", "-q", "-o", "Acquire::Retries=3"], env=self.ENV)

    def installed_version(self, name: str) -> str | None:
        result = self.runner.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", name], env=self.ENV, check=False
        )
        if not result.ok:
            return None
        status, _, version = result.stdout.partition("\t")
        # "install ok installed" or "hold ok installed"; "config-files" means removed.
        if status.split()[-1:] != ["installed"] or not version.strip():
            return None
        return version.strip()

    def _install(self, packages: Sequence[str]) -> None:
        self.runner.run([*self.INSTALL, *packages], env=self.ENV)

    def local_package(self, file: Path) -> tuple[str, str]:
        result = self.runner.run(
            ["dpkg-deb", "--show", "--showformat=${Package}\t${Version}", str(file)]
        )
        return _name_and_version(result.stdout, file)

    def install_local(self, file: Path) -> None:
        # apt-get (not dpkg -i) so the package's Depends come from the repositories.
        self.runner.run([*self.INSTALL, str(file.resolve())], env=self.ENV)

    def list_installed(self) -> list[str]:
        result = self.runner.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${Architecture}\n"], env=self.ENV
        )
        return sorted(line for line in result.stdout.splitlines() if line.strip())

    def clean(self) -> list[str]:
        self.runner.run(["apt-get", "clean"], env=self.ENV)
        return self._remove_contents("/var/lib/apt/lists")


class Dnf(PackageManager):
    """Amazon Linux 2023's dnf, without weak dependencies (apt's --no-install-recommends)."""

    INSTALL = ("dnf", "install", "-y", "-q", "--setopt=install_weak_deps=False")

    def refresh(self) -> None:
        self.runner.run(["dnf", "makecache", "-q"])

    def installed_version(self, name: str) -> str | None:
        result = self.runner.run(
            ["rpm", "-q", "--queryformat", "%{VERSION}-%{RELEASE}", name], check=False
        )
        version = result.stdout.strip()
        return version if result.ok and version else None

    def _install(self, packages: Sequence[str]) -> None:
        self.runner.run([*self.INSTALL, *packages])

    def local_package(self, file: Path) -> tuple[str, str]:
        result = self.runner.run(
            ["rpm", "-q", "-p", "--queryformat", "%{NAME}\t%{VERSION}-%{RELEASE}", str(file)]
        )
        return _name_and_version(result.stdout, file)

    def install_local(self, file: Path) -> None:
        # dnf (not rpm -U) so the package's Requires come from the repositories.
        self.runner.run([*self.INSTALL, str(file.resolve())])

    def list_installed(self) -> list[str]:
        result = self.runner.run(
            ["rpm", "-q", "-a", "--queryformat", "%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n"]
        )
        return sorted(line for line in result.stdout.splitlines() if line.strip())

    def clean(self) -> list[str]:
        self.runner.run(["dnf", "clean", "all", "-q"])
        return self._remove_contents("/var/cache/dnf")


def _name_and_version(output: str, file: Path) -> tuple[str, str]:
    name, _, version = output.strip().partition("\t")
    if not name or not version:
        raise ProvisionError(f"cannot read the package name and version of {file}")
    return name, version


def package_manager(os_family: str, runner: CommandRunner, ctx: StepContext) -> PackageManager:
    """The package manager of an OS family from the plan."""
    if os_family == "debian12":
        return Apt(runner, ctx)
    if os_family == "al2023":
        return Dnf(runner, ctx)
    raise ProvisionError(f"no package manager known for os {os_family!r}")


def package_names(os_family: str, purpose: str) -> tuple[str, ...]:
    """The distro's package names for a purpose (gpg, nginx, mariadb, python)."""
    return PACKAGE_NAMES[os_family][purpose]
