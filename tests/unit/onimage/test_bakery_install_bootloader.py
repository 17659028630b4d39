"""bakery-install-bootloader: init (PID 1) of the local base image's one bootstrap boot,
which installs GRUB and deletes itself (its boot is exercised by every base image build)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bakery.local.base_image import BOOTLOADER_INSTALLER
from bakery.onimage import ONIMAGE, programs_for

SCRIPT = ONIMAGE / "bakery-install-bootloader"


def test_the_bootstrap_boot_runs_the_installer_from_its_table_path() -> None:
    assert [p.path for p in programs_for("base")] == [BOOTLOADER_INSTALLER]


def test_the_installer_deletes_itself_from_where_the_table_puts_it() -> None:
    assert f"rm -f {BOOTLOADER_INSTALLER}\n" in SCRIPT.read_text()


def test_the_installer_prints_the_line_the_build_waits_for() -> None:
    # bakery/local/base_image.py reads this line from the serial console.
    assert 'echo "bakery: bootloader installed"' in SCRIPT.read_text()


def test_the_installer_passes_shellcheck() -> None:
    # A dev dependency: the virtualenv's bin/ first, then PATH.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
        "shellcheck"
    )
    assert shellcheck, "shellcheck is missing: it is a dev dependency, `pip install -e '.[dev]'`"
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
