"""`seal`, the last step: nothing of the build machine, the build's identity or the bake
may stay in the image. Every instance launched from it must start as a new machine:
new SSH host keys, a new machine-id, cloud-init running again and taking user data,
the launch key pair as the only key, and the agent translating its config afresh.

Each part prints what it removed; `check_sealed` then refuses an image that still
holds any of it. The stage (/tmp/bakery), which this code runs from, goes last.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bakery_provision.agent import AGENT_HOME
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.prepare import BAKE_CA_ANCHORS

SSH_HOST_KEYS = "etc/ssh/ssh_host_*"
AUTHORIZED_KEYS = ("authorized_keys", "authorized_keys2")
HISTORY_FILES = (
    ".bash_history",
    ".python_history",
    ".lesshst",
    ".viminfo",
    ".wget-hsts",
    ".mysql_history",
    ".mariadb_history",
)
# The translation of a bake-time fetch-config would carry the build's region.
AGENT_TRANSLATIONS = (
    f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.toml",
    f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.yaml",
    f"{AGENT_HOME}/etc/env-config.json",
)
AGENT_TRANSLATED_CONFIGS = f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.d"
AGENT_LOGS = f"{AGENT_HOME}/logs"
# Variables that a bake might set for a proxy, pip or AWS access; none may ship.
BAKE_VARIABLE = re.compile(
    r"^\s*(?:export\s+)?"
    r"(REQUESTS_CA_BUNDLE|SSL_CERT_FILE|SSL_CERT_DIR|CURL_CA_BUNDLE|PIP_\w*|AWS_\w*)\s*="
)
SYSTEM_PROFILE_FILES = ("/etc/environment", "/etc/profile", "/etc/bash.bashrc", "/etc/bashrc")
USER_PROFILE_FILES = (".bashrc", ".profile", ".bash_profile", ".pam_environment")
ROTATED_LOG = re.compile(r"(\.(gz|xz|bz2|zst|old)|\.\d+|-\d{8})$")
# Private /tmp folders of running services: systemd removes them itself.
KEPT_IN_TMP = re.compile(r"^systemd-private-")


def _relative(ctx: StepContext, path: Path) -> str:
    return "/" + path.relative_to(ctx.root).as_posix()


def _remove(ctx: StepContext, path: Path) -> str | None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return None
    return _relative(ctx, path)


def _user_homes(ctx: StepContext) -> list[Path]:
    homes = [ctx.path("/root")]
    home = ctx.path("/home")
    if home.is_dir():
        homes.extend(sorted(entry for entry in home.iterdir() if entry.is_dir()))
    return homes


def remove_bake_ca(ctx: StepContext) -> list[str]:
    anchor, refresh = BAKE_CA_ANCHORS[ctx.plan.os]
    removed = _remove(ctx, ctx.path(anchor))
    if removed is None:
        return []
    if ctx.plan.os == "debian12":
        refresh = [*refresh, "--fresh"]
    ctx.runner.run(refresh)
    return [removed]


def clean_packages(ctx: StepContext) -> list[str]:
    return ctx.packages.clean()


def remove_ssh_host_keys(ctx: StepContext) -> list[str]:
    found = sorted(ctx.root.glob(SSH_HOST_KEYS))
    return [removed for removed in (_remove(ctx, path) for path in found) if removed]


def reset_machine_id(ctx: StepContext) -> list[str]:
    """An empty /etc/machine-id: systemd makes a new one at boot (not a 'first boot')."""
    removed = []
    machine_id = ctx.path("/etc/machine-id")
    if not machine_id.is_file() or machine_id.stat().st_size:
        machine_id.parent.mkdir(parents=True, exist_ok=True)
        machine_id.write_bytes(b"")
        machine_id.chmod(0o444)
        removed.append("/etc/machine-id (emptied)")
    dbus_id = _remove(ctx, ctx.path("/var/lib/dbus/machine-id"))
    if dbus_id:
        removed.append(dbus_id)
    return removed


def clean_cloud_init(ctx: StepContext) -> list[str]:
    """So that each instance runs cloud-init as a new one and takes its user data."""
    if not ctx.runner.exists("cloud-init"):
        return []
    ctx.runner.run(["cloud-init", "clean", "--logs", "--seed"])
    return ["cloud-init state, logs and seed (cloud-init clean)"]


def remove_authorized_keys(ctx: StepContext) -> list[str]:
    """The build's key; the launch key pair arrives through cloud-init."""
    removed = []
    for home in _user_homes(ctx):
        for name in AUTHORIZED_KEYS:
            gone = _remove(ctx, home / ".ssh" / name)
            if gone:
                removed.append(gone)
    return removed


def remove_histories(ctx: StepContext) -> list[str]:
    removed = []
    for home in _user_homes(ctx):
        for name in HISTORY_FILES:
            gone = _remove(ctx, home / name)
            if gone:
                removed.append(gone)
    return removed


