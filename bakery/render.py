"""Render one role x target into `build/<target>/<role>/`: Packer HCL plus the stage.

The stage (`stage/`) is everything the bake uploads to the image: the provisioners, the
on-image tree (`stage/rootfs/`, mirroring `/`: the files rendered from `rootfs/` and the
role's programs from `onimage/`, placed by `bakery/onimage.py`), the bake plan and the
artifacts the build step adds. A render is written to a temporary folder and moved into
place, so a failure never leaves a half-rendered tree.

Jinja2 uses `[[ ]]` / `[% %]` here, never `{{ }}`: Packer's own `{{ .SourceAMI }}` and
systemd's `%i` pass through untouched, and values reach HCL only through the `hcl`
filter, which quotes and escapes them.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from bakery.agent_config import agent_config
from bakery.artifacts import Artifacts
from bakery.config import RELEASE_ONLY_SETTINGS, REPO_ROOT, BakeryConfig
from bakery.errors import OperationFailed
from bakery.hcl import hcl_literal
from bakery.onimage import stage_programs
from bakery.packer import PackerVersion

PACKER_TEMPLATES = REPO_ROOT / "packer"
ROOTFS_TEMPLATES = REPO_ROOT / "rootfs"
PROVISIONERS = REPO_ROOT / "provisioners"
BUILD_ROOT = REPO_ROOT / "build"

# Where the stage lands on the image during the bake (removed by the seal step).
GUEST_STAGE = "/tmp/bakery"
AGENT_CONFIG_PATH = "/opt/aws/amazon-cloudwatch-agent/etc/bakery/agent-config.json"

# Post-build guarantees: what the rendered template could not express for this Packer
# and the AWS step must apply with boto3 right after the build.
IMDSV2_ON_AMI = "imds_support"
DEPRECATION = "deprecate_at"
ORG_SHARING = "ami_org_arns"

_LEFTOVER = re.compile(r"\[\[|\]\]|\[%|%\]")
# Text that needs no quoting in a systemd EnvironmentFile= line.
_PLAIN_ENV_VALUE = re.compile(r"^[A-Za-z0-9._:/@+,=#-]*$")


def _refuse_control(value: str, sink: str) -> None:
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r}: a control character cannot go into {sink}")


def unit_variable(assignment: str) -> str:
    """`NAME=value` as the argument of a unit's Environment= line: double-quoted, with
    `\\` and `"` escaped and `%` doubled (systemd expands %-specifiers there)."""
    _refuse_control(assignment, "a systemd unit")
    escaped = assignment.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def env_file_value(value: Any) -> str:
    """A value for a `KEY=value` line of an EnvironmentFile=: as it is when plain,
    else single-quoted (systemd reads single quotes literally; no specifiers there)."""
    text = str(value)
    _refuse_control(text, "an environment file")
    if _PLAIN_ENV_VALUE.match(text):
        return text
    if "'" in text:
        raise ValueError(f"{text!r}: a quote cannot go into an environment file")
    return f"'{text}'"


@dataclass(frozen=True)
class RenderedRole:
    """What one render produced and what later steps must still do."""

    role: str
    target: str
    directory: Path
    packer_version: PackerVersion
    post_build: tuple[str, ...] = field(default=())

    @property
    def stage(self) -> Path:
        return self.directory / "stage"


@functools.cache  # one per folder: each template is compiled once per process, not per role
def _environment(search_path: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search_path),
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # The one escaping function per sink: HCL, unit Environment= lines, env files.
    env.filters["hcl"] = hcl_literal
    env.filters["unit_variable"] = unit_variable
    env.filters["env_file_value"] = env_file_value
    return env


def _render_text(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        text = env.get_template(name).render(**context)
    except (jinja2.TemplateError, ValueError) as exc:
        raise OperationFailed(f"template {name}: {exc}") from exc
    leftover = _LEFTOVER.search(text)
    if leftover:
        raise OperationFailed(f"template {name}: unrendered {leftover.group()!r} in the output")
    return text


def bake_plan(cfg: BakeryConfig, artifacts: Artifacts | None = None) -> dict[str, Any]:
    """The JSON the provisioners read on the image: everything they need, nothing secret."""
    source = cfg.agent_source
    agent = {
        "url": source.url,
        "signature_url": source.signature_url,
        "gpg_key_url": source.gpg_key_url,
        "gpg_fingerprint": source.gpg_fingerprint,
        "sha256": source.sha256,
    }
    if cfg.agent.package == "test-double":
        # Same install path as the real package: fetched by URL, checked by sha256.
        staged = artifacts.agent_package if artifacts else None
        agent = {
            "url": f"file://{GUEST_STAGE}/artifacts/agent/{staged.filename}" if staged else None,
            "signature_url": None,
            "gpg_key_url": None,
            "gpg_fingerprint": None,
            "sha256": staged.sha256 if staged else None,
        }
    return {
        "role": cfg.role,
        "target": cfg.target,
        "os": cfg.os,
        "stage": GUEST_STAGE,
        "agent": {
            "package": cfg.agent.package,
            **agent,
            "min_version": cfg.agent.min_version,
            "config_path": AGENT_CONFIG_PATH,
        },
        "app": {"user": cfg.app.user, "dir": cfg.app.dir, "port": cfg.app.port},
        "otel": {"distro_version": cfg.otel.distro_version},
        "hardening": cfg.hardening.model_dump(mode="json"),
        "steps": provisioning_steps(cfg),
    }


def provisioning_steps(cfg: BakeryConfig) -> list[str]:
    """The provisioner steps in order: each is one `provision.py` run; the steps up to
    `record-manifest` share one Packer shell provisioner, `seal` runs after the download."""
    return [
        "prepare",
        "install-agent",
        f"install-{cfg.role}",
        "harden",
        "record-manifest",
        "seal",
    ]


def render_role(
    cfg: BakeryConfig,
    packer: PackerVersion,
    build_root: Path = BUILD_ROOT,
    artifacts: Artifacts | None = None,
) -> RenderedRole:
    """Render one role for one target into `build_root/<target>/<role>/`, atomically.

    Without `artifacts` the stage has an empty `artifacts/` folder: enough to read and
    validate the templates; a build renders again with the artifacts it prepared.
    """
    final = build_root / cfg.target / cfg.role
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".render-{cfg.role}-", dir=final.parent))
    try:
        post_build = _render_into(scratch, cfg, packer, artifacts)
        if final.exists():
            old = final.with_name(f".old-{cfg.role}")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            scratch.rename(final)
            shutil.rmtree(old)
        else:
            scratch.rename(final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return RenderedRole(cfg.role, cfg.target, final, packer, post_build)


def _render_into(
    out: Path, cfg: BakeryConfig, packer: PackerVersion, artifacts: Artifacts | None
) -> tuple[str, ...]:
    post_build = _post_build_guarantees(cfg, packer)
    context = {
        "cfg": cfg,
        "packer": packer,
        "steps": provisioning_steps(cfg),
        "guest_stage": GUEST_STAGE,
        "otel_unit_variables": cfg.otel.unit_variables(),
        "ami_name": _ami_name_expression(cfg),
        # Debian 12 and AL2023 AMIs both boot from /dev/xvda.
        "root_device": "/dev/xvda",
    }
    env = _environment(PACKER_TEMPLATES)
    names = ["variables.pkr.hcl", f"source.{cfg.target}.pkr.hcl", "build.pkr.hcl"]
    if packer.has_plugin_system:
        names.insert(0, "plugins.pkr.hcl")
    for name in names:
        text = _render_text(env, f"{name}.j2", context)
        (out / name.replace(f".{cfg.target}.", ".")).write_text(text, encoding="utf-8")

    stage = out / "stage"
    stage.mkdir()
    if artifacts is not None:
        shutil.copytree(artifacts.directory, stage / "artifacts")
    else:
        (stage / "artifacts").mkdir()
    shutil.copytree(
        PROVISIONERS, stage / "provisioners", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    _render_rootfs(stage / "rootfs", cfg, context)
    stage_programs(stage / "rootfs", cfg.role)
    agent_json = stage / "rootfs" / AGENT_CONFIG_PATH.lstrip("/")
    agent_json.parent.mkdir(parents=True, exist_ok=True)
    agent_json.write_text(json.dumps(agent_config(cfg), indent=2, sort_keys=True) + "\n")
    (stage / "bake.json").write_text(
        json.dumps(bake_plan(cfg, artifacts), indent=2, sort_keys=True) + "\n"
    )
    (out / "render.json").write_text(
        json.dumps(
            {
                "role": cfg.role,
                "target": cfg.target,
                "os": cfg.os,
                "packer_version": str(packer),
                "post_build": list(post_build),
                "config": cfg.model_dump(mode="json", exclude=set(RELEASE_ONLY_SETTINGS)),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    return post_build


def _ami_name_expression(cfg: BakeryConfig) -> str:
    """The AMI name as an HCL string expression; the pattern's charset cannot inject."""
    name = cfg.aws.ami_name_pattern.format(
        role=cfg.role,
        os=cfg.os,
        arch=cfg.arch,
        timestamp="${local.build_time}",
        inputs_hash="${var.inputs_hash}",
    )
    return f'"{name}"'


