"""Baking in an LXC system container (issue #13): the same steps, at the host's speed.

A copy of the base image's disk is attached to a loop device and its root filesystem is
booted as a system container by the host's kernel: systemd, cloud-init with a NoCloud
seed and the image's own systemd-networkd start as they do in the VM bake, and the
role's provisioner steps run in it one by one, with the same command lines as the
Packer template (packer/build.pkr.hcl.j2). After `seal` the container is shut down and
the disk, bootloader untouched, becomes the role's qcow2. Nothing is emulated, so a
bake takes seconds where TCG takes minutes; the gate still boots the image in QEMU.

The container has a network namespace of its own on lxc-net's `lxcbr0` bridge (DHCP,
DNS and NAT from the host's dnsmasq), so the harden step's settings and the role's
services touch nothing of the host's. Only an image of the host's own architecture can
run this way: another architecture bakes in a VM (`local.bake_in: auto`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bakery import processes
from bakery.config import HOST_ARCH, BakeryConfig
from bakery.errors import BadInput, OperationFailed
from bakery.local.base_image import BaseImage, partition_table
from bakery.progress import Progress
from bakery.render import GUEST_STAGE, RenderedRole, provisioning_steps

BRIDGE = "lxcbr0"
# lxc-net's dnsmasq gives the containers on the bridge their addresses and DNS; the
# bridge outlives it (a host whose processes were all killed keeps lxcbr0 but no dnsmasq).
LXC_NET_DNSMASQ_PID = Path("/run/lxc/dnsmasq.pid")
RESTART_LXC_NET = (
    "restart lxc-net: ./scripts/run does, or /usr/libexec/lxc/lxc-net stop force; "
    "/usr/libexec/lxc/lxc-net start (systemctl restart lxc-net where systemd runs)"
)
LXC_TOOLS = ("lxc-start", "lxc-attach", "lxc-stop", "lxc-wait", "lxc-info")
# What sudo gives the provisioners in the VM bake (Debian's secure_path, root's home).
STEP_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
}
# systemd's own verdict that the boot is over (degraded: a unit a container cannot run,
# such as a kernel module loader, failed; the VM has those too, and they do not matter).
BOOTED_STATES = ("running", "degraded")
SHUTDOWN_TIMEOUT_S = 120
FIX = "or bake in a VM instead: --set local.bake_in=vm"


def bakes_in_container(cfg: BakeryConfig) -> bool:
    """Whether `cfg`'s image bakes in a container: `auto` means yes for the host's own
    architecture (a container runs on the host's kernel, so it cannot emulate another)."""
    if cfg.local.bake_in == "vm":
        return False
    if cfg.arch != HOST_ARCH:
        if cfg.local.bake_in == "container":
            raise BadInput(
                f"local.bake_in is container, but a container runs on this {HOST_ARCH} "
                f"host's kernel and cannot run an {cfg.arch} image: set local.bake_in to "
                f"auto or vm for arch {cfg.arch}"
            )
        return False
    return True


def missing_for_containers(
    sys_class_net: Path = Path("/sys/class/net"),
    dnsmasq_pid: Path = LXC_NET_DNSMASQ_PID,
    proc: Path = Path("/proc"),
) -> str | None:
    """What this host lacks to bake in a container, with the fix; None when nothing."""
    absent = [tool for tool in LXC_TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install lxc dnsmasq-base nftables"
    if not (sys_class_net / BRIDGE).exists():
        return (
            f"LXC's bridge {BRIDGE} is not up: systemctl start lxc-net (on a host without "
            "systemd: /usr/libexec/lxc/lxc-net start)"
        )
    if not _dnsmasq_runs(dnsmasq_pid, proc):
        # Else each container waits out networkd's 2 minutes and apt cannot resolve.
        return (
            f"LXC's bridge {BRIDGE} is up but lxc-net's dnsmasq (DHCP and DNS for the "
            f"containers, pid file {dnsmasq_pid}) is not running: {RESTART_LXC_NET}"
        )
    return None


def _dnsmasq_runs(pid_file: Path, proc: Path) -> bool:
    """Whether the pid in lxc-net's pid file is a live dnsmasq (not a zombie, not a
    process that got the pid since)."""
    try:
        pid = int(pid_file.read_text().strip())
        status = (proc / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return False
    fields = {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in status.splitlines())
    }
    state = fields.get("State", "")[:1]  # R, S, D...; Z: a zombie, X: dead
    return fields.get("Name") == "dnsmasq" and state not in ("", "Z", "X")


def check_host() -> None:
    problem = missing_for_containers()
    if problem:
        raise BadInput(f"local.bake_in: baking in a container needs LXC: {problem}; {FIX}")


def container_config(name: str, rootfs: Path) -> str:
    """The container's LXC config: Debian's common settings, the image's root filesystem
    and one veth on the bridge (the image's networkd asks dnsmasq for an address)."""
    return "\n".join(
        [
            "lxc.include = /usr/share/lxc/config/common.conf",
            f"lxc.uts.name = {name}",
            f"lxc.rootfs.path = dir:{rootfs}",
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {BRIDGE}",
            "lxc.net.0.flags = up",
            # Where the host has no AppArmor, LXC's generated profile cannot load.
            "lxc.apparmor.profile = unconfined",
            "",
        ]
    )


def step_command(step: str) -> list[str]:
    """One provisioner step, as the Packer template runs it (there with sudo)."""
    return ["python3", f"{GUEST_STAGE}/provisioners/provision.py", step,
            "--plan", f"{GUEST_STAGE}/bake.json"]  # fmt: skip


def write_seed(rootfs: Path, meta_data: str, user_data: str) -> None:
    """The NoCloud seed the VM bake gets on a CD, as cloud-init's seed folder; the seal
    step's `cloud-init clean --seed` removes it."""
    seed = rootfs / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "meta-data").write_text(meta_data)
    (seed / "user-data").write_text(user_data)
    (seed / "user-data").chmod(0o600)


class Container:
    """One bake container under `work` (its LXC path, disk copy and mount point)."""

    def __init__(self, role: str, work: Path, log: Path) -> None:
        self.role = role
        self.name = f"bake-{role}"
        self.work = work
        self.lxcpath = work / "lxc"
        self.disk = work / "disk.raw"
        self.rootfs = work / "rootfs"
        self.log = log

    def _lxc(self, tool: str, *args: str) -> list[str]:
        return [tool, "-P", str(self.lxcpath), "-n", self.name, *args]

    def attach(self, *argv: str) -> list[str]:
        variables = [f"--set-var={key}={value}" for key, value in STEP_ENVIRONMENT.items()]
        return self._lxc("lxc-attach", "--clear-env", *variables, "--", *argv)

    def mount(self, base: BaseImage, arch: str, size_gb: int) -> None:
        """The base disk copied to raw, its root partition mounted read-write."""
        processes.run(
            ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(base.path), str(self.disk)],
            check=True,
            capture_output=True,
        )
        _, start_mib, size_mib = partition_table(arch, size_gb)
        offset, size = str(start_mib << 20), str(size_mib << 20)
        loop = processes.run(
            ["losetup", "--show", "-f", "-o", offset, "--sizelimit", size, str(self.disk)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.rootfs.mkdir()
        processes.run(["mount", loop, str(self.rootfs)], check=True, capture_output=True)

    def start(self, timeout_s: float) -> None:
        """Boot it and wait until systemd says the boot is over."""
        config = self.lxcpath / self.name / "config"
        config.parent.mkdir(parents=True)
        config.write_text(container_config(self.name, self.rootfs))
        processes.run(
            self._lxc("lxc-start", "-d", "-o", str(self.log.with_suffix(".lxc.log")), "-l", "INFO"),
            check=True,
            capture_output=True,
            text=True,
        )
        processes.run(self._lxc("lxc-wait", "-s", "RUNNING", "-t", "30"), check=True)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            # Before systemd answers on its bus this fails at once; hence the loop.
            result = processes.run(
                self.attach("systemctl", "is-system-running", "--wait"),
                capture_output=True,
                text=True,
                check=False,
                timeout=max(1.0, deadline - time.monotonic()),
            )
            state = result.stdout.strip()
            if state in BOOTED_STATES:
                self._check_address()
                return
            time.sleep(0.5)
        raise OperationFailed(
            f"[{self.role}] the bake container did not finish booting in {timeout_s:.0f}s "
            f"(systemd: {state or 'no answer'}); see {self.log.with_suffix('.lxc.log')}"
        )

    def _check_address(self) -> None:
        """One clear error now, rather than each apt and pip download failing later."""
        result = processes.run(
            self._lxc("lxc-info", "-i", "-H"), capture_output=True, text=True, check=False
        )
        if not any("." in address for address in result.stdout.split()):
            raise OperationFailed(
                f"[{self.role}] the bake container booted without an IPv4 address: the DHCP "
                f"server on {BRIDGE} (lxc-net's dnsmasq) did not answer; {RESTART_LXC_NET}"
            )

    def run(self, argv: list[str], on_line: Callable[[str], None], what: str) -> None:
        """Run argv in the container, every output line to the log and `on_line`."""
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"==> {what}: {' '.join(argv)}\n")
            log.flush()
            process = processes.spawn(
                self.attach(*argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert process.stdout is not None
            tail: list[str] = []
            for line in process.stdout:
                log.write(line)
                on_line(line.rstrip("\n"))
                tail = [*tail[-11:], line.rstrip("\n")]
            code = process.wait()
        if code != 0:
            shown = "\n  ".join(tail)
            raise OperationFailed(
                f"[{self.role}] {what} failed with exit code {code} (log: {self.log}):\n  {shown}"
            )

    def copy_in(self, source: Path, destination: str) -> None:
        """`source`'s contents into `destination` in the container (as Packer's upload)."""
        self._pipe(
            ["tar", "-C", str(source), "-c", "."],
            self.attach("tar", "-C", destination, "-x", "--no-same-owner"),
        )

    def copy_out(self, source: str, destination: Path) -> None:
        """`source`'s contents in the container into `destination` (Packer's download)."""
        destination.mkdir(parents=True, exist_ok=True)
        self._pipe(self.attach("tar", "-C", source, "-c", "."),
                   ["tar", "-C", str(destination), "-x", "--no-same-owner"])  # fmt: skip

    def _pipe(self, writer: list[str], reader: list[str]) -> None:
        producer = processes.spawn(writer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        consumer = processes.run(
            reader, stdin=producer.stdout, capture_output=True, text=True, check=False
        )
        assert producer.stdout is not None
        producer.stdout.close()
        _, produced_err = producer.communicate()
        if producer.returncode or consumer.returncode:
            raise OperationFailed(
                f"[{self.role}] copying files for the bake failed: "
                f"{produced_err.decode(errors='replace').strip()} {consumer.stderr.strip()}"
            )

    def running(self) -> bool:
        result = processes.run(
            self._lxc("lxc-info", "-s"), capture_output=True, text=True, check=False
        )
        return "RUNNING" in result.stdout

    def shut_down(self) -> None:
        """A clean shutdown (systemd's poweroff, as `seal` expects), like the VM's."""
        processes.run(
            self._lxc("lxc-stop", "-t", str(SHUTDOWN_TIMEOUT_S)),
            capture_output=True,
            check=False,
        )
        if self.running():
            raise OperationFailed(
                f"[{self.role}] the bake container did not shut down in {SHUTDOWN_TIMEOUT_S}s"
            )

    def release(self) -> None:
        """Whatever happened: no container, mount or loop device of this bake is left."""
        if self.lxcpath.exists() and self.running():
            processes.run(self._lxc("lxc-stop", "-k"), capture_output=True, check=False)
        processes.release_mounts(self.work)  # the root filesystem, the disk's loop device


@contextmanager
def bake_container(role: str, work: Path, log: Path) -> Iterator[Container]:
    """A Container that is released on the way out, however the bake ends."""
    container = Container(role, work, log)
    container.release()  # a bake of this role killed before it could clean up
    try:
        yield container
    finally:
        container.release()


def bake_in_container(
    cfg: BakeryConfig,
    rendered: RenderedRole,
    base: BaseImage,
    work: Path,
    seed: tuple[str, str],
    log: Path,
    progress: Progress,
) -> Path:
    """Bake `rendered` into a qcow2 under `work`, returned; `seed` is the NoCloud
    (meta-data, user-data) the VM bake would get."""
    role = cfg.role
    check_host()
    log.write_text("")
    with bake_container(role, work, log) as container:
        with progress.step(role, "container: copy and mount the base disk"):
            container.mount(base, cfg.arch, cfg.local.disk_size_gb)
            write_seed(container.rootfs, *seed)
        with progress.step(role, "container: boot"):
            container.start(cfg.ssh.build_timeout_s)
        show = _step_lines(role, progress)
        container.run(["sh", "-c", f"rm -rf {GUEST_STAGE} && mkdir -p {GUEST_STAGE}"],
                      show, "stage")  # fmt: skip
        container.copy_in(rendered.stage, GUEST_STAGE)
        steps = provisioning_steps(cfg)
        split = steps.index("record-manifest") + 1
        for step in steps[:split]:
            with progress.step(role, f"provisioner step: {step}"):
                container.run(step_command(step), show, f"provisioner step {step}")
        container.copy_out(f"{GUEST_STAGE}/manifest", rendered.directory / "manifest")
        for step in steps[split:]:  # sealing removes the stage, the manifest with it
            with progress.step(role, f"provisioner step: {step}"):
                container.run(step_command(step), show, f"provisioner step {step}")
        with progress.step(role, "container: shut down and make the qcow2"):
            container.shut_down()
            container.release()
            built = work / "output" / f"{role}.qcow2"
            built.parent.mkdir()
            processes.run(
                [
                    "qemu-img",
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    str(container.disk),
                    str(built),
                ],
                check=True,
                capture_output=True,
            )
            container.disk.unlink()
    return built


def _step_lines(role: str, progress: Progress) -> Callable[[str], None]:
    """The steps' own lines are in the log; shown are only their failures."""

    def show(line: str) -> None:
        if "FAILED" in line:
            progress.say(role, line)

    return show
