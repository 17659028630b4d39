"""The rootfs templates, rendered by the real renderer for every role and OS: what lands on
the image, that every file has a step that installs it, and that the units are sound."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision import agent, backend, database, frontend, prepare
from provisioner_fakes import REPO_ROOT
from systemd_units import hermetic_unit_tree, referenced_units, systemd_analyze

from bakery.config import load_config

ROLES = ("backend", "frontend", "database")
OS_FAMILIES = ("debian12", "al2023")
UNIT_DIR = "etc/systemd/system"
ROLE_FILES = {
    "backend": backend.ROOTFS_FILES,
    "frontend": frontend.ROOTFS_FILES,
    "database": (*database.ROOTFS_FILES, database.SERVER_CONFIG),
}
LAUNCH_KEYS = (
    "SERVICE_NAME",
    "DEPLOYMENT_ENVIRONMENT",
    "LOG_GROUP_NAME",
    "BACKEND_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
)
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)

Render = Callable[..., Path]


def rendered_files(stage: Path) -> set[str]:
    rootfs = stage / "rootfs"
    return {"/" + p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*") if p.is_file()}


def unit_lines(path: Path, key: str) -> list[str]:
    """The values of `key=` lines in a unit file."""
    prefix = f"{key}="
    return [
        line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)
    ]


@pytest.mark.parametrize("os_family", OS_FAMILIES)
@pytest.mark.parametrize("role", ROLES)
def test_every_rendered_file_is_installed_by_a_step(
    render_stage: Render, role: str, os_family: str
) -> None:
    stage = render_stage(role, os_family)
    claimed = {
        *prepare.ROOTFS_FILES,
        *agent.ROOTFS_FILES,
        json.loads((stage / "bake.json").read_text())["agent"]["config_path"],
        *ROLE_FILES[role],
    }
    assert rendered_files(stage) == claimed


def test_no_template_is_left_unrendered(render_stage: Render) -> None:
    for role in ROLES:
        assert not [f for f in rendered_files(render_stage(role)) if f.endswith(".j2")]


def test_scripts_are_executable(render_stage: Render) -> None:
    for role in ROLES:
        libexec = render_stage(role) / "rootfs/usr/local/libexec/bakery"
        for script in libexec.iterdir():
            if script.suffix != ".py":
                assert script.stat().st_mode & 0o111, script
                # The image's own python3; -B: nothing written next to the scripts.
                assert script.read_text().startswith("#!/usr/bin/python3 -B\n"), script


def test_launch_defaults_hold_every_key_and_no_secret(render_stage: Render) -> None:
    cfg = load_config("backend", "aws")
    text = (render_stage("backend") / "rootfs/etc/bakery/defaults.env").read_text()
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert tuple(values) == LAUNCH_KEYS
    assert values["SERVICE_NAME"] == cfg.service.name
    assert values["DEPLOYMENT_ENVIRONMENT"] == cfg.service.deployment_environment
    assert values["LOG_GROUP_NAME"] == cfg.service.log_group
    assert values["BACKEND_URL"] == cfg.launch.backend_url
    assert values["DB_PORT"] == str(cfg.launch.db_port)


@pytest.mark.parametrize("role", ROLES)
def test_no_secret_is_baked(render_stage: Render, role: str) -> None:
    rootfs = render_stage(role) / "rootfs"
    for path in rootfs.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"^\s*(DB_)?PASSWORD\s*=\s*\S", text, re.M), path
            assert "IDENTIFIED BY '" not in text, path


def test_fastapi_unit_turns_on_trace_to_log_correlation(render_stage: Render) -> None:
    unit = render_stage("backend") / "rootfs" / UNIT_DIR / "fastapi-otel.service"
    assert "OTEL_PYTHON_LOG_CORRELATION=true" in unit_lines(unit, "Environment")
    [exec_start] = unit_lines(unit, "ExecStart")
    # The log group the agent ships the app's log to (LOG_GROUP_NAME, baked in
    # defaults.env or set at launch) is the one the resource names.
    assert ',aws.log.group.names=${LOG_GROUP_NAME}"' in exec_start


def test_fastapi_unit_names_the_database_dependency_from_config(render_stage: Render) -> None:
    cfg = load_config("backend", "aws")
    unit = render_stage("backend") / "rootfs" / UNIT_DIR / "fastapi-otel.service"
    assert f'"DATABASE_SERVICE_NAME={cfg.app.database_service_name}"' in unit_lines(
        unit, "Environment"
    )
    # launch.env, read after the unit's own Environment= lines, can rename it.
    assert "-/etc/bakery/launch.env" in unit_lines(unit, "EnvironmentFile")


def test_fastapi_unit_runs_the_instrumented_app(render_stage: Render) -> None:
    cfg = load_config("backend", "aws")
    unit = render_stage("backend") / "rootfs" / UNIT_DIR / "fastapi-otel.service"
    text = unit.read_text()
    for name, value in cfg.otel.unit_variables().items():
        assert f'Environment="{name}={value}"' in text
    [exec_start] = unit_lines(unit, "ExecStart")
    assert exec_start.startswith(
        '/usr/bin/env "OTEL_RESOURCE_ATTRIBUTES=service.name=${SERVICE_NAME},'
        'deployment.environment=${DEPLOYMENT_ENVIRONMENT},aws.log.group.names=${LOG_GROUP_NAME}" '
    )
    assert f"{cfg.app.dir}/venv/bin/opentelemetry-instrument {cfg.app.dir}/venv/bin/uvicorn" in (
        exec_start
    )
    assert f"--port {cfg.app.port}" in exec_start
    assert exec_start.endswith("--workers 1 --no-access-log")
    assert "--reload" not in text
    assert unit_lines(unit, "User") == [cfg.app.user]
    assert unit_lines(unit, "WorkingDirectory") == [cfg.app.dir]
    assert "amazon-cloudwatch-agent.service" in " ".join(unit_lines(unit, "After")).split()
    assert "amazon-cloudwatch-agent.service" in " ".join(unit_lines(unit, "Wants")).split()
    assert unit_lines(unit, "Restart") == ["always"]
    assert unit_lines(unit, "EnvironmentFile")[:2] == [
        "/etc/bakery/defaults.env",
        "-/etc/bakery/launch.env",
    ]


@pytest.mark.parametrize("role", ROLES)
def test_the_agent_ships_logs_the_role_writes(render_stage: Render, role: str) -> None:
    stage = render_stage(role)
    rootfs = stage / "rootfs"
    config_path = json.loads((stage / "bake.json").read_text())["agent"]["config_path"]
    config = json.loads((rootfs / config_path.lstrip("/")).read_text())
    shipped = [e["file_path"] for e in config["logs"]["logs_collected"]["files"]["collect_list"]]
    written = {
        "backend": rootfs / UNIT_DIR / "fastapi-otel.service",
        "frontend": rootfs / "etc/nginx/nginx.conf",
        "database": rootfs / database.SERVER_CONFIG.lstrip("/"),
    }[role].read_text()
    for log_file in shipped:
        assert log_file in written


def test_agent_translation_runs_before_the_agent(render_stage: Render) -> None:
    rootfs = render_stage("backend") / "rootfs"
    unit = rootfs / UNIT_DIR / "bakery-agent-config.service"
    assert unit_lines(unit, "Before") == ["amazon-cloudwatch-agent.service"]
    assert unit_lines(unit, "Type") == ["oneshot"]
    assert unit_lines(unit, "WantedBy") == ["multi-user.target"]
    drop_in = rootfs / UNIT_DIR / "amazon-cloudwatch-agent.service.d/10-bakery-agent-config.conf"
    assert unit_lines(drop_in, "Requires") == ["bakery-agent-config.service"]
    assert unit_lines(drop_in, "After") == ["bakery-agent-config.service"]


def test_frontend_config_runs_before_nginx(render_stage: Render) -> None:
    rootfs = render_stage("frontend") / "rootfs"
    unit = rootfs / UNIT_DIR / "bakery-frontend-config.service"
    assert unit_lines(unit, "Before") == ["nginx.service"]
    drop_in = rootfs / UNIT_DIR / "nginx.service.d/10-bakery-frontend-config.conf"
    assert unit_lines(drop_in, "Requires") == ["bakery-frontend-config.service"]
    site = (rootfs / "etc/nginx/conf.d/bakery.conf").read_text()
    assert "location /api/ {" in site and "proxy_pass http://bakery_backend/;" in site


def test_database_init_runs_after_mariadb(render_stage: Render) -> None:
    unit = render_stage("database") / "rootfs" / UNIT_DIR / "bakery-database-init.service"
    assert "mariadb.service" in " ".join(unit_lines(unit, "After")).split()
    assert unit_lines(unit, "Requires") == ["mariadb.service"]


def test_unit_tree_stubs_every_referenced_unit(render_stage: Render, tmp_path: Path) -> None:
    tree, ours = hermetic_unit_tree([render_stage(r) for r in ROLES], tmp_path)
    names = {p.name for p in tree.iterdir()}
    assert {"mariadb.service", "nginx.service", "amazon-cloudwatch-agent.service"} <= names
    assert {"network-online.target", "multi-user.target", "cloud-init.service"} <= names
    for unit in ours:
        assert referenced_units(unit.read_text()) <= names, unit


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(render_stage: Render, tmp_path: Path) -> None:
    tree, ours = hermetic_unit_tree([render_stage(r) for r in ROLES], tmp_path)
    output = systemd_analyze(tree, "verify", "--man=no", *map(str, ours))
    # verify exits 0 on mere warnings (unknown keys, bad values): any output is a finding.
    assert output == "exit 0\n", output


@needs_systemd_analyze
def test_verify_reads_no_unit_from_the_host(render_stage: Render, tmp_path: Path) -> None:
    # systemd-journald.service is on every host with systemd: verify must still not find it,
    # since the tree is its only search path; and a missing stand-in must be a finding.
    tree, ours = hermetic_unit_tree([render_stage(r) for r in ROLES], tmp_path)
    probe = tree / "probe.service"
    probe.write_text("[Unit]\nRequires=systemd-journald.service\n[Service]\nExecStart=/bin/true\n")
    output = systemd_analyze(tree, "verify", "--man=no", str(probe))
    assert "Unit systemd-journald.service not found" in output, output
    (tree / "mariadb.service").unlink()
    [init] = [u for u in ours if u.name == "bakery-database-init.service"]
    output = systemd_analyze(tree, "verify", "--man=no", str(init))
    assert "Unit mariadb.service not found" in output, output


@needs_systemd_analyze
def test_fastapi_unit_exposure_is_within_the_verify_ceiling(
    render_stage: Render, tmp_path: Path
) -> None:
    tree, _ = hermetic_unit_tree([render_stage(r) for r in ROLES], tmp_path)
    unit = tree / "fastapi-otel.service"
    output = systemd_analyze(
        tree, "security", "--offline=true", "--no-pager", str(unit), cwd=tmp_path
    )
    match = re.search(r"Overall exposure level for fastapi-otel.service: ([0-9.]+)", output)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot review unit files offline: {output}")
    assert float(match.group(1)) <= load_config("backend", "aws").verify.max_exposure


def test_repo_rootfs_has_only_the_layers_the_renderer_reads() -> None:
    # base/ belongs to the local base image; everything else is common/ or a role.
    layers = {p.name for p in (REPO_ROOT / "rootfs").iterdir() if p.is_dir()}
    assert layers <= {"base", "common", *ROLES}


def test_rendered_unit_waits_for_the_configured_endpoints(
    render_stage: Callable[..., Path],
) -> None:
    cfg = load_config("backend", "aws")
    unit = render_stage("backend") / "rootfs" / UNIT_DIR / "fastapi-otel.service"
    [pre] = unit_lines(unit, "ExecStartPre")
    timeout_s = cfg.otel.agent_wait_timeout_s
    assert pre == (
        f"/usr/local/libexec/bakery/wait-for-agent {timeout_s} localhost:4316 localhost:2000"
    )
    # systemd must not kill the start while the script is still within its own bound.
    [start_timeout] = unit_lines(unit, "TimeoutStartSec")
    assert int(start_timeout) > timeout_s
    rootfs_script = render_stage("backend") / "rootfs/usr/local/libexec/bakery/wait-for-agent"
    assert rootfs_script.stat().st_mode & 0o111
