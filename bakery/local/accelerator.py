"""KVM or TCG: use KVM only when a probe boot proves it works on this host.

`/dev/kvm` can exist and still hang a guest (a nested `kvm_pvm` does), so its
presence proves nothing; a short boot of the base image's kernel to userspace does.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bakery import processes
from bakery.config import HOST_ARCH, BakeryConfig
from bakery.durable import write_atomically
from bakery.errors import BadInput

PROBE_TIMEOUT_S = 30
USERSPACE_MARK = "Run /init as init process"


def probe_kvm(kernel: Path, initrd: Path, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Boot the kernel under KVM; True when it reaches userspace within the timeout."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="bakery-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        processes.claim(Path(tmp))
        process = processes.spawn(
            [
                "qemu-system-x86_64", "-machine", "accel=kvm", "-m", "256", "-nodefaults",
                "-display", "none", "-no-reboot", "-nic", "none",
                "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1 rdinit=/bin/true",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if console.exists() and USERSPACE_MARK in console.read_text(errors="replace"):
                    return True
                if process.poll() is not None and process.returncode != 0:
                    return False
                time.sleep(0.5)
            return False
        finally:
            process.kill()
            process.wait()


def _host_key(kernel: Path) -> str:
    """What decides whether KVM works: this host's kernel, QEMU and the guest kernel."""
    qemu = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    return f"{os.uname().release}|{qemu}|{kernel.stat().st_size if kernel.exists() else 0}"


def kvm_works(kernel: Path, initrd: Path, cache_file: Path | None) -> bool:
    """The probe's answer, remembered per host so each run does not pay for it again."""
    key = _host_key(kernel)
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return bool(cached["kvm_works"])
    works = probe_kvm(kernel, initrd)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache_file, json.dumps({"key": key, "kvm_works": works}))
    return works


def choose_accelerator(
    setting: str, kernel: Path, initrd: Path, cache_file: Path | None = None
) -> tuple[str, str | None]:
    """(accelerator, warning): honour kvm/tcg, probe for auto."""
    if setting == "tcg":
        return "tcg", None
    works = kvm_works(kernel, initrd, cache_file)
    if setting == "kvm":
        if not works:
            raise BadInput(
                "local.accelerator is kvm, but a probe boot under KVM did not reach userspace "
                f"in {PROBE_TIMEOUT_S}s: set local.accelerator to auto or tcg"
            )
        return "kvm", None
    if works:
        return "kvm", None
    return "tcg", "KVM did not pass a probe boot here; using QEMU's TCG (slower)"


def foreign_accelerator(cfg: BakeryConfig) -> str | None:
    """ "tcg" for an image of another architecture than this host's, which KVM cannot run
    (an arm64 guest on an x86_64 host), without probing anything; None for the host's
    own architecture, whose accelerator the probe decides."""
    if cfg.arch == HOST_ARCH:
        return None
    if cfg.local.accelerator == "kvm":
        raise BadInput(
            f"local.accelerator is kvm, but this {HOST_ARCH} host's KVM cannot run an "
            f"{cfg.arch} guest: set local.accelerator to auto or tcg for arch {cfg.arch}"
        )
    return "tcg"
