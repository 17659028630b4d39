"""`invoke host-check`: is this host ready to bake? Each problem comes with its fix."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bakery.config import ARM64_FIRMWARE_PACKAGE, HOST_ARCH, REPO_ROOT, BakeryConfig
from bakery.errors import BakeryError
from bakery.packer import detect_version
from bakery.processes import WORK_ROOT, Leftovers, find_leftovers

BUILD_LOCK = WORK_ROOT.parent / ".build.lock"  # bakery.local.build's lock
LEFTOVERS_FIX = "invoke clean --leftovers"

MIN_FREE_GB = 10


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""


def _tool(name: str, package: str, purpose: str) -> Finding:
    found = shutil.which(name)
    if found:
        return Finding(name, True, found)
    return Finding(name, False, f"missing ({purpose})", f"apt-get install {package}")


def check_packer() -> Finding:
    try:
        version = detect_version()
    except BakeryError as exc:
        return Finding("packer", False, str(exc), "apt-get install packer")
    kind = (
        ">= 1.7: plugins via `packer init`, AMI guarantees in the template"
        if version.has_plugin_system
        else "1.6: no plugin block; IMDSv2/deprecation applied with boto3 after the build"
    )
    return Finding("packer", True, f"{version} ({kind})")


def check_accelerator(cfg: BakeryConfig) -> Finding:
    from bakery.local.accelerator import kvm_works

    cache = REPO_ROOT / cfg.local.cache_dir
    kernels = sorted(cache.glob("base/*/vmlinuz"))
    if not Path("/dev/kvm").exists():
        return Finding("accelerator", True, "no /dev/kvm: QEMU's TCG will be used (slower)")
    if not kernels:
        return Finding("accelerator", True, "/dev/kvm present; probed at the first build")
    works = kvm_works(kernels[-1], kernels[-1].with_name("initrd.img"), cache / "accelerator.json")
    if works:
        return Finding("accelerator", True, "KVM passes a probe boot")
    return Finding("accelerator", True, "/dev/kvm fails a probe boot: TCG will be used (slower)")


def check_foreign_arch(cfg: BakeryConfig, binfmt_dir: Path | None = None) -> list[Finding]:
    """What an image of another architecture than the host's needs: its QEMU, its UEFI
    firmware (arm64), and qemu-user through binfmt_misc with arch-test for mmdebstrap's
    chroot. Nothing for the host's own architecture."""
    from bakery.local.base_image import (
        BINFMT_DIR,
        DEBIAN_ARCH,
        FOREIGN_EXEC_PACKAGES,
        FOREIGN_HANDLERS,
    )

    if cfg.arch == HOST_ARCH:
        return []
    machine = cfg.local_machine
    findings = [
        _tool(machine.program, machine.package, f"boots {cfg.arch} images"),
        _tool("arch-test", "arch-test", f"lets mmdebstrap build a {cfg.arch} base image"),
    ]
    if cfg.arch == "arm64":
        firmware = Path(cfg.local.arm64_firmware)
        findings.append(
            Finding("arm64 firmware", True, str(firmware))
            if firmware.is_file()
            else Finding(
                "arm64 firmware",
                False,
                f"{firmware} missing (local.arm64_firmware)",
                f"apt-get install {ARM64_FIRMWARE_PACKAGE}",
            )
        )
    handler = (binfmt_dir or BINFMT_DIR) / FOREIGN_HANDLERS[DEBIAN_ARCH[cfg.arch]]
    enabled = handler.is_file() and handler.read_text().startswith("enabled")
    findings.append(
        Finding("binfmt", True, f"{handler} enabled")
        if enabled
        else Finding(
            "binfmt",
            False,
            f"{handler} is not enabled: mmdebstrap cannot run {cfg.arch} package scripts "
            "(the base-image step mounts binfmt_misc and enables it when it can)",
            f"apt-get install {FOREIGN_EXEC_PACKAGES}; update-binfmts --enable {handler.name}",
        )
    )
    return findings


