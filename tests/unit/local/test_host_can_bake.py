"""A local arm64 bake without its QEMU or firmware is refused before anything starts,
naming what to install (bakery/local/build.py `check_host_can_bake`); rendering needs
none of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.errors import BadInput, MissingTool
from bakery.local.build import check_host_can_bake
from tests.unit.local.stand_in_programs import path_with


def test_x86_64_bake_is_not_held_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    check_host_can_bake(load_config("backend", "local"))


def test_missing_qemu_system_aarch64_names_its_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    with pytest.raises(MissingTool) as caught:
        check_host_can_bake(load_config("backend", "local", overrides=["arch=arm64"]))
    assert "qemu-system-aarch64" in str(caught.value)
    assert "apt-get install qemu-system-arm" in str(caught.value)


def test_missing_uefi_firmware_names_qemu_efi_aarch64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "qemu-system-aarch64"))
    cfg = load_config(
        "backend", "local",
        overrides=["arch=arm64", f"local.arm64_firmware={tmp_path}/absent/QEMU_EFI.fd"],
    )  # fmt: skip
    with pytest.raises(BadInput) as caught:
        check_host_can_bake(cfg)
    assert "local.arm64_firmware" in str(caught.value)
    assert "apt-get install qemu-efi-aarch64" in str(caught.value)


def test_with_qemu_and_firmware_present_an_arm64_bake_may_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "qemu-system-aarch64"))
    firmware = tmp_path / "QEMU_EFI.fd"
    firmware.write_bytes(b"\0" * 16)
    cfg = load_config(
        "backend", "local", overrides=["arch=arm64", f"local.arm64_firmware={firmware}"]
    )
    check_host_can_bake(cfg)  # the arm64 base image is made by the bake itself now
