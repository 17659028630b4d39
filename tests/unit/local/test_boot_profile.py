"""bakery/local/build.py: the guest's boot profile saved after the gate.

The guest is a double: a shell on this host whose PATH holds stand-in `systemd-analyze`,
`cloud-init` and `sudo` scripts, so the one SSH script bakery sends really runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bakery.local.build import BOOT_PROFILE, save_boot_profile


class LocalShellGuestDouble:
    """Answers `ssh(command)` by running the command in bash with stand-in tools."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": f"{self.bin_dir}:/usr/bin:/bin"},
        )


class UnreachableGuestDouble:
    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(["ssh"], timeout)


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_each_profile_command_lands_in_its_own_file(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "systemd-analyze", 'echo "analyze $1"')
    _stand_in(bin_dir, "cloud-init", 'echo "cloud-init $1 $2"')
    _stand_in(bin_dir, "sudo", 'shift; exec "$@"')  # drops -n
    written = save_boot_profile(LocalShellGuestDouble(bin_dir), tmp_path / "logs")  # type: ignore[arg-type]
    texts = {path.name: path.read_text() for path in written}
    assert list(texts) == list(BOOT_PROFILE)
    assert texts["boot-time.txt"] == "analyze time\n"
    assert texts["boot-blame.txt"] == "analyze blame\n"
    assert texts["boot-critical-chain.txt"] == "analyze critical-chain\n"
    assert texts["cloud-init-analyze.txt"] == "cloud-init analyze show\n"


def test_an_unreachable_guest_leaves_a_note_not_an_error(tmp_path: Path) -> None:
    written = save_boot_profile(UnreachableGuestDouble(), tmp_path)  # type: ignore[arg-type]
    assert len(written) == len(BOOT_PROFILE)
    assert all(path.read_text().startswith("not fetched:") for path in written)
