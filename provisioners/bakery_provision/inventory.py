"""What `invoke diff` compares besides packages: the paths bakery owns on the image
(sha256, mode, owner), the enabled units, the listening ports and the users, collected
by `record-manifest` into manifest/inventory.json on every target alike."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

from bakery_provision import agent, backend, database, frontend, harden, prepare
from bakery_provision.context import StepContext
from bakery_provision.files import SKIPPED_NAMES, SKIPPED_SUFFIXES

# Per role: the single files its install step puts on the image (besides every role's).
ROLE_FILES = {
    "backend": backend.ROOTFS_FILES,
    "frontend": (*frontend.ROOTFS_FILES, frontend.UPSTREAM_FILE),
    "database": database.ROOTFS_FILES,
}
# The venv is the pip freeze's business; bytecode embeds source mtimes.
SKIPPED_TREE_PARTS = ("venv", *SKIPPED_NAMES)
# Ports from here up are the kernel's ephemeral range: a connection's, not a service's.
EPHEMERAL_PORTS_FROM = 32768


def owned_files(ctx: StepContext) -> list[str]:
    """Absolute paths of the single files bakery installs for this plan's role."""
    common = (
        *prepare.ROOTFS_FILES, *agent.ROOTFS_FILES, agent.AGENT_ENV_FILE, *harden.OWNED_FILES
    )  # fmt: skip
    paths = [*common, ctx.plan.agent.config_path, *ROLE_FILES[ctx.plan.role]]
    if ctx.plan.role == "database":
        paths.append(database.SERVER_CONFIG_TARGET[ctx.plan.os])
    return sorted(set(paths))


def owned_trees(ctx: StepContext) -> list[str]:
    """Folders bakery fills wholesale: the frontend's page, the backend's code."""
    return {"frontend": [frontend.WEB_ROOT], "backend": [ctx.plan.app.dir]}.get(ctx.plan.role, [])


def _names(path: Path) -> dict[int, str]:
    """id → name from an /etc/passwd or /etc/group file on the image."""
    names = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                names.setdefault(int(fields[2]), fields[0])
    return names


def describe_file(path: Path, users: dict[int, str], groups: dict[int, str]) -> dict[str, Any]:
    """sha256, mode, owner and group of one file (a symlink: its target instead)."""
    info = path.lstat()
    entry: dict[str, Any] = {
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "owner": users.get(info.st_uid, str(info.st_uid)),
        "group": groups.get(info.st_gid, str(info.st_gid)),
    }
    if stat.S_ISLNK(info.st_mode):
        entry["link"] = str(path.readlink())
    else:
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entry


def file_manifest(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """Every owned path → its description; a path the plan names but the image lacks
    is recorded as missing (a diff then shows it as removed)."""
    users, groups = _names(ctx.path("/etc/passwd")), _names(ctx.path("/etc/group"))
    found: dict[str, dict[str, Any]] = {}
    for absolute in owned_files(ctx):
        path = ctx.path(absolute)
        if path.is_file() or path.is_symlink():
            found[absolute] = describe_file(path, users, groups)
        else:
            found[absolute] = {"missing": True}
    for tree in owned_trees(ctx):
        top = ctx.path(tree)
        for path in sorted(top.rglob("*")) if top.is_dir() else []:
            relative = path.relative_to(top)
            if any(part in SKIPPED_TREE_PARTS for part in relative.parts):
                continue
            if path.suffix in SKIPPED_SUFFIXES or (path.is_dir() and not path.is_symlink()):
                continue
            found[f"{tree.rstrip('/')}/{relative.as_posix()}"] = describe_file(path, users, groups)
    return found


def enabled_units(ctx: StepContext) -> list[str]:
    result = ctx.runner.run(
        ["systemctl", "list-unit-files", "--state=enabled", "--no-legend", "--no-pager"],
        check=False,
    )
    return sorted({line.split()[0] for line in result.stdout.splitlines() if line.strip()})


# /proc/net tables and the state that means "listening" in each (TCP_LISTEN; UDP's
# unconnected socket, TCP_CLOSE).
SOCKET_TABLES = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}


def listening_ports(ctx: StepContext) -> list[str]:
    """`tcp/22`-style entries for what listens at the end of the bake, read from
    /proc/net (no iproute2 needed). Not the app's port: the bake never starts it."""
    ports = set()
    for table, listening in SOCKET_TABLES.items():
        path = ctx.path(f"/proc/net/{table}")
        lines = path.read_text(encoding="ascii").splitlines()[1:] if path.is_file() else []
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != listening:
                continue
            port = int(fields[1].rpartition(":")[2], 16)
            if port < EPHEMERAL_PORTS_FROM:
                ports.add((table.rstrip("6"), port))
    return [f"{protocol}/{port}" for protocol, port in sorted(ports)]


def user_accounts(ctx: StepContext) -> list[dict[str, Any]]:
    """Accounts in the image's /etc/passwd: name, uid, home and shell."""
    accounts = []
    passwd = ctx.path("/etc/passwd")
    lines = passwd.read_text(encoding="utf-8").splitlines() if passwd.is_file() else []
    for line in lines:
        fields = line.split(":")
        if len(fields) == 7 and fields[2].isdigit():
            name, uid, home, shell = fields[0], int(fields[2]), fields[5], fields[6]
            accounts.append({"name": name, "uid": uid, "home": home, "shell": shell})
    return sorted(accounts, key=lambda account: str(account["name"]))


def collect(ctx: StepContext) -> dict[str, Any]:
    """The inventory.json document."""
    return {
        "files": file_manifest(ctx),
        "enabled_units": enabled_units(ctx),
        "listening": listening_ports(ctx),
        "users": user_accounts(ctx),
    }
