"""`install-backend`: the FastAPI app under opentelemetry-instrument, from the host's
wheelhouse (no index, hashes required), run by `fastapi-otel.service` as a system user
that can read its code but not change it."""

from __future__ import annotations

import os
import re
import stat

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.files import copy_tree, ensure_dir, install_from_rootfs
from bakery_provision.packages import package_names
from bakery_provision.services import enable, reload_units

# The interpreter the venv is built from: AL2023's python3 is 3.9, too old for the distro.
PYTHON = {"debian12": "/usr/bin/python3", "al2023": "/usr/bin/python3.11"}
MIN_PYTHON = (3, 10)
NOLOGIN = "/usr/sbin/nologin"
APP_UNIT = "fastapi-otel.service"
DISTRO_PACKAGE = "aws-opentelemetry-distro"
ROOTFS_FILES = (
    "/etc/systemd/system/fastapi-otel.service",
    "/etc/systemd/system/bakery-backend-secrets.service",
    "/usr/local/libexec/bakery/resolve-db-password",
    "/usr/local/libexec/bakery/wait-for-agent",
    "/etc/tmpfiles.d/bakery-backend.conf",
    "/etc/logrotate.d/bakery-backend",
)
# Creates /var/log/bakery/fastapi-otel.log, readable by the agent (group adm).
LOG_FILES_CONFIG = "/etc/tmpfiles.d/bakery-backend.conf"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def canonical_name(name: str) -> str:
    """PEP 503 name: pip freeze and requirements spell names differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(text: str) -> dict[str, str]:
    """`name==version` pins of a requirements or `pip freeze` text, by canonical name."""
    pins = {}
    for line in text.replace("\\\n", " ").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def install_python(ctx: StepContext) -> str:
    installed = ctx.packages.install(package_names(ctx.plan.os, "python"))
    if installed:
        ctx.say("installed " + ", ".join(installed))
    python = PYTHON[ctx.plan.os]
    result = ctx.runner.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    try:
        version = tuple(int(part) for part in result.stdout.strip().split("."))
    except ValueError as exc:
        raise ProvisionError(f"cannot read the version of {python}: {result.stdout!r}") from exc
    if version < MIN_PYTHON:
        raise ProvisionError(
            f"{python} is {result.stdout.strip()}; {DISTRO_PACKAGE} needs Python >= 3.10"
        )
    ctx.say(f"{python} is Python {result.stdout.strip()}")
    return python


def ensure_app_user(ctx: StepContext) -> None:
    """A system user without a login shell or a home of its own."""
    user = ctx.plan.app.user
    entry = ctx.runner.run(["getent", "passwd", user], check=False)
    if not entry.ok:
        ctx.runner.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                NOLOGIN,
                "--comment",
                "bakery app service",
                user,
            ]
        )
        ctx.say(f"created system user {user}")
        return
    shell = entry.stdout.strip().split(":")[-1]
    if shell not in (NOLOGIN, "/sbin/nologin", "/bin/false", "/usr/bin/false"):
        ctx.runner.run(["usermod", "--shell", NOLOGIN, user])
        ctx.say(f"user {user} had login shell {shell}: set to {NOLOGIN}")
    else:
        ctx.say(f"user {user} exists")


def install_wheels(ctx: StepContext, python: str) -> None:
    """The venv and the pinned wheels; skipped when pip freeze already shows every pin."""
    app_dir = ctx.plan.app.dir
    venv_python = str(ctx.path(f"{app_dir}/venv/bin/python"))
    if not ctx.path(f"{app_dir}/venv/bin/python").exists():
        ensure_dir(ctx, app_dir)
        ctx.runner.run([python, "-m", "venv", str(ctx.path(f"{app_dir}/venv"))])
        ctx.say(f"created the venv {app_dir}/venv")
    wheelhouse = ctx.artifacts / "wheelhouse"
    requirements = wheelhouse / "requirements.txt"
    if not requirements.is_file():
        raise ProvisionError(f"{requirements} is missing: the host build must fill the wheelhouse")
    pins = pinned_versions(requirements.read_text(encoding="utf-8"))
    if ctx.plan.otel_distro_version != pins.get(DISTRO_PACKAGE):
        raise ProvisionError(
            f"the wheelhouse pins {DISTRO_PACKAGE} {pins.get(DISTRO_PACKAGE)}, the plan wants "
            f"{ctx.plan.otel_distro_version}: rebuild the wheelhouse from app/backend"
        )
    if _missing_pins(ctx, venv_python, pins):
        ctx.say(f"installing {len(pins)} pinned packages from the wheelhouse")
        ctx.runner.run(
            [
                venv_python,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                str(wheelhouse),
                "--require-hashes",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(requirements),
            ],
            # Only the wheelhouse counts: no pip.conf or PIP_* from the image.
            env={"PIP_CONFIG_FILE": "/dev/null"},
        )
        still_missing = _missing_pins(ctx, venv_python, pins)
        if still_missing:
            raise ProvisionError(f"pip did not install the pins of {', '.join(still_missing)}")
    else:
        ctx.say(f"all {len(pins)} pinned packages are installed")


def _missing_pins(ctx: StepContext, venv_python: str, pins: dict[str, str]) -> list[str]:
    freeze = ctx.runner.run(
        [venv_python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"]
    )
    installed = pinned_versions(freeze.stdout)
    return sorted(name for name, version in pins.items() if installed.get(name) != version)


def install_app_code(ctx: StepContext, venv_python: str) -> None:
    app_dir = ctx.plan.app.dir
    changed = copy_tree(ctx, ctx.artifacts / "app", app_dir)
    if changed:
        # Bytecode now, as root: the service cannot write next to its code.
        compile_code = [venv_python, "-m", "compileall", "-q", "-x", "/venv/"]
        ctx.runner.run([*compile_code, str(ctx.path(app_dir))])
    else:
        ctx.say(f"app code in {app_dir} is up to date")
    check_not_writable(ctx, app_dir)


def check_not_writable(ctx: StepContext, absolute: str) -> None:
    """Refuse an app folder that anyone but root could change."""
    top = ctx.path(absolute)
    for path in [top, *top.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & 0o022:
            raise ProvisionError(f"{path} is group- or world-writable ({info.st_mode & 0o777:o})")
        if os.geteuid() == 0 and info.st_uid != 0:
            raise ProvisionError(f"{path} is not owned by root (uid {info.st_uid})")


def run(ctx: StepContext) -> None:
    python = install_python(ctx)
    ensure_app_user(ctx)
    install_wheels(ctx, python)
    install_app_code(ctx, str(ctx.path(f"{ctx.plan.app.dir}/venv/bin/python")))
    install_from_rootfs(ctx, ROOTFS_FILES)
    ctx.runner.run(["systemd-tmpfiles", "--create", str(ctx.path(LOG_FILES_CONFIG))])
    reload_units(ctx)
    enable(ctx, [APP_UNIT])
