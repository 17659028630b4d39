"""The Debian 12 base image every local role starts from, built without any download
of a cloud image and cached by a hash of its inputs.

mmdebstrap -> ext4 filesystem (`mke2fs -d`, no loop mounts) -> partitioned raw disk ->
one bootstrap boot that installs GRUB inside the guest -> qcow2. The result boots by
itself (no `-kernel`), takes user data from a NoCloud seed, and has no SSH host keys,
no machine-id and no user keys: those arrive at first boot, as on EC2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bakery import processes
from bakery.config import HOST_ARCH, LOCAL_MACHINES, REPO_ROOT, BakeryConfig
from bakery.durable import sync_folder, write_atomically
from bakery.errors import BadInput, MissingTool, OperationFailed
from bakery.local.mirror import host_debian_mirror
from bakery.local.vm import machine_arguments
from bakery.onimage import BASE, programs_for, stage_programs
from bakery.progress import Progress

BASE_FILES = REPO_ROOT / "rootfs" / "base"

# What every role needs before provisioning (boot, network, SSH, cloud-init, Python), and
# what Debian's own EC2 image has, so that a user finds locally what the AMI gives them
# (tests/fixtures/debian-cloud-images/bookworm-ec2-amd64.txt, checked by the unit tests).
BASE_PACKAGES = (
    # boot, network, SSH, cloud-init, the provisioners' Python
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "systemd-resolved",
    "cloud-init",
    "iproute2",
    "netbase",
    "gnupg",
    "procps",
    "less",
    "e2fsprogs",
    # the rest of the EC2 image's system set (SYSTEM_BOOT, CLOUD, EC2, TIME_SYSTEMD)
    "init",
    "libpam-systemd",
    "libnss-myhostname",
    "polkitd",
    "apparmor",
    "zstd",
    "apt-utils",
    "iptables",
    "iputils-ping",
    "nano",
    "vim-tiny",
    "whiptail",
    "systemd-timesyncd",
    "ssh-import-id",
    "cloud-initramfs-growroot",
    "cloud-guest-utils",
    "awscli",
    # the EC2 image's EXTRAS: the tools the manual guide and users type (curl first)
    "curl",
    "apt-listchanges",
    "bash-completion",
    "bind9-host",
    "man-db",
    "manpages",
    "socat",
    "pciutils",
    "reportbug",
    "traceroute",
    "vim",
    "psmisc",
    "tcpdump",
    "ethtool",
    "uuid-runtime",
    "screen",
    "xz-utils",
)
# The packages whose names differ by architecture: the kernel and the bootloader.
# x86_64 boots through BIOS (SeaBIOS: grub-pc, installed in the bootstrap boot); arm64's
# virt board boots only through UEFI firmware, so GRUB's arm64 EFI build on an ESP,
# which the bootstrap boot formats (dosfstools) and fills.
ARCH_PACKAGES: dict[str, tuple[str, ...]] = {
    "x86_64": ("linux-image-cloud-amd64", "grub-pc"),
    "arm64": ("linux-image-arm64", "grub-efi-arm64", "dosfstools"),
}
# Debian's name of each architecture (mmdebstrap --architectures, dpkg).
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
# How the base image's bootstrap boot shows its console, per architecture. It boots on
# the same program, board and CPU model as every other local guest of the arch
# (vm.machine_arguments: on arm64 not `max`, whose emulated pointer authentication
# makes the kernel about 5 times slower under TCG).
SERIAL_CONSOLE = {"x86_64": "ttyS0", "arm64": "ttyAMA0"}
# arm64: partition 1 is the EFI system partition, so the root partition is the last one
# (cloud-initramfs-growroot grows only that one) and GRUB sits at the removable-media path
# EFI/BOOT/BOOTAA64.EFI, which the firmware finds with no NVRAM entry.
ESP_SIZE_MIB = 64


def base_packages(arch: str) -> tuple[str, ...]:
    """Every package of the base image for `arch`: the shared set plus its own kernel and
    bootloader packages."""
    return BASE_PACKAGES + ARCH_PACKAGES[arch]


def root_partition(arch: str) -> int:
    """The root partition's number: after the ESP on arm64."""
    return 2 if arch == "arm64" else 1


