"""`harden`, on every role and target: sshd, kernel parameters, unused kernel modules,
login.defs, core dumps and the legal banner, from the plan's `hardening` settings.

Each setting lands with its reason as a comment above it (docs/hardening.md). Nothing
is applied to the running bake: sshd, sysctl and modprobe read these files at the next
boot (sshd also at each new connection), and the gate measures that boot with lynis.
"""

from __future__ import annotations

import re
from typing import Any

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.files import write_text

HEADER = "# Written by bakery's harden step from config `hardening` (docs/hardening.md).\n"
# sshd keeps the first value it reads for a keyword, and both distributions' sshd_config
# include the drop-ins at the top: the lowest name wins over cloud-init's 50-cloud-init.conf.
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-bakery-hardening.conf"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SYSCTL_FILE = "/etc/sysctl.d/90-bakery-hardening.conf"
MODPROBE_FILE = "/etc/modprobe.d/bakery-hardening.conf"
LOGIN_DEFS = "/etc/login.defs"
PROFILE = "/etc/profile"
LIMITS_FILE = "/etc/security/limits.d/bakery-hardening.conf"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/bakery-hardening.conf"
# Login shells read it; lynis (KRNL-5820) looks for `ulimit -c 0` in /etc/profile.d.
PROFILE_CORE_FILE = "/etc/profile.d/bakery-hardening.sh"
BANNER_FILES = ("/etc/issue", "/etc/issue.net")
BLOCK_BEGIN = "# BEGIN bakery hardening (docs/hardening.md)"
BLOCK_END = "# END bakery hardening"
# What `record-manifest` hashes, so `invoke diff` shows a changed hardening setting.
OWNED_FILES = (
    SSHD_DROP_IN, SYSCTL_FILE, MODPROBE_FILE, LOGIN_DEFS, PROFILE, LIMITS_FILE,
    COREDUMP_FILE, PROFILE_CORE_FILE, *BANNER_FILES,
)  # fmt: skip
SECTIONS = (
    "sshd", "sysctl", "disabled_modules", "login_defs", "packages", "shell_timeout", "banner"
)  # fmt: skip


def _settings(ctx: StepContext) -> dict[str, Any]:
    hardening = ctx.plan.hardening
    missing = [name for name in SECTIONS if name not in hardening]
    if missing:
        raise ProvisionError(
            f"the bake plan's hardening lacks {', '.join(missing)}: re-render it with the "
            "host's bakery"
        )
    return hardening


def _lines(settings: dict[str, dict[str, Any]], separator: str) -> str:
    return "".join(
        f"# {item['why']}\n{key}{separator}{item['value']}\n" for key, item in settings.items()
    )


def harden_sshd(ctx: StepContext, settings: dict[str, dict[str, Any]]) -> bool:
    main = ctx.path(SSHD_CONFIG)
    if not main.is_file():
        raise ProvisionError(f"{SSHD_CONFIG} is missing: openssh-server must be installed")
    include = re.search(r"^\s*Include\s+/etc/ssh/sshd_config\.d/\*\.conf", main.read_text(), re.M)
    if not include:
        raise ProvisionError(
            f"{SSHD_CONFIG} does not include /etc/ssh/sshd_config.d/*.conf, so the "
            "hardening drop-in would be ignored"
        )
    changed = write_text(ctx, SSHD_DROP_IN, HEADER + _lines(settings, " "), mode=0o600)
    if ctx.runner.exists("sshd"):
        # A drop-in sshd refuses would lock every operator out of every instance.
        ctx.runner.run(["sshd", "-t"])
    return changed


def harden_kernel(
    ctx: StepContext, sysctl: dict[str, dict[str, Any]], modules: dict[str, str]
) -> None:
    write_text(ctx, SYSCTL_FILE, HEADER + _lines(sysctl, " = "))
    # `install M /bin/true` (the form lynis and CIS recognise) stops loading on demand;
    # `blacklist M` stops loading by alias (a device appearing).
    text = "".join(
        f"# {why}\nblacklist {module}\ninstall {module} /bin/true\n"
        for module, why in modules.items()
    )
    write_text(ctx, MODPROBE_FILE, HEADER + text)


def _with_block(ctx: StepContext, absolute: str, keys: set[str], block: str) -> bool:
    """Drop the lines setting `keys` and any earlier block, then end with `block`."""
    path = ctx.path(absolute)
    if not path.is_file():
        raise ProvisionError(f"{absolute} is missing: the base image lacks the package of it")
    kept: list[str] = []
    in_block = False
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.replace("=", " ").split()
        if line == BLOCK_BEGIN:
            in_block = True
        elif line == BLOCK_END:
            in_block = False
        elif not in_block and not (words and words[0] in keys):
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    lines = [*kept, "", BLOCK_BEGIN, *block.splitlines(), BLOCK_END]
    return write_text(ctx, absolute, "\n".join(lines) + "\n")


def harden_login_defs(ctx: StepContext, settings: dict[str, dict[str, Any]]) -> bool:
    """Replace the managed keys' lines with one commented block at the end."""
    return _with_block(ctx, LOGIN_DEFS, set(settings), _lines(settings, " "))


def set_shell_timeout(ctx: StepContext, setting: dict[str, Any]) -> bool:
    """Idle interactive shells end after the timeout; readonly, so a user cannot unset it.
    In /etc/profile itself: that is where lynis (SHLL-6220) and CIS look for it."""
    block = f"# {setting['why']}\nTMOUT={setting['value']}\nreadonly TMOUT\nexport TMOUT\n"
    return _with_block(ctx, PROFILE, {"TMOUT"}, block)


def disable_core_dumps(ctx: StepContext) -> None:
    write_text(
        ctx,
        LIMITS_FILE,
        HEADER + "# No core files: they can hold secrets from a process's memory.\n"
        "* hard core 0\n* soft core 0\n",
    )
    write_text(
        ctx,
        COREDUMP_FILE,
        HEADER + "# systemd-coredump neither keeps nor processes core dumps.\n"
        "[Coredump]\nStorage=none\nProcessSizeMax=0\n",
    )
    write_text(
        ctx,
        PROFILE_CORE_FILE,
        HEADER + "# No core files from login shells either (the limits above cover PAM).\n"
        "ulimit -c 0\n",
    )


def write_banners(ctx: StepContext, banner: str) -> None:
    # getty expands backslash escapes in /etc/issue: a banner must not carry any.
    text = banner.replace("\\", "") + "\n"
    for absolute in BANNER_FILES:
        write_text(ctx, absolute, text)


def install_packages(ctx: StepContext, packages: dict[str, dict[str, str]]) -> list[str]:
    """The OS family's hardening packages; their own setup (pam-auth-update) enables them."""
    wanted = list(packages.get(ctx.plan.os, {}))
    installed = ctx.packages.install(wanted) if wanted else []
    ctx.say("installed " + ", ".join(installed) if installed else "hardening packages present")
    return installed


def run(ctx: StepContext) -> None:
    settings = _settings(ctx)
    install_packages(ctx, settings["packages"])
    harden_sshd(ctx, settings["sshd"])
    harden_kernel(ctx, settings["sysctl"], settings["disabled_modules"])
    harden_login_defs(ctx, settings["login_defs"])
    set_shell_timeout(ctx, settings["shell_timeout"])
    disable_core_dumps(ctx)
    write_banners(ctx, settings["banner"])
    ctx.say("hardening files in place; they take effect at the next boot")
