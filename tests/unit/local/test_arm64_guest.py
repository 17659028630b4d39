"""An arm64 image on an x86_64 host (bakery/local/accelerator.py, vm.py, build.py): TCG
without a KVM probe, QEMU's aarch64 `virt` board booting UEFI firmware, and its own image
folder beside the x86_64 one of the same role."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from bakery import report
from bakery.config import HOST_ARCH, BakeryConfig, load_config
from bakery.errors import BadInput
from bakery.local import accelerator as accelerator_module
from bakery.local import base_image, build
from bakery.local.accelerator import foreign_accelerator
from bakery.local.vm import qemu_machine, seed_drive
from bakery.progress import Progress
from bakery.records import write_record
from tests.unit.image_records import local_record

pytestmark = pytest.mark.skipif(HOST_ARCH != "x86_64", reason="arm64 is foreign on x86_64 only")
FIRMWARE = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"


def _arm64(*overrides: str) -> BakeryConfig:
    return load_config("backend", "local", overrides=["arch=arm64", *overrides])


def test_an_arm64_guest_always_gets_tcg_and_no_kvm_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe(*_: object) -> bool:
        raise AssertionError("KVM was probed for a guest it cannot run")

    monkeypatch.setattr(accelerator_module, "probe_kvm", no_probe)
    cfg = _arm64()  # local.accelerator: auto
    assert foreign_accelerator(cfg) == "tcg"
    target = build.LocalTarget([cfg], Progress())
    assert target.accelerator_for(cfg) == "tcg"
    assert target.accelerator == "tcg"


def test_an_x86_64_guest_is_left_to_the_probe() -> None:
    assert foreign_accelerator(load_config("backend", "local")) is None


def test_kvm_asked_for_an_arm64_guest_is_refused_naming_the_setting() -> None:
    with pytest.raises(BadInput) as caught:
        foreign_accelerator(_arm64("local.accelerator=kvm"))
    assert "local.accelerator" in str(caught.value)
    assert "auto or tcg" in str(caught.value)


def test_arm64_boots_on_the_virt_board_through_uefi_firmware() -> None:
    machine = qemu_machine("arm64", "tcg", FIRMWARE)
    assert machine[0] == "qemu-system-aarch64"
    assert machine[machine.index("-machine") + 1] == "virt,accel=tcg"
    assert machine[machine.index("-cpu") + 1] == "cortex-a72"  # measured: max is 5x slower
    assert machine[machine.index("-bios") + 1] == FIRMWARE
    with pytest.raises(ValueError, match="arm64_firmware"):
        qemu_machine("arm64", "tcg")


def test_the_arm64_bootstrap_boot_runs_on_the_same_cpu_model_as_every_arm64_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRUB's install boot of the arm64 base image: not `max` (pointer authentication
    emulated on every call) but the CPU model the bakes and verification boots use."""
    commands: list[list[str]] = []

    class BootstrapBoot:
        returncode = 0

        def communicate(self, timeout: float) -> tuple[bytes, bytes]:
            (tmp_path / "bootstrap-console.log").write_text("bakery: bootloader installed\n")
            return b"", b""

    def spawn(command: list[str], **_: object) -> BootstrapBoot:
        commands.append(command)
        return BootstrapBoot()

    monkeypatch.setattr(base_image.processes, "spawn", spawn)
    base_image._install_bootloader(tmp_path, tmp_path / "disk.raw", tmp_path, "arm64")
    [command] = commands
    assert command[0] == "qemu-system-aarch64"
    guest = qemu_machine("arm64", "tcg", FIRMWARE)
    cpu = command[command.index("-cpu") + 1]
    assert cpu == guest[guest.index("-cpu") + 1] == "cortex-a72"


def test_x86_64_boot_command_is_unchanged() -> None:
    assert qemu_machine("x86_64", "kvm") == ["qemu-system-x86_64", "-machine", "accel=kvm"]
    assert seed_drive("x86_64", Path("/s.iso")) == [
        "-drive", "file=/s.iso,media=cdrom,readonly=on",
    ]  # fmt: skip


def test_the_arm64_seed_is_a_read_only_virtio_disk_since_virt_has_no_ide() -> None:
    assert seed_drive("arm64", Path("/s.iso")) == [
        "-drive", "file=/s.iso,if=virtio,format=raw,readonly=on",
    ]  # fmt: skip


def test_both_arches_of_one_role_have_their_own_image_folder() -> None:
    x86, arm = build.image_dir("backend"), build.image_dir("backend", "arm64")
    assert x86 == build.IMAGES_ROOT / "backend"  # where x86_64 images always were
    assert arm != x86 and not arm.is_relative_to(x86)
    assert build.record_path("backend", "arm64").parent == arm


def test_an_arm64_bake_gets_the_agent_double_built_for_arm64(tmp_path: Path) -> None:
    import subprocess

    from bakery.artifacts import ensure_agent_double

    debs = {arch: ensure_agent_double(tmp_path, Progress(), "backend", arch) for arch in
            ("x86_64", "arm64")}  # fmt: skip
    fields = {
        arch: subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Architecture"], capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        for arch, deb in debs.items()
    }  # fmt: skip
    assert fields == {"x86_64": "amd64", "arm64": "arm64"}
    assert debs["x86_64"].parent != debs["arm64"].parent  # cached side by side


def test_an_arm64_bake_keeps_its_logs_apart_from_the_x86_64_ones() -> None:
    assert build.per_arch(build.LOGS_ROOT, "backend") == build.LOGS_ROOT / "backend"
    assert build.per_arch(build.LOGS_ROOT, "backend", "arm64") == (
        build.LOGS_ROOT / "arm64" / "backend"
    )


def test_an_emulated_arm64_bake_and_boot_wait_longer_than_x86_64(tmp_path: Path) -> None:
    from bakery.packer import detect_version
    from bakery.render import render_role

    x86, arm = load_config("backend", "local"), _arm64("local.emulation_slowdown=4")
    assert (x86.local_wait_factor, arm.local_wait_factor) == (1, 4)
    packer = detect_version()
    for cfg, wait_s in ((x86, x86.ssh.build_timeout_s), (arm, 4 * arm.ssh.build_timeout_s)):
        rendered = render_role(cfg, packer, build_root=tmp_path / cfg.arch)
        source = (rendered.directory / "source.pkr.hcl").read_text()
        assert f'ssh_timeout          = "{wait_s}s"' in source


def test_invoke_images_lists_both_arches_of_a_role_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "IMAGES_ROOT", tmp_path / "images")
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    for arch, inputs_hash in (("x86_64", "aaaa"), ("arm64", "bbbb")):
        path = build.record_path("backend", arch)
        path.parent.mkdir(parents=True)
        write_record(local_record(path, inputs_hash=inputs_hash, arch=arch, status="verified"))
    out = StringIO()
    report.print_local_images(Console(file=out, width=250), ["backend", "frontend"])
    rows = [line for line in out.getvalue().splitlines() if "backend" in line or "frontend" in line]
    assert len(rows) == 3, out.getvalue()
    assert "x86_64" in rows[0] and "backend-aaaa" in rows[0]
    assert "arm64" in rows[1] and "backend-bbbb" in rows[1]
    assert "x86_64" in rows[2] and "not built" in rows[2]  # a role without an arm64 image