def clean_tmp(ctx: StepContext) -> list[str]:
    """Everything in /tmp and /var/tmp but the stage, which goes last."""
    removed = []
    for folder in ("/tmp", "/var/tmp"):
        directory = ctx.path(folder)
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry == ctx.stage or KEPT_IN_TMP.match(entry.name):
                continue
            gone = _remove(ctx, entry)
            if gone:
                removed.append(gone)
    return removed


def clean_logs(ctx: StepContext) -> list[str]:
    """Rotated logs go, current ones are emptied (their owners and modes stay)."""
    removed = []
    emptied = 0
    for folder in ("/var/log", AGENT_LOGS):
        top = ctx.path(folder)
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            if "journal" in path.relative_to(top).parts[:1] or path.is_symlink():
                continue
            if not path.is_file():
                continue
            if ROTATED_LOG.search(path.name):
                path.unlink()
                removed.append(_relative(ctx, path))
            elif path.stat().st_size:
                with path.open("r+b") as handle:
                    handle.truncate(0)
                emptied += 1
    if emptied:
        removed.append(f"the contents of {emptied} log file(s) under /var/log and {AGENT_LOGS}")
    if ctx.runner.exists("journalctl"):
        ctx.runner.run(["journalctl", "--rotate"], check=False)
        ctx.runner.run(["journalctl", "--vacuum-time=1s"])
        removed.append("archived journal files (journalctl --vacuum-time=1s)")
    return removed


def remove_bake_variables(ctx: StepContext) -> list[str]:
    """Lines setting proxy CA, pip or AWS variables in environment and profile files."""
    candidates = [ctx.path(name) for name in SYSTEM_PROFILE_FILES]
    profile_d = ctx.path("/etc/profile.d")
    if profile_d.is_dir():
        candidates.extend(sorted(profile_d.glob("*.sh")))
    for home in _user_homes(ctx):
        candidates.extend(home / name for name in USER_PROFILE_FILES)
    removed = []
    for path in candidates:
        if not path.is_file() or path.is_symlink():
            continue
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(True)
        kept = [line for line in lines if not BAKE_VARIABLE.match(line)]
        if len(kept) != len(lines):
            path.write_text("".join(kept), encoding="utf-8", errors="surrogateescape")
            for line in lines:
                match = BAKE_VARIABLE.match(line)
                if match:
                    removed.append(f"{match.group(1)} from {_relative(ctx, path)}")
    return removed


def remove_agent_translation(ctx: StepContext) -> list[str]:
    removed = [gone for gone in (_remove(ctx, ctx.path(p)) for p in AGENT_TRANSLATIONS) if gone]
    configs = ctx.path(AGENT_TRANSLATED_CONFIGS)
    if configs.is_dir():
        for entry in sorted(configs.iterdir()):
            gone = _remove(ctx, entry)
            if gone:
                removed.append(gone)
    return removed


def check_sealed(ctx: StepContext) -> None:
    """Refuse to finish while anything that must not ship is still there."""
    left = []
    left.extend(_relative(ctx, path) for path in ctx.root.glob(SSH_HOST_KEYS))
    machine_id = ctx.path("/etc/machine-id")
    if machine_id.is_file() and machine_id.stat().st_size:
        left.append("/etc/machine-id (not empty)")
    for home in _user_homes(ctx):
        keys = (home / ".ssh" / name for name in AUTHORIZED_KEYS)
        left.extend(_relative(ctx, key) for key in keys if key.exists())
    anchor, _ = BAKE_CA_ANCHORS[ctx.plan.os]
    if ctx.path(anchor).exists():
        left.append(anchor)
    left.extend(p for p in AGENT_TRANSLATIONS if ctx.path(p).exists())
    configs = ctx.path(AGENT_TRANSLATED_CONFIGS)
    if configs.is_dir():
        left.extend(_relative(ctx, entry) for entry in configs.iterdir())
    if left:
        raise ProvisionError("the image is not sealed; still present: " + ", ".join(left))


PARTS = (
    ("bake CA", remove_bake_ca),
    ("package caches", clean_packages),
    ("SSH host keys", remove_ssh_host_keys),
    ("machine id", reset_machine_id),
    ("cloud-init", clean_cloud_init),
    ("authorized keys", remove_authorized_keys),
    ("shell histories", remove_histories),
    ("temporary files", clean_tmp),
    ("bake variables", remove_bake_variables),
    ("agent translation", remove_agent_translation),
    # Last but the stage: the parts above may log.
    ("logs", clean_logs),
)


def run(ctx: StepContext) -> None:
    for title, part in PARTS:
        removed = part(ctx)
        listed = "removed " + ", ".join(removed) if removed else "nothing to remove"
        ctx.say(f"{title}: {listed}")
    check_sealed(ctx)
    stage = _remove(ctx, ctx.stage)
    ctx.say(f"removed the stage {stage}" if stage else "the stage is already gone")
    ctx.runner.run(["sync"])
    ctx.say("sealed")
