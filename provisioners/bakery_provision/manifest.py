"""`record-manifest`: what went into the image, as files Packer downloads to the host:
packages.txt, pip-freeze.txt (backend), agent-version.txt, inventory.json (owned files,
units, ports, users) and a manifest.json summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bakery_provision import inventory
from bakery_provision.agent import VERSION_FILE
from bakery_provision.backend import DISTRO_PACKAGE, pinned_versions
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.files import write_bytes
from bakery_provision.packages import PACKAGE_NAMES

AGENT_PACKAGE = "amazon-cloudwatch-agent"
# The packages a reader of the summary looks for first, besides the role's own.
ALWAYS_SUMMARISED = (AGENT_PACKAGE, "cloud-init", "openssh-server", "systemd")
ROLE_PURPOSES = {"backend": ("python",), "frontend": ("nginx",), "database": ("mariadb",)}


def manifest_dir(ctx: StepContext) -> Path:
    return ctx.stage / "manifest"


def _write(ctx: StepContext, name: str, text: str) -> None:
    # 0644 in a 0755 folder: Packer downloads it as the (unprivileged) build user.
    if write_bytes(manifest_dir(ctx) / name, text.encode("utf-8"), 0o644):
        ctx.say(f"wrote manifest/{name}")


def summary(
    ctx: StepContext, packages: list[str], agent_version: str, freeze: str | None
) -> dict[str, Any]:
    """The manifest.json document: role, agent, selected package versions, Python pins."""
    versions = {}
    for line in packages:
        name, _, rest = line.partition("\t")
        versions[name] = rest.partition("\t")[0]
    wanted = list(ALWAYS_SUMMARISED)
    for purpose in ROLE_PURPOSES[ctx.plan.role]:
        wanted.extend(PACKAGE_NAMES[ctx.plan.os][purpose])
    document: dict[str, Any] = {
        "role": ctx.plan.role,
        "os": ctx.plan.os,
        "target": ctx.plan.target,
        "agent": {
            "package": ctx.plan.agent.package,
            "version": agent_version,
            "source": ctx.plan.agent.url,
            "verified_by": "sha256" if ctx.plan.agent.sha256 else "gpg",
        },
        "packages": {
            "count": len(packages),
            "selected": {name: versions[name] for name in wanted if name in versions},
        },
        "files": ["packages.txt", "agent-version.txt", "inventory.json"],
    }
    if freeze is not None:
        pins = pinned_versions(freeze)
        document["python"] = {
            "count": len(pins),
            DISTRO_PACKAGE: pins.get(DISTRO_PACKAGE),
            "venv": f"{ctx.plan.app.dir}/venv",
        }
        document["files"].append("pip-freeze.txt")
    return document


def run(ctx: StepContext) -> None:
    packages = ctx.packages.list_installed()
    _write(ctx, "packages.txt", "".join(f"{line}\n" for line in packages))
    try:
        agent_version = ctx.path(VERSION_FILE).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvisionError(f"cannot read {VERSION_FILE}: did install-agent run?") from exc
    _write(ctx, "agent-version.txt", agent_version + "\n")
    freeze = None
    if ctx.plan.role == "backend":
        venv_python = str(ctx.path(f"{ctx.plan.app.dir}/venv/bin/python"))
        result = ctx.runner.run(
            [venv_python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"]
        )
        freeze = "".join(f"{line}\n" for line in sorted(result.stdout.splitlines()) if line)
        _write(ctx, "pip-freeze.txt", freeze)
    owned = inventory.collect(ctx)
    _write(ctx, "inventory.json", json.dumps(owned, indent=2, sort_keys=True) + "\n")
    document = summary(ctx, packages, agent_version, freeze)
    _write(ctx, "manifest.json", json.dumps(document, indent=2, sort_keys=True) + "\n")
    ctx.say(f"{len(packages)} packages, agent {agent_version}")