def check_disk(cfg: BakeryConfig) -> Finding:
    free_gb = shutil.disk_usage(REPO_ROOT).free / 1e9
    if free_gb >= MIN_FREE_GB:
        return Finding("disk", True, f"{free_gb:.0f} GB free")
    return Finding(
        "disk",
        False,
        f"{free_gb:.1f} GB free (< {MIN_FREE_GB})",
        "invoke clean --cache, or free space",
    )


def check_ca_bundle(cfg: BakeryConfig) -> Finding:
    bundle = cfg.local.extra_ca_bundle
    if not bundle:
        return Finding("extra CA bundle", True, "none configured")
    path = Path(bundle)
    count = len(list(path.glob("*.crt"))) if path.is_dir() else int(path.is_file())
    if path.exists():
        return Finding("extra CA bundle", True, f"{bundle}: {count} certificate file(s)")
    return Finding(
        "extra CA bundle", False, f"{bundle} does not exist", "set local.extra_ca_bundle"
    )


def check_aws(cfg: BakeryConfig) -> list[Finding]:
    import boto3

    session = boto3.session.Session()
    found = []
    credentials = session.get_credentials()
    if credentials is None:
        found.append(Finding("AWS credentials", False, "none found",
                             "set AWS_PROFILE, or run in CI with an OIDC role"))  # fmt: skip
    else:
        found.append(Finding("AWS credentials", True, f"from {credentials.method}"))
    found.append(Finding("AWS region", True, f"{cfg.aws.region} (aws.region)"))
    return found


def describe_leftovers(found: Leftovers) -> str:
    """The summary, then each process, folder and lock by name."""
    names = [f"pid {pid} {_program(command)}" for pid, command in found.processes]
    names += [_shown(path) for path in found.folders + found.locks]
    return found.summary() + (": " + "; ".join(names) if names else "")


def _program(command: str) -> str:
    """What a process runs, by name: its first two words without their folders (an
    interpreter and its script), whatever the length of the checkout's path."""
    words = command.split()
    return " ".join(Path(word).name for word in words[:2]) + (" ..." if len(words) > 2 else "")


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def check_leftovers() -> Finding:
    """Processes, work folders and locks of runs that died (SIGKILL, power loss)."""
    found = find_leftovers(locks=[BUILD_LOCK])
    if not found:
        return Finding("leftovers", True, "no process, work folder or lock of a dead run")
    return Finding("leftovers", False, describe_leftovers(found), LEFTOVERS_FIX)


def check_bake_container(cfg: BakeryConfig) -> Finding:
    from bakery.local.container import bakes_in_container, missing_for_containers

    try:
        in_container = bakes_in_container(cfg)
    except BakeryError as exc:
        return Finding("bake container", False, str(exc), "set local.bake_in to auto or vm")
    if not in_container:
        return Finding("bake container", True, f"bakes {cfg.arch} in a QEMU VM (local.bake_in)")
    problem = missing_for_containers()
    if problem:
        detail, _, fix = problem.partition(": ")
        return Finding("bake container", False, detail, f"{fix}; or set local.bake_in=vm")
    return Finding("bake container", True, "LXC and its lxcbr0 bridge are ready")


def examine(cfg: BakeryConfig) -> list[Finding]:
    """Every check for the target of `cfg`; no check changes anything."""
    findings = [check_packer()]
    if cfg.target == "local":
        findings += [
            _tool("qemu-system-x86_64", "qemu-system-x86", "boots the images"),
            _tool("qemu-img", "qemu-utils", "disk images"),
            _tool("mmdebstrap", "mmdebstrap", "builds the Debian base image"),
            _tool("mke2fs", "e2fsprogs", "makes the base filesystem"),
            _tool("sfdisk", "fdisk", "partitions the base disk"),
            _tool("xorriso", "xorriso", "cloud-init seed CDs"),
            _tool("ssh", "openssh-client", "reaches the VMs"),
            *check_foreign_arch(cfg),
            check_bake_container(cfg),
            check_accelerator(cfg),
            check_disk(cfg),
            check_ca_bundle(cfg),
            check_leftovers(),
        ]
    else:
        findings += check_aws(cfg)
    return findings
