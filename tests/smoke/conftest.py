"""The three-tier system, booted from the local images alone.

frontend ──link A── backend ──link B── database

Each link is a QEMU socket netdev over 127.0.0.1 between two QEMU processes: a private
wire no packet leaves this machine on. The backend, in the middle, has one NIC on
each link; every VM also keeps its restricted user-mode NIC for SSH from the host.
Addresses and the database password reach the VMs as launch-time user data only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from bakery.config import REPO_ROOT, BakeryConfig, load_config
from bakery.local.accelerator import choose_accelerator
from bakery.local.build import WORK_ROOT, image_path, local_record
from bakery.local.vm import BootedVM, booted, end_stale_boots, free_port

SMOKE_BOOT_GUESTS = 3  # frontend, backend and database boot together
SMOKE_WORK = WORK_ROOT / "smoke"
FRONTEND_A, BACKEND_A = "10.77.1.1", "10.77.1.2"
DATABASE_B, BACKEND_B = "10.77.2.1", "10.77.2.2"
LAUNCH_ENV_RESOURCE_ATTRIBUTES = "service.name=not-from-launch-env"


@dataclass
class ThreeTier:
    frontend: BootedVM
    backend: BootedVM
    database: BootedVM
    frontend_http_port: int
    service_name: str
    environment: str


def _image(role: str) -> Path:
    record = local_record(role)
    if record is None or not image_path(record).is_file():
        pytest.skip(f"no local {role} image: run `invoke build` first")
    return image_path(record)


def _link(mac: str, address: str) -> list[str]:
    """cloud-init bootcmd lines giving the NIC with `mac` a static address (systemd-networkd)."""
    unit = f"/etc/systemd/network/10-smoke-{mac.replace(':', '')}.network"
    body = f"[Match]\\nMACAddress={mac}\\n\\n[Network]\\nAddress={address}/24\\n"
    # A restart, not a reload: networkd leaves a link it already configured alone.
    return [f"printf '{body}' > {unit}", "systemctl restart systemd-networkd"]


def _wait_listening(port: int, timeout_s: float = 30) -> None:
    """Wait until a local TCP port is in LISTEN state, without connecting to it (a QEMU
    socket netdev takes the first connection as its peer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def accelerator_for(cfg: BakeryConfig) -> str:
    """KVM or TCG, as the build decided (the probe's answer is cached per host)."""
    record = local_record("backend")
    base = (record.details if record else {}).get("base_image", {}).get("inputs_hash", "")
    cache = REPO_ROOT / cfg.local.cache_dir
    accelerator, _ = choose_accelerator(
        cfg.local.accelerator,
        cache / "base" / base / "vmlinuz",
        cache / "base" / base / "initrd.img",
        cache / "accelerator.json",
    )
    return accelerator


@pytest.fixture(scope="session")
def three_tier() -> Iterator[ThreeTier]:
    end_stale_boots(SMOKE_WORK)
    images = {role: _image(role) for role in ("frontend", "backend", "database")}
    cfg = {role: load_config(role, "local") for role in images}
    accelerator = accelerator_for(cfg["backend"])
    password = secrets.token_urlsafe(18)
    service_name, environment = "smoke-backend", "smoke"
    port_a, port_b = free_port(), free_port()
    macs = {"frontend_a": "52:54:00:77:01:01", "backend_a": "52:54:00:77:01:02",
            "database_b": "52:54:00:77:02:01", "backend_b": "52:54:00:77:02:02"}  # fmt: skip

    def nic(netdev: str, mac: str, how: str) -> list[str]:
        return ["-netdev", f"socket,id={netdev},{how}",
                "-device", f"virtio-net-pci,netdev={netdev},mac={mac}"]  # fmt: skip

    def boot(stack: ExitStack, role: str, settings: dict[str, str], bootcmd: list[str],
             qemu: list[str], forward: tuple[int, ...] = ()) -> BootedVM:  # fmt: skip
        local = cfg[role].local
        return stack.enter_context(
            booted(
                images[role],
                f"smoke-{role}",
                settings,
                SMOKE_WORK,
                accelerator,
                local.cpus,
                local.memory_mb,
                # Three guests boot at once here, against the gate's one per core: under
                # TCG on 2 cores each takes longer than verify.boot_timeout_s allows one.
                SMOKE_BOOT_GUESTS * cfg[role].verify.boot_timeout_s,
                user=cfg[role].ssh_username,
                forward_ports=forward,
                extra_qemu_args=qemu,
                bootcmd=bootcmd,
            )
        )

    with ExitStack() as stack, ThreadPoolExecutor(max_workers=3) as pool:
        # All three boot at once. The two listening ends must be bound before the
        # backend's QEMU connects; QEMU binds at start, long before the guest boots.
        database = pool.submit(
            boot, stack, "database",
            {"DB_NAME": "appdb", "DB_USER": "app", "DB_PASSWORD": password},
            _link(macs["database_b"], DATABASE_B),
            nic("b", macs["database_b"], f"listen=127.0.0.1:{port_b}"),
        )  # fmt: skip
        frontend = pool.submit(
            boot, stack, "frontend", {"BACKEND_URL": f"http://{BACKEND_A}:8000"},
            _link(macs["frontend_a"], FRONTEND_A),
            nic("a", macs["frontend_a"], f"listen=127.0.0.1:{port_a}"), (80,),
        )  # fmt: skip
        _wait_listening(port_a)
        _wait_listening(port_b)
        backend = pool.submit(
            boot, stack, "backend",
            {"SERVICE_NAME": service_name, "DEPLOYMENT_ENVIRONMENT": environment,
             "DB_HOST": DATABASE_B, "DB_NAME": "appdb", "DB_USER": "app",
             "DB_PASSWORD": password, "OTEL_METRIC_EXPORT_INTERVAL": "5000",
             # Ignored by design: the unit builds it from the two settings above.
             "OTEL_RESOURCE_ATTRIBUTES": LAUNCH_ENV_RESOURCE_ATTRIBUTES},
            _link(macs["backend_a"], BACKEND_A) + _link(macs["backend_b"], BACKEND_B),
            nic("a", macs["backend_a"], f"connect=127.0.0.1:{port_a}")
            + nic("b", macs["backend_b"], f"connect=127.0.0.1:{port_b}"),
        )  # fmt: skip
        up = ThreeTier(frontend.result(), backend.result(), database.result(), 0,
                       service_name, environment)  # fmt: skip
        up.frontend_http_port = up.frontend.forwards[80]
        yield up
