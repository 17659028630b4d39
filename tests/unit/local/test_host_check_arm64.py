"""`invoke host-check --set arch=arm64` (bakery/host_check.py `check_foreign_arch`): what
an arm64 image needs on this x86_64 host, each missing piece with its Debian package;
scripts/run installs those packages on a fresh machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bakery.config import HOST_ARCH, REPO_ROOT, load_config
from bakery.host_check import check_foreign_arch
from tests.unit.local.stand_in_programs import path_with

pytestmark = pytest.mark.skipif(HOST_ARCH != "x86_64", reason="arm64 is foreign on x86_64 only")


def test_x86_64_images_need_nothing_foreign() -> None:
    assert check_foreign_arch(load_config("backend", "local")) == []


def test_a_bare_host_is_told_every_package_arm64_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    cfg = load_config(
        "backend", "local",
        overrides=["arch=arm64", f"local.arm64_firmware={tmp_path}/absent/QEMU_EFI.fd"],
    )  # fmt: skip
    (tmp_path / "binfmt").mkdir()
    findings = {f.check: f for f in check_foreign_arch(cfg, tmp_path / "binfmt")}
    assert not any(f.ok for f in findings.values())
    assert findings["qemu-system-aarch64"].fix == "apt-get install qemu-system-arm"
    assert findings["arch-test"].fix == "apt-get install arch-test"
    assert findings["arm64 firmware"].fix == "apt-get install qemu-efi-aarch64"
    assert "apt-get install qemu-user-static binfmt-support" in findings["binfmt"].fix
    assert "update-binfmts --enable qemu-aarch64" in findings["binfmt"].fix


def test_a_ready_host_passes_every_arm64_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "qemu-system-aarch64", "arch-test"))
    firmware = tmp_path / "QEMU_EFI.fd"
    firmware.write_bytes(b"\0")
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-aarch64\n")
    cfg = load_config(
        "backend", "local", overrides=["arch=arm64", f"local.arm64_firmware={firmware}"]
    )
    assert all(f.ok for f in check_foreign_arch(cfg, binfmt))


def test_scripts_run_installs_every_package_the_arm64_checks_name() -> None:
    script = (REPO_ROOT / "scripts" / "run").read_text()
    listed = re.search(r"APT_PACKAGES=\((.*?)\n\)", script, re.S)
    assert listed is not None
    packages = {
        word for line in listed.group(1).splitlines() for word in line.split("#")[0].split()
    }
    wanted = {"qemu-system-arm", "qemu-efi-aarch64", "qemu-user-static", "binfmt-support"}
    assert wanted | {"arch-test"} <= packages
