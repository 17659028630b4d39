"""The guard that keeps unit tests hermetic: a unit test may read the repo and its temp
folders, never the host's units, installed packages or /etc, so that a fresh machine gives
the same result as a developer's. An audit hook (sys.addaudithook) sees every open(),
listdir/scandir and process start; `watching()` collects what a block did to the host."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

# Folders that hold what is installed or configured on this host.
HOST_STATE = (
    "/etc",
    "/lib/systemd",
    "/usr/lib/systemd",
    "/run/systemd",
    "/var/lib/dpkg",
    "/var/lib/rpm",
    "/var/lib/apt",
    "/var/lib/mysql",
    "/opt/aws",
    "/usr/local/libexec/bakery",
    "/usr/lib/os-release",
)
# What the Python runtime and the libraries we test through read on any machine, the same
# for every test (time zone, TLS roots, name service, MIME types): not host state we assert.
RUNTIME_READS = (
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki/tls",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/gnutls",
    "/etc/gcrypt",
)
# Programs whose only job is to report the host's units or packages.
HOST_PROGRAMS = frozenset(
    {"systemctl", "journalctl", "dpkg", "dpkg-query", "rpm", "apt", "apt-get", "apt-cache"}
)

_recorders: list[list[str]] = []


def _inside(path: str, folders: tuple[str, ...]) -> bool:
    parts = PurePosixPath(path).parts
    return any(parts[: len(PurePosixPath(f).parts)] == PurePosixPath(f).parts for f in folders)


def host_state_read(path: object) -> str | None:
    """The path if opening or listing it reads host state, else None."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        return None
    absolute = os.path.normpath(os.path.join(os.getcwd(), path))
    if _inside(absolute, HOST_STATE) and not _inside(absolute, RUNTIME_READS):
        return absolute
    return None


def host_program_run(args: object, env: object) -> str | None:
    """A description of the process if starting it reads host state, else None."""
    if isinstance(args, (str, bytes, os.PathLike)):
        argv = [os.fsdecode(args)]
    elif isinstance(args, (list, tuple)) and args:
        argv = [os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else "" for a in args]
    else:
        return None
    program = os.path.basename(argv[0])
    if program in HOST_PROGRAMS:
        return " ".join(argv)
    if program == "systemd-analyze":
        unit_path = env.get("SYSTEMD_UNIT_PATH") if isinstance(env, dict) else None
        if not unit_path or str(unit_path).endswith(":"):
            # no unit path of its own (or one with ':' that appends the host's): it reads
            # /lib/systemd and /etc/systemd of this host
            return " ".join(argv) + " (without a SYSTEMD_UNIT_PATH of its own)"
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _recorders:
        return
    found = None
    if event == "open" or event in ("os.listdir", "os.scandir"):
        found = host_state_read(args[0])
    elif event == "subprocess.Popen":
        found = host_program_run(args[1], args[3])
    elif event in ("os.exec", "os.posix_spawn"):
        found = host_program_run(args[1], args[2])
    if found is not None:
        _recorders[-1].append(f"{event}: {found}")


_installed = False


def install() -> None:
    """Install the audit hook once per process (hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


@contextmanager
def watching() -> Iterator[list[str]]:
    """Collect the host-state reads of the block; an inner block takes them from an outer."""
    install()
    reads: list[str] = []
    _recorders.append(reads)
    try:
        yield reads
    finally:
        _recorders.remove(reads)
