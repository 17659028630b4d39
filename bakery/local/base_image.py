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
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.durable import sync_folder, write_atomically
from bakery.errors import BadInput, MissingTool, OperationFailed
from bakery.local.mirror import host_debian_mirror
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
    "linux-image-cloud-amd64",
    "grub-pc",
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
# Packages of Debian's EC2 image the local base image leaves out, each with why.
EC2_PACKAGES_LEFT_OUT = {
    "amazon-ec2-utils": "EC2 only: udev rules and tools for EBS/NVMe device names",
    "grub-cloud-amd64": "EC2's BIOS+EFI GRUB setup; the local image installs grub-pc in its "
    "bootstrap boot (the only boot firmware QEMU gives it here)",
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
    files = {
        str(path.relative_to(BASE_FILES)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(BASE_FILES.rglob("*"))
        if path.is_file()
    }
    for program in programs_for(BASE):
        files[program.path.lstrip("/")] = hashlib.sha256(program.source.read_bytes()).hexdigest()
    return {
        "suite": suite,
        "sources": _sources(suite),
        "packages": list(BASE_PACKAGES),
        "disk_size_gb": cfg.local.disk_size_gb,
        "files": files,
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }


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


def _intact_sha256(image: Path, record: Path) -> str | None:
    """The recorded sha256 when the image still has it; None for a corrupt, truncated or
    unrecorded cache entry (a disk error, a killed copy, a power loss)."""
    try:
        recorded = json.loads(record.read_text())
        sha = str(recorded["sha256"])
    except (ValueError, KeyError, TypeError, OSError):
        return None
    return sha if _file_sha256(image) == sha else None


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
    for tool, package in [
        ("mmdebstrap", "mmdebstrap"),
        ("mke2fs", "e2fsprogs"),
        ("sfdisk", "fdisk"),
        ("qemu-img", "qemu-utils"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ]:
        _require(tool, package)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = processes.claim(Path(tempfile.mkdtemp(prefix=f".base-{key}-", dir=folder.parent)))
    try:
        with progress.step("base", "debootstrap Debian (mmdebstrap)"):
            rootfs = _bootstrap(inputs, work)
        with progress.step("base", "make the disk (ext4 + partition table)"):
            disk = _make_disk(rootfs, work, cfg.local.disk_size_gb)
        with progress.step("base", "install GRUB in a bootstrap boot"):
            _install_bootloader(rootfs, disk, work)
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
    ]
    command = [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={packages}",
        *[f"--dpkgopt={option}" for option in DPKG_PATH_EXCLUDES],
        "--skip=cleanup/apt/lists",
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


def _make_disk(rootfs: Path, work: Path, size_gb: int) -> Path:
    """A raw disk: MBR, one bootable ext4 partition labelled `root` made from the tree."""
    part_mib = size_gb * 1024 - ROOT_PARTITION_OFFSET_MIB - 1
    part = work / "root.ext4"
    processes.run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(rootfs), str(part), f"{part_mib}M"],
        check=True,
        capture_output=True,
    )
    disk = work / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(size_gb * 1024 * 1024 * 1024)
    start = ROOT_PARTITION_OFFSET_MIB * 2048
    processes.run(
        ["sfdisk", "--quiet", str(disk)],
        input=f"label: dos\nstart={start}, size={part_mib * 2048}, type=83, bootable\n",
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
            f"seek={ROOT_PARTITION_OFFSET_MIB}",
            "conv=notrunc,sparse",
            "status=none",
        ],
        check=True,
    )
    part.unlink()
    return disk


def _install_bootloader(rootfs: Path, disk: Path, work: Path) -> None:
    console_log = work / "bootstrap-console.log"
    command = [
        "qemu-system-x86_64",
        "-machine",
        "accel=tcg",
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
        f"root=/dev/vda1 rw console=ttyS0 init={BOOTLOADER_INSTALLER}",
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