# Packages of Debian's EC2 image the local base image leaves out, each with why.
EC2_PACKAGES_LEFT_OUT = {
    "amazon-ec2-utils": "EC2 only: udev rules and tools for EBS/NVMe device names",
    "grub-cloud-amd64": "EC2's BIOS+EFI GRUB setup; the local image installs grub-pc in its "
    "bootstrap boot (the only boot firmware QEMU gives it here)",
    "grub-cloud-arm64": "the arm64 EC2 image's GRUB setup; the local arm64 image installs "
    "grub-efi-arm64 to the removable-media path in its bootstrap boot",
    "netplan.io": "cloud-init renders EC2's network through it; the local image's network "
    "is rootfs/base's systemd-networkd DHCP file",
    "unattended-upgrades": "its timer's apt runs would race the bake's own apt steps; a "
    "golden image is updated by baking it again",
}
# init of the bootstrap boot, at its path from the table of on-image programs.
(BOOTLOADER_INSTALLER,) = (
    p.path for p in programs_for(BASE) if p.name == "bakery-install-bootloader"
)
# dpkg leaves out documentation, manual pages and translations, in the base and in every
# package a role installs later (mmdebstrap keeps these in /etc/dpkg/dpkg.cfg.d/): under
# emulation each unpacked file costs time, and nothing on the images reads them. The
# copyright files stay (Debian's licences ask for them).
DPKG_PATH_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
ROOT_PARTITION_OFFSET_MIB = 1
BOOTSTRAP_TIMEOUT_S = 600


@dataclass(frozen=True)
class BaseImage:
    """A cached base image and the hash it is keyed by."""

    path: Path
    sha256: str
    inputs_hash: str

    @property
    def kernel(self) -> Path:
        """The image's kernel, kept beside it for the KVM probe boot."""
        return self.path.with_name("vmlinuz")

    @property
    def initrd(self) -> Path:
        return self.path.with_name("initrd.img")

    @property
    def checksum(self) -> str:
        return f"sha256:{self.sha256}"


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise MissingTool(tool, f"install it with `apt-get install {package}`")
    return found


