"""Boot a built image like an EC2 instance would be launched, and always stop it.

A throwaway qcow2 overlay keeps the image untouched; launch-time settings and the test
key arrive as cloud-init NoCloud user data (a `cidata` CD), the way EC2 user data
would. The guest's network is QEMU user-mode with `restrict=on`: it reaches nothing
outside (in particular no metadata address) and the host reaches it only through
forwarded loopback ports. Everything of a boot lives in one work folder, removed when
the VM is stopped; a boot left by a killed run is found by its pidfile and ended.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bakery import processes
from bakery.config import LOCAL_MACHINES
from bakery.errors import MissingTool, OperationFailed
from bakery.verify.launch import user_data
from bakery.verify.suites import SshTarget


def machine_arguments(arch: str, accelerator: str) -> list[str]:
    """QEMU's board and CPU model for `arch` (bakery/config.py LOCAL_MACHINES): the `virt`
    board on its CPU model for arm64, the PC's defaults for x86_64. Every local boot of
    an arch uses these: the base image's bootstrap boot, the bakes, the gate's boots."""
    if arch == "arm64":
        machine = LOCAL_MACHINES[arch]
        return [
            "-machine", f"{machine.machine},accel={accelerator}",
            "-cpu", str(machine.cpu),
        ]  # fmt: skip
    return ["-machine", f"accel={accelerator}"]


def qemu_machine(arch: str, accelerator: str, firmware: str | None = None) -> list[str]:
    """The start of the QEMU command line that boots an image of `arch`: the program and
    machine_arguments; arm64 boots through UEFI firmware (`-bios`, Debian's
    qemu-efi-aarch64)."""
    program = LOCAL_MACHINES[arch].program
    if arch == "arm64":
        if firmware is None:
            raise ValueError("an arm64 guest needs its UEFI firmware (local.arm64_firmware)")
        return [program, *machine_arguments(arch, accelerator), "-bios", firmware]
    return [program, *machine_arguments(arch, accelerator)]


def seed_drive(arch: str, seed: Path) -> list[str]:
    """The NoCloud seed's drive: a CD on the PC's IDE bus; a read-only virtio disk on the
    virt board, which has no IDE (cloud-init finds the seed by its `cidata` label)."""
    if arch == "arm64":
        return ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"]
    return ["-drive", f"file={seed},media=cdrom,readonly=on"]


@dataclass
class BootedVM:
    """A running VM and how to reach it."""

    name: str
    workdir: Path
    ssh_port: int
    key: Path
    user: str
    process: subprocess.Popen[bytes]
    forwards: dict[int, int] = field(default_factory=dict)  # guest port -> host port
    boot_seconds: float = 0.0

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def ssh_target(self) -> SshTarget:
        return SshTarget("127.0.0.1", self.ssh_port, self.user, self.key, machine=self.name)

    @property
    def ssh_config(self) -> Path:
        return self.ssh_target.ssh_config

    @property
    def testinfra_host(self) -> str:
        return self.ssh_target.testinfra_host

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return processes.run(
            ["ssh", "-F", str(self.ssh_config), "-p", str(self.ssh_port),
             f"{self.user}@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _make_seed(
    workdir: Path,
    name: str,
    public_key: str,
    settings: Mapping[str, str],
    bootcmd: Sequence[str] = (),
) -> Path:
    seed = workdir / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text(f"instance-id: {name}\nlocal-hostname: {name}\n")
    (seed / "user-data").write_text(user_data(public_key, settings, bootcmd))
    iso = workdir / "seed.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r",
         "-o", str(iso), str(seed)],
        check=True, capture_output=True,
    )  # fmt: skip
    return iso


def end_stale_boots(root: Path) -> str | None:
    """End VMs and remove folders that dead runs left (in `root`, and anywhere else in
    the work folder: see bakery.processes); one line saying what, or None. Boots of a
    run that is still alive are left alone."""
    swept = processes.sweep()
    return f"removed what an earlier run left: {swept.summary()}" if swept else None


def _wait_for_ssh(vm: BootedVM, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if vm.process.poll() is not None:
            raise OperationFailed(
                f"[{vm.name}] the VM exited (code {vm.process.returncode}) before SSH came up; "
                f"console: {vm.console_log}"
            )
        try:
            # Up means: SSH answers and cloud-init has applied the user data.
            result = vm.ssh("cloud-init status --wait >/dev/null; echo ready", timeout=30)
            if result.returncode == 0 and "ready" in result.stdout:
                return
            last = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
        time.sleep(2)
    raise OperationFailed(
        f"[{vm.name}] SSH did not come up within {timeout_s:.0f}s ({last}); "
        f"console: {vm.console_log}"
    )


@contextmanager
def booted(
    image: Path,
    name: str,
    settings: Mapping[str, str],
    work_root: Path,
    accelerator: str,
    cpus: int,
    memory_mb: int,
    boot_timeout_s: float,
    *,
    user: str,
    forward_ports: Sequence[int] = (),
    extra_qemu_args: Sequence[str] = (),
    bootcmd: Sequence[str] = (),
    arch: str = "x86_64",
    firmware: str | None = None,
) -> Iterator[BootedVM]:
    """Boot `image` with `settings` as launch-time user data; always stop it afterwards."""
    machine = qemu_machine(arch, accelerator, firmware)
    for tool in (machine[0], "qemu-img", "xorriso", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise MissingTool(tool, "run `./scripts/run invoke host-check` for what to install")
    workdir = work_root / f"{name}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    processes.claim(workdir)
    process: subprocess.Popen[bytes] | None = None
    try:
        key = workdir / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery-verify", "-f", str(key)],
            check=True, capture_output=True,
        )  # fmt: skip
        overlay = workdir / "disk.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(image.resolve()), str(overlay)],
            check=True, capture_output=True,
        )  # fmt: skip
        public_key = (workdir / "id_ed25519.pub").read_text().strip()
        seed = _make_seed(workdir, workdir.name, public_key, settings, bootcmd)
        ssh_port = free_port()
        forwards = {port: free_port() for port in forward_ports}
        hostfwd = [f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22"] + [
            f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in forwards.items()
        ]
        command = [
            *machine, "-smp", str(cpus),
            "-m", str(memory_mb), "-nodefaults", "-display", "none",
            "-serial", f"file:{workdir / 'console.log'}", "-pidfile", str(workdir / "qemu.pid"),
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            *seed_drive(arch, seed),
            "-nic", "user,model=virtio-net-pci,restrict=on," + ",".join(hostfwd),
            *extra_qemu_args,
        ]  # fmt: skip
        started = time.monotonic()
        process = processes.spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        vm = BootedVM(name, workdir, ssh_port, key, user, process, forwards)
        vm.ssh_target.write_ssh_config()
        _wait_for_ssh(vm, boot_timeout_s)
        vm.boot_seconds = round(time.monotonic() - started, 1)
        yield vm
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the VM and make sure its process is gone; the overlay is thrown away anyway,
    so there is nothing a clean guest shutdown would save."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