def _post_build_guarantees(cfg: BakeryConfig, packer: PackerVersion) -> tuple[str, ...]:
    if cfg.target != "aws" or packer.has_modern_amazon_plugin:
        return ()
    wanted: list[str] = []
    if cfg.aws.imdsv2_required:
        wanted.append(IMDSV2_ON_AMI)
    if cfg.aws.deprecate_after_days:
        wanted.append(DEPRECATION)
    if cfg.aws.share_org_arns:
        wanted.append(ORG_SHARING)
    return tuple(wanted)


def _rootfs_sources(role: str) -> Iterable[tuple[Path, Path]]:
    """(template root, file) pairs: `common/` first, then the role's tree overlays it."""
    for layer in ("common", role):
        root = ROOTFS_TEMPLATES / layer
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    yield root, path


def _render_rootfs(out: Path, cfg: BakeryConfig, context: dict[str, Any]) -> None:
    """Copy the role's files that mirror `/`; `*.j2` files are rendered from config."""
    for root, path in _rootfs_sources(cfg.role):
        relative = path.relative_to(root)
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".j2":
            target = target.with_suffix("")
            env = _environment(root)
            target.write_text(_render_text(env, relative.as_posix(), context), encoding="utf-8")
        else:
            shutil.copyfile(path, target)
        target.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
