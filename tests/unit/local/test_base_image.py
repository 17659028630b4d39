"""bakery/local/base_image.py: the local base image has the package set of Debian's own
EC2 image (the reference list in tests/fixtures/debian-cloud-images/), but for the
packages left out on purpose, each with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.errors import BadInput, MissingTool
from bakery.local import base_image
from bakery.local.base_image import (
    ARCH_PACKAGES,
    BASE_PACKAGES,
    EC2_PACKAGES_LEFT_OUT,
    _arch_hooks,
    _sources,
    base_inputs,
    base_packages,
    partition_table,
    root_partition,
)
from bakery.local.mirror import host_debian_mirror

EC2_REFERENCE = (
    Path(__file__).resolve().parents[2] / "fixtures/debian-cloud-images/bookworm-ec2-amd64.txt"
)


def ec2_packages() -> dict[str, str]:
    """Package -> the debian-cloud-images class that installs it."""
    packages: dict[str, str] = {}
    for line in EC2_REFERENCE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, fai_class = line.split()
            assert name not in packages, f"{name} is listed twice in {EC2_REFERENCE.name}"
            packages[name] = fai_class
    return packages


def test_the_reference_list_is_the_ec2_images_whole_set() -> None:
    # The classes of the ec2 vendor for bookworm on amd64 (debian-cloud-images image.yaml).
    classes = set(ec2_packages().values())
    assert classes == {"SYSTEM_BOOT", "CLOUD", "EC2", "TIME_SYSTEMD", "AMD64", "EXTRAS"}
    assert len(ec2_packages()) >= 40


def test_every_ec2_package_is_in_the_base_image_or_left_out_with_a_reason() -> None:
    missing = set(ec2_packages()) - set(base_packages("x86_64")) - set(EC2_PACKAGES_LEFT_OUT)
    assert not missing, (
        f"Debian's EC2 image has {sorted(missing)}: add them to BASE_PACKAGES or to "
        "EC2_PACKAGES_LEFT_OUT with the reason"
    )


def test_left_out_packages_are_ec2_packages_the_base_image_really_lacks() -> None:
    for name, reason in EC2_PACKAGES_LEFT_OUT.items():
        # The reference is the amd64 image; an arm64 name stands for its amd64 twin there.
        reference_name = name.replace("-arm64", "-amd64")
        assert reference_name in ec2_packages(), f"{name} is not in Debian's EC2 image: drop it"
        assert name not in base_packages("arm64"), f"{name} is installed and also left out"
        assert name not in base_packages("x86_64"), f"{name} is installed and also left out"
        assert reason.strip(), f"{name} is left out without a reason"


def test_the_tools_of_the_manual_guide_are_in_the_base_image() -> None:
    # What the original guide's user types on the instance (curl localhost:8000/ ...).
    assert {"curl", "ca-certificates", "less", "sudo"} <= set(BASE_PACKAGES)


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_no_package_is_listed_twice(arch: str) -> None:
    assert len(base_packages(arch)) == len(set(base_packages(arch)))


# --- arm64 beside x86_64 ---------------------------------------------------------------


def test_the_ec2_images_amd64_only_packages_have_arm64_counterparts_or_a_reason() -> None:
    amd64_class = {name for name, fai_class in ec2_packages().items() if fai_class == "AMD64"}
    for name in amd64_class:
        arm64_name = name.replace("-amd64", "-arm64")
        assert arm64_name in EC2_PACKAGES_LEFT_OUT or any(
            # the arm64 kernel is Debian's generic arm64 flavour (virt board drivers)
            candidate.startswith(arm64_name.split("-cloud")[0])
            for candidate in ARCH_PACKAGES["arm64"]
        ), f"{name} has no arm64 counterpart in ARCH_PACKAGES['arm64'] nor a reason"


def test_each_arch_gets_its_own_kernel_and_grub_and_none_of_the_others() -> None:
    x86, arm = set(base_packages("x86_64")), set(base_packages("arm64"))
    assert {"linux-image-cloud-amd64", "grub-pc"} <= x86
    assert {"linux-image-arm64", "grub-efi-arm64", "dosfstools"} <= arm
    assert not {name for name in arm if "amd64" in name or name == "grub-pc"}
    assert not {name for name in x86 if "arm64" in name}
    # the rest of the set is shared
    assert x86 - set(ARCH_PACKAGES["x86_64"]) == arm - set(ARCH_PACKAGES["arm64"])
    assert set(BASE_PACKAGES) == x86 - set(ARCH_PACKAGES["x86_64"])


def test_arm64_is_bootstrapped_from_the_same_host_mirror_as_x86_64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    monkeypatch.setattr(
        base_image, "host_debian_mirror", lambda suite: host_debian_mirror(suite, tmp_path)
    )
    x86 = base_inputs(load_config("backend", "local"))
    arm = base_inputs(load_config("backend", "local", overrides=["arch=arm64"]))
    assert arm["sources"] == x86["sources"] == _sources("bookworm")
    assert arm["sources"] == ["deb http://mirror.example.invalid/debian bookworm main"]
    assert arm["arch"] == "arm64"
    assert "arch" not in x86  # x86_64's cache key reads as it did before arm64
    assert arm["packages"] != x86["packages"]


def test_x86_64_disk_keeps_its_one_bootable_mbr_partition() -> None:
    table, start, size = partition_table("x86_64", 4)
    assert table == f"label: dos\nstart=2048, size={size * 2048}, type=83, bootable\n"
    assert (start, size) == (1, 4 * 1024 - 2)
    assert root_partition("x86_64") == 1


def test_arm64_disk_is_gpt_with_the_esp_first_and_root_last() -> None:
    table, start, size = partition_table("arm64", 4)
    lines = table.splitlines()
    assert lines[0] == "label: gpt"
    assert "type=U" in lines[1] and "name=ESP" in lines[1]  # U: sfdisk's EFI System
    assert "type=L" in lines[2] and "name=root" in lines[2]
    assert lines[1].startswith("start=2048, size=131072,")  # 64 MiB from 1 MiB
    assert lines[2].startswith(f"start={start * 2048},")
    # root is last and ends before GPT's backup table in the disk's last MiB
    assert start + size <= 4 * 1024 - 1
    assert root_partition("arm64") == 2


def test_sfdisk_accepts_both_tables_and_lays_out_the_partitions_as_planned(
    tmp_path: Path,
) -> None:
    import json
    import shutil
    import subprocess

    if shutil.which("sfdisk") is None:
        pytest.fail("sfdisk missing: apt-get install fdisk (scripts/run installs it)")
    for arch, label in (("x86_64", "dos"), ("arm64", "gpt")):
        disk = tmp_path / f"{arch}.raw"
        with disk.open("wb") as handle:
            handle.truncate(4 * 1024**3)
        table, start, size = partition_table(arch, 4)
        subprocess.run(["sfdisk", "--quiet", str(disk)], input=table, text=True, check=True)
        dumped = json.loads(
            subprocess.run(
                ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
            ).stdout
        )["partitiontable"]
        assert dumped["label"] == label
        root = dumped["partitions"][root_partition(arch) - 1]
        assert (root["start"], root["size"]) == (start * 2048, size * 2048)
        if arch == "arm64":
            assert dumped["partitions"][0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def test_arm64_base_mounts_its_esp_and_logs_to_the_pl011_console(tmp_path: Path) -> None:
    import subprocess

    assert _arch_hooks("x86_64") == []
    root = tmp_path / "root"
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/fstab").write_text("LABEL=root  /  ext4  defaults  0  1\n")
    for hook in _arch_hooks("arm64"):  # run as mmdebstrap runs them: sh -c HOOK exec ROOT
        subprocess.run(["sh", "-c", hook, "exec", str(root)], check=True)
    assert (root / "boot/efi").is_dir()
    assert "LABEL=ESP  /boot/efi  vfat" in (root / "etc/fstab").read_text()
    grub = (root / "etc/default/grub.d/91-bakery-console.cfg").read_text()
    assert "console=ttyAMA0,115200" in grub and grub.startswith("GRUB_CMDLINE_LINUX_DEFAULT=")


# --- running arm64 programs on this host (qemu-user through binfmt_misc) ---------------


def _binfmt(tmp_path: Path, state: str | None) -> Path:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    (folder / "status").write_text("enabled\n")
    if state is not None:
        (folder / "qemu-aarch64").write_text(f"{state}\ninterpreter /usr/libexec/qemu-aarch64\n")
    return folder


def test_an_enabled_qemu_aarch64_handler_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(base_image.processes, "run", lambda command, **_: ran.append(command))
    base_image.ensure_foreign_exec("arm64", _binfmt(tmp_path, "enabled"))
    assert ran == []


def test_a_disabled_handler_is_enabled_with_update_binfmts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _binfmt(tmp_path, "disabled")
    ran: list[list[str]] = []

    def enable(command: list[str], **_: object) -> None:
        ran.append(command)
        (folder / "qemu-aarch64").write_text("enabled\n")  # what the kernel then shows

    monkeypatch.setattr(base_image.processes, "run", enable)
    monkeypatch.setattr(base_image.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    base_image.ensure_foreign_exec("arm64", folder)
    assert ran == [["update-binfmts", "--enable", "qemu-aarch64"]]


def test_without_binfmt_support_the_error_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda tool: None)
    with pytest.raises(MissingTool) as caught:
        base_image.ensure_foreign_exec("arm64", _binfmt(tmp_path, None))
    assert "apt-get install qemu-user-static binfmt-support" in str(caught.value)


def test_an_unmountable_binfmt_misc_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()  # not mounted: no status file

    class Refused:
        returncode = 32
        stderr = "mount: permission denied"

    monkeypatch.setattr(base_image.processes, "run", lambda command, **_: Refused())
    with pytest.raises(BadInput) as caught:
        base_image.ensure_foreign_exec("arm64", folder)
    message = str(caught.value)
    assert f"mount -t binfmt_misc binfmt_misc {folder}" in message
    assert "permission denied" in message