def base_inputs(cfg: BakeryConfig) -> dict[str, object]:
    """Everything that decides the base image's content."""
    suite = cfg.local.debian_suite
    arch = cfg.arch
    files = {
        str(path.relative_to(BASE_FILES)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(BASE_FILES.rglob("*"))
        if path.is_file()
    }
    for program in programs_for(BASE):
        files[program.path.lstrip("/")] = hashlib.sha256(program.source.read_bytes()).hexdigest()
    inputs: dict[str, object] = {
        "suite": suite,
        "sources": _sources(suite),
        "packages": list(base_packages(arch)),
        "disk_size_gb": cfg.local.disk_size_gb,
        "files": files,
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    # x86_64's inputs name no arch, as before arm64 existed; arm64's key differs anyway
    # (its packages), and naming it makes the cached base.json say which it is.
    if arch != "x86_64":
        inputs["arch"] = arch
    return inputs


def _arch(inputs: dict[str, object]) -> str:
    return str(inputs.get("arch", "x86_64"))


def _sources(suite: str) -> list[str]:
    mirror = host_debian_mirror(suite)
    sources = [f"deb {mirror} {suite} main"]
    # A host without a security source still gets a working base image.
    with contextlib.suppress(BadInput):
        sources.append(f"deb {host_debian_mirror(suite + '-security')} {suite}-security main")
    return sources


def _hash(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# A stamp is written only for a file last changed longer ago than the file system's
# timestamp granularity: a change in the same tick as the hash would keep the same stat
# (git's "racily clean" problem).
RACY_WINDOW_NS = 2_000_000_000


def _stat_key(image: Path) -> list[int]:
    """What changes whenever the file is written through the filesystem: its ctime cannot
    be set back by any program (unlike its mtime), and a copy is a new inode."""
    st = image.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _intact_sha256(image: Path, record: Path) -> str | None:
    """The recorded sha256 when the image still has it; None for a corrupt, truncated or
    unrecorded cache entry (a disk error, a killed copy, a power loss).

    The whole-file hash (most of a second for a 1 GB image, most of a no-op `invoke
    build`) is taken again only when the file changed since it last matched, as `make`
    and git's index judge files: the stamp beside it holds the file's stat then."""
    try:
        recorded = json.loads(record.read_text())
        sha = str(recorded["sha256"])
    except (ValueError, KeyError, TypeError, OSError):
        return None
    stamp = image.with_name(image.name + ".hashed")
    try:
        if json.loads(stamp.read_text()) == {"sha256": sha, "stat": _stat_key(image)}:
            return sha
    except (ValueError, OSError):
        pass  # no stamp yet, or a damaged one: hash the file
    if _file_sha256(image) != sha:
        stamp.unlink(missing_ok=True)
        return None
    key = _stat_key(image)
    changed_at_ns = key[2]
    if time.time_ns() - changed_at_ns > RACY_WINDOW_NS:
        with contextlib.suppress(OSError):  # a read-only cache still works, only slower
            write_atomically(stamp, json.dumps({"sha256": sha, "stat": key}))
    return sha


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# The qemu-user handler mmdebstrap's chroot needs for each foreign architecture, and the
# packages that have it (the handler is registered by binfmt-support's update-binfmts).
FOREIGN_HANDLERS = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
FOREIGN_EXEC_PACKAGES = "qemu-user-static binfmt-support"


def _handler_enabled(handler: Path) -> bool:
    try:
        return handler.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def ensure_foreign_exec(debian_arch: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Make this host run `debian_arch` programs through qemu-user, as mmdebstrap's
    chroot of a foreign base image must: mount binfmt_misc when a fresh machine has not,
    enable the qemu handler when it is registered but off. One clear error otherwise."""
    handler_name = FOREIGN_HANDLERS[debian_arch]
    handler = binfmt_dir / handler_name
    if _handler_enabled(handler):
        return
    if not (binfmt_dir / "status").exists():
        mounted = processes.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            raise BadInput(
                f"{binfmt_dir} is not mounted and mounting it failed "
                f"({mounted.stderr.strip()}): a {debian_arch} base image runs its packages' "
                f"scripts through qemu-user; run as root `mount -t binfmt_misc binfmt_misc "
                f"{binfmt_dir}` (a container needs it from its host)"
            )
    if shutil.which("update-binfmts") is None:
        raise MissingTool(
            "update-binfmts", f"install it with `apt-get install {FOREIGN_EXEC_PACKAGES}`"
        )
    processes.run(["update-binfmts", "--enable", handler_name], capture_output=True, check=False)
    if not _handler_enabled(handler):
        raise BadInput(
            f"this host cannot run {debian_arch} programs: the binfmt handler {handler} is "
            f"not enabled after `update-binfmts --enable {handler_name}`; install "
            f"`apt-get install {FOREIGN_EXEC_PACKAGES}` and rerun"
        )


def _flush_to_disk(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def ensure_base_image(cfg: BakeryConfig, cache_dir: Path, progress: Progress) -> BaseImage:
    """Return the cached base image for these inputs, building it when missing."""
    inputs = base_inputs(cfg)
    key = _hash(inputs)
    folder = cache_dir / "base" / key
    image = folder / "base.qcow2"
    record = folder / "base.json"
    if image.is_file() and record.is_file() and (folder / "vmlinuz").is_file():
        recorded_sha = _intact_sha256(image, record)
        if recorded_sha:
            return BaseImage(image, recorded_sha, key)
        progress.say("base", f"the cached base image in {folder} fails its sha256: rebuilding it")
    arch = cfg.arch
    qemu, qemu_package = LOCAL_MACHINES[arch].program, LOCAL_MACHINES[arch].package
    for tool, package in [
        ("mmdebstrap", "mmdebstrap"),
        ("mke2fs", "e2fsprogs"),
        ("sfdisk", "fdisk"),
        ("qemu-img", "qemu-utils"),
        (qemu, qemu_package),
    ]:
        _require(tool, package)
    if arch != HOST_ARCH:
        # mmdebstrap refuses a foreign architecture without arch-test.
        _require("arch-test", "arch-test")
        ensure_foreign_exec(DEBIAN_ARCH[arch])
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = processes.claim(Path(tempfile.mkdtemp(prefix=f".base-{key}-", dir=folder.parent)))
    try:
        with progress.step("base", "debootstrap Debian (mmdebstrap)"):
            rootfs = _bootstrap(inputs, work)
        with progress.step("base", "make the disk (ext4 + partition table)"):
            disk = _make_disk(rootfs, work, cfg.local.disk_size_gb, arch)
        with progress.step("base", "install GRUB in a bootstrap boot"):
            _install_bootloader(rootfs, disk, work, arch)
        with progress.step("base", "convert to qcow2"):
            staged = work / "base.qcow2"
            processes.run(
                ["qemu-img", "convert", "-O", "qcow2", str(disk), str(staged)],
                check=True,
                capture_output=True,
            )
            sha = _file_sha256(staged)
        for name in ("vmlinuz", "initrd.img"):
            shutil.copyfile(rootfs / name, work / name)  # follows the symlinks
        shutil.rmtree(work / "rootfs", ignore_errors=True)
        disk.unlink()
        for name in ("base.qcow2", "vmlinuz", "initrd.img"):
            _flush_to_disk(work / name)
        # The record last: a folder with a record is a folder whose image was on disk.
        write_atomically(
            work / "base.json",
            json.dumps({"inputs": inputs, "sha256": sha, "built_at": time.time()}, indent=2),
        )
        (work / processes.OWNER_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
        sync_folder(folder.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BaseImage(image, sha, key)


def _stage_base_files(work: Path) -> Path:
    """The base image's own files: `rootfs/base/` and the `base` programs of `onimage/`."""
    tree = work / "base-files"
    shutil.copytree(BASE_FILES, tree)
    stage_programs(tree, BASE)
    return tree


def _bootstrap(inputs: dict[str, object], work: Path) -> Path:
    rootfs = work / "rootfs"
    base_files = _stage_base_files(work)
    arch = _arch(inputs)
    sources = [str(line) for line in inputs["sources"]]  # type: ignore[attr-defined]
    packages = ",".join(str(name) for name in inputs["packages"])  # type: ignore[attr-defined]
    hooks = [
        f'sync-in "{base_files}" /',
        # Identity arrives at first boot: no host keys, no machine-id in the base.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        ': > "$1"/etc/machine-id',
        'rm -f "$1"/var/lib/dbus/machine-id',
        'chroot "$1" systemctl enable systemd-networkd systemd-resolved ssh',
        'ln -sf /run/systemd/resolve/stub-resolv.conf "$1"/etc/resolv.conf',
        # e2scrub_reap looks for stale LVM snapshots of e2scrub at every boot; the
        # images have no LVM, and under emulation it took 32 s of the guest's CPU
        # in the middle of first boot (systemd-analyze blame of a verification boot).
        'chroot "$1" systemctl disable e2scrub_reap.service',
        # No man-db trigger: every role's package install would rebuild the manual
        # page index, and DPKG_PATH_EXCLUDES leaves no manual pages to index.
        'echo "man-db man-db/auto-update boolean false" | chroot "$1" debconf-set-selections',
        'rm -f "$1"/var/lib/man-db/auto-update',
        # The lists are kept (--skip below) and stamped: `prepare` skips `apt-get update`
        # under emulation while they are fresh (provisioners/bakery_provision/prepare.py).
        'date +%s > "$1"/var/lib/apt/lists/bakery-fetched-at',
        *_arch_hooks(arch),
        # Last: every package and file whose hooks go into the initramfs is in place.
        *initramfs_build_hooks(),
    ]
    command = [
        "mmdebstrap",
        "--variant=minbase",
        f"--architectures={DEBIAN_ARCH[arch]}",
        f"--include={packages}",
        *[f"--dpkgopt={option}" for option in DPKG_PATH_EXCLUDES],
        "--skip=cleanup/apt/lists",
        *[f"--essential-hook={hook}" for hook in initramfs_defer_hooks(base_files)],
        *[f"--customize-hook={hook}" for hook in hooks],
        str(inputs["suite"]),
        str(rootfs),
        *sources,
    ]
    log = work / "mmdebstrap.log"
    try:
        with log.open("w") as handle:
            result = processes.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    finally:
        shutil.rmtree(base_files, ignore_errors=True)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise OperationFailed(f"mmdebstrap failed (exit {result.returncode}):\n{tail}")
    return rootfs


# The initramfs is built once, at the end, with only the modules the local machines need
# to mount root (rootfs/base/etc/initramfs-tools/: MODULES=list and the list). Without
# this, Debian 12's initramfs-tools built it twice while the packages installed (the
# kernel's postinst hook runs `update-initramfs -c`, a trigger then `-u`), each with
# MODULES=most: about 13 minutes a run for arm64 under qemu-user. update-initramfs.conf's
# `update_initramfs=no` stops only `-u` (and is a conffile, which a file written before
# the package would turn into a dpkg prompt), and INITRD=No only the kernel's hook; so
# update-initramfs itself is diverted to a no-op while the packages install, the way
# live-build does it.
UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
UPDATE_INITRAMFS_DIVERTED = f"{UPDATE_INITRAMFS}.bakery-deferred"
INITRAMFS_CONFIG = "etc/initramfs-tools"


def initramfs_defer_hooks(base_files: Path) -> list[str]:
    """mmdebstrap essential hooks (dpkg is there, initramfs-tools is not yet): the
    module list and MODULES=list in place before any initramfs is built (the package
    keeps an existing /etc/initramfs-tools/modules, and conf.d/ is not a conffile), and
    update-initramfs diverted to a no-op until initramfs_build_hooks."""
    return [
        f'mkdir -p "$1"/{INITRAMFS_CONFIG}',
        f'sync-in "{base_files}/{INITRAMFS_CONFIG}" /{INITRAMFS_CONFIG}',
        f'chroot "$1" dpkg-divert --quiet --local --rename --divert {UPDATE_INITRAMFS_DIVERTED} '
        f"--add {UPDATE_INITRAMFS}",
        f"printf '#!/bin/sh\\n# bakery: deferred to the end of the bootstrap\\nexit 0\\n' "
        f'> "$1"{UPDATE_INITRAMFS}',
        f'chmod 755 "$1"{UPDATE_INITRAMFS}',
    ]


def initramfs_build_hooks() -> list[str]:
    """mmdebstrap customize hooks: update-initramfs back in its place, then the one
    initramfs build, for every installed kernel."""
    return [
        f'rm -f "$1"{UPDATE_INITRAMFS}',
        f'chroot "$1" dpkg-divert --quiet --local --rename --remove {UPDATE_INITRAMFS}',
        'chroot "$1" update-initramfs -c -k all',
    ]


def _arch_hooks(arch: str) -> list[str]:
    """The base image's architecture-specific files: on arm64 the ESP's mount point and
    fstab line, and GRUB's kernel console on the virt board's PL011 UART (ttyAMA0)."""
    if arch == "x86_64":
        return []
    console = SERIAL_CONSOLE[arch]
    return [
        'mkdir -p "$1"/boot/efi',
        # nofail: an image whose ESP is gone still boots to a shell that says why.
        'echo "LABEL=ESP  /boot/efi  vfat  umask=0077,nofail  0  1" >> "$1"/etc/fstab',
        "printf '%s\\n' 'GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty0 "
        f"console={console},115200 net.ifnames=1\"' "
        '> "$1"/etc/default/grub.d/91-bakery-console.cfg',
    ]


def partition_table(arch: str, size_gb: int) -> tuple[str, int, int]:
    """sfdisk's input for the disk, and the root partition's start and size in MiB.

    x86_64: MBR, one bootable Linux partition (GRUB in the MBR gap).
    arm64: GPT, an EFI system partition first (formatted in the bootstrap boot), the root
    partition last, so growroot can grow it into a larger disk."""
    end_reserve_mib = 1 if arch == "x86_64" else 2  # GPT keeps a backup table at the end
    if arch == "x86_64":
        start = ROOT_PARTITION_OFFSET_MIB
        size = size_gb * 1024 - start - end_reserve_mib
        return (
            f"label: dos\nstart={start * 2048}, size={size * 2048}, type=83, bootable\n",
            start,
            size,
        )
    esp_start = ROOT_PARTITION_OFFSET_MIB
    start = esp_start + ESP_SIZE_MIB
    size = size_gb * 1024 - start - end_reserve_mib
    table = (
        "label: gpt\n"
        f"start={esp_start * 2048}, size={ESP_SIZE_MIB * 2048}, type=U, name=ESP\n"
        f"start={start * 2048}, size={size * 2048}, type=L, name=root\n"
    )
    return table, start, size


def _make_disk(rootfs: Path, work: Path, size_gb: int, arch: str = "x86_64") -> Path:
    """A raw disk whose root partition is ext4 labelled `root`, made from the tree."""
    table, root_start_mib, part_mib = partition_table(arch, size_gb)
    part = work / "root.ext4"
    processes.run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(rootfs), str(part), f"{part_mib}M"],
        check=True,
        capture_output=True,
    )
    disk = work / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(size_gb * 1024 * 1024 * 1024)
    processes.run(
        ["sfdisk", "--quiet", str(disk)],
        input=table,
        text=True,
        check=True,
        capture_output=True,
    )
    processes.run(
        [
            "dd",
            f"if={part}",
            f"of={disk}",
            "bs=1M",
            f"seek={root_start_mib}",
            "conv=notrunc,sparse",
            "status=none",
        ],
        check=True,
    )
    part.unlink()
    return disk


def _install_bootloader(rootfs: Path, disk: Path, work: Path, arch: str = "x86_64") -> None:
    console_log = work / "bootstrap-console.log"
    root = f"/dev/vda{root_partition(arch)}"
    command = [
        LOCAL_MACHINES[arch].program,
        *machine_arguments(arch, "tcg"),
        "-m",
        "1024",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-serial",
        f"file:{console_log}",
        "-drive",
        f"file={disk},format=raw,if=virtio",
        "-kernel",
        str(rootfs / "vmlinuz"),
        "-initrd",
        str(rootfs / "initrd.img"),
        "-append",
        f"root={root} rw console={SERIAL_CONSOLE[arch]} init={BOOTLOADER_INSTALLER}",
    ]
    process = processes.spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = process.communicate(timeout=BOOTSTRAP_TIMEOUT_S)
    except BaseException:
        process.kill()
        process.wait()
        raise
    text = console_log.read_text(errors="replace") if console_log.exists() else ""
    if "bakery: bootloader installed" not in text:
        tail = "\n".join(text.splitlines()[-20:])
        raise OperationFailed(
            f"installing GRUB in the bootstrap boot failed (qemu exit {process.returncode}, "
            f"{stderr.decode(errors='replace').strip()}); console tail:\n{tail}"
        )
