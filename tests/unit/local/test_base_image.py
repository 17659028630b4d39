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
    BASE_FILES,
    BASE_PACKAGES,
    EC2_PACKAGES_LEFT_OUT,
    UPDATE_INITRAMFS,
    _arch_hooks,
    _sources,
    base_inputs,
    base_packages,
    initramfs_build_hooks,
    initramfs_defer_hooks,
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


# --- the initramfs: a short module list, built once ------------------------------------


def _run_hooks(hooks: list[str], root: Path, bin_dir: Path) -> None:
    """Run mmdebstrap hooks as it runs them (`sh -c HOOK exec ROOT`; `sync-in SRC DST`
    copies a host tree into the root), with a stand-in `chroot` that logs its command."""
    import shutil
    import subprocess

    for hook in hooks:
        if hook.startswith("sync-in "):
            source, target = (word.strip('"') for word in hook.split()[1:])
            shutil.copytree(source, root / target.lstrip("/"), dirs_exist_ok=True)
            continue
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        subprocess.run(["sh", "-c", hook, "exec", str(root)], check=True, env=env)


@pytest.fixture
def chroot_log(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `chroot ROOT COMMAND...` that logs COMMAND; (its folder, its log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "chroot.log"
    chroot = bin_dir / "chroot"
    chroot.write_text(f'#!/bin/sh\nshift\necho "$*" >> {log}\n')
    chroot.chmod(0o755)
    return bin_dir, log


@pytest.fixture
def deferred_root(tmp_path: Path, chroot_log: tuple[Path, Path]) -> tuple[Path, Path]:
    """A root the essential hooks ran in (before initramfs-tools); (the root, chroot's log)."""
    bin_dir, log = chroot_log
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    _run_hooks(initramfs_defer_hooks(BASE_FILES), root, bin_dir)
    return root, log


def test_update_initramfs_is_a_no_op_while_the_packages_install(
    deferred_root: tuple[Path, Path],
) -> None:
    import subprocess

    root, log = deferred_root
    assert log.read_text().splitlines() == [
        f"dpkg-divert --quiet --local --rename --divert {UPDATE_INITRAMFS}.bakery-deferred "
        f"--add {UPDATE_INITRAMFS}"
    ]
    # What the kernel's postinst hook and initramfs-tools' trigger run: nothing happens.
    stub = root / UPDATE_INITRAMFS.lstrip("/")
    for args in (["-c", "-k", "6.1.0-28-arm64"], ["-u"]):
        ran = subprocess.run([str(stub), *args], capture_output=True, check=False)
        assert (ran.returncode, ran.stdout) == (0, b"")
    assert not (root / "boot").exists()


def test_the_initramfs_holds_a_listed_set_of_modules_in_place_before_the_kernel(
    deferred_root: tuple[Path, Path],
) -> None:
    root, _ = deferred_root
    config = root / "etc/initramfs-tools"
    settings = [
        line
        for path in sorted((config / "conf.d").iterdir())
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert settings == ["MODULES=list"]
    modules = {
        line.strip()
        for line in (config / "modules").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # Both machines' root disk is virtio on PCI (vm.py, packer's disk_interface), ext4.
    assert {"virtio_pci", "virtio_blk", "ext4"} <= modules
    # The x86_64 seed CD on the PC's IDE bus (vm.seed_drive, Packer's cd_files) must be
    # there when cloud-init's generator looks, before udev loads the root's drivers:
    # without these the base image booted with cloud-init off and no SSH.
    assert {"ata_piix", "sr_mod"} <= modules


def test_the_initramfs_is_built_once_for_every_kernel_after_everything_else(
    tmp_path: Path,
    chroot_log: tuple[Path, Path],
    deferred_root: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    commands: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(base_image.processes, "run", run)
    for arch in ("x86_64", "arm64"):
        inputs = {"suite": "bookworm", "sources": ["deb http://m.invalid/d bookworm main"]}
        inputs |= {"packages": list(base_packages(arch)), "arch": arch}
        work = tmp_path / arch
        work.mkdir()
        base_image._bootstrap(inputs, work)
        command = commands.pop()
        essential = [a.split("=", 1)[1] for a in command if a.startswith("--essential-hook=")]
        customize = [a.split("=", 1)[1] for a in command if a.startswith("--customize-hook=")]
        assert essential == initramfs_defer_hooks(work / "base-files")
        assert customize[-len(initramfs_build_hooks()) :] == initramfs_build_hooks()
        builds = [hook for hook in customize if "update-initramfs -" in hook]
        assert builds == ['chroot "$1" update-initramfs -c -k all']

    bin_dir, _ = chroot_log
    root, log = deferred_root
    _run_hooks(initramfs_build_hooks(), root, bin_dir)
    assert not (root / UPDATE_INITRAMFS.lstrip("/")).exists()  # dpkg-divert puts it back
    assert log.read_text().splitlines()[1:] == [
        f"dpkg-divert --quiet --local --rename --remove {UPDATE_INITRAMFS}",
        "update-initramfs -c -k all",
    ]


def test_editing_the_module_list_makes_a_new_base_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    files = tmp_path / "base"
    shutil.copytree(BASE_FILES, files)
    monkeypatch.setattr(base_image, "BASE_FILES", files)
    monkeypatch.setattr(base_image, "_sources", lambda suite: [f"deb http://m.invalid {suite}"])
    cfg = load_config("backend", "local", overrides=["arch=arm64"])
    before = base_image._hash(base_inputs(cfg))
    modules = files / "etc/initramfs-tools/modules"
    modules.write_text(modules.read_text() + "nvme\n")
    assert base_image._hash(base_inputs(cfg)) != before
