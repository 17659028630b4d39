"""bakery/onimage.py: the one table of on-image programs, and the staging that puts each
program at its path with its mode in every render (and the base image)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bakery import ROLES
from bakery.config import LAUNCH_SETTINGS_FILE, load_config
from bakery.onimage import BASE, ON_IMAGE_PROGRAMS, ONIMAGE, programs_for, stage_programs
from bakery.packer import PackerVersion
from bakery.render import ROOTFS_TEMPLATES, render_role

TESTS = Path(__file__).resolve().parent / "onimage"


def test_every_file_in_onimage_is_a_program_of_the_table() -> None:
    on_disk = sorted(p.name for p in ONIMAGE.iterdir() if p.name != "__pycache__")
    assert on_disk == sorted(program.name for program in ON_IMAGE_PROGRAMS)


def test_every_program_has_a_test_file_named_after_it() -> None:
    wanted = {f"test_{p.name.removesuffix('.py').replace('-', '_')}.py" for p in ON_IMAGE_PROGRAMS}
    present = {p.name for p in TESTS.glob("test_*.py")}
    assert wanted == present


def test_programs_are_executable_in_the_checkout_as_on_the_image() -> None:
    for program in ON_IMAGE_PROGRAMS:
        executable = bool(program.source.stat().st_mode & 0o111)
        assert executable == bool(program.mode & 0o111), program.name


def test_rootfs_holds_files_only() -> None:
    for path in ROOTFS_TEMPLATES.rglob("*"):
        if path.is_file():
            assert not path.stat().st_mode & 0o111, f"{path} is a program: move it to onimage/"
            assert path.suffix != ".py", f"{path} is code: move it to onimage/"


def test_every_program_goes_to_some_image() -> None:
    for program in ON_IMAGE_PROGRAMS:
        assert program.roles, program.name
        assert set(program.roles) <= {*ROLES, BASE}, program.name


def test_the_host_loads_launch_settings_from_onimage() -> None:
    assert LAUNCH_SETTINGS_FILE == ONIMAGE / "launch_settings.py"


def test_staging_places_each_program_at_its_path_and_mode(tmp_path: Path) -> None:
    stage_programs(tmp_path, BASE)
    [program] = programs_for(BASE)
    staged = tmp_path / program.path.lstrip("/")
    assert staged.read_bytes() == program.source.read_bytes()
    assert stat.S_IMODE(staged.stat().st_mode) == program.mode


@pytest.mark.parametrize("role", ROLES)
def test_a_render_stages_exactly_the_roles_programs(role: str, tmp_path: Path) -> None:
    stage = render_role(load_config(role, "aws"), PackerVersion(1, 6, 6), tmp_path).stage
    for program in ON_IMAGE_PROGRAMS:
        staged = stage / "rootfs" / program.path.lstrip("/")
        assert staged.exists() == (role in program.roles), program.name
        if staged.exists():
            assert staged.read_bytes() == program.source.read_bytes()
            assert stat.S_IMODE(staged.stat().st_mode) == program.mode


def run_staged(stage: Path, path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(stage / "rootfs" / path.lstrip("/")), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3 here")
def test_staged_programs_run_as_programs(tmp_path: Path) -> None:
    frontend = render_role(load_config("frontend", "aws"), PackerVersion(1, 6, 6), tmp_path).stage
    upstream_file = tmp_path / "bakery-upstream.conf"
    result = run_staged(
        frontend,
        "/usr/local/libexec/bakery/write-nginx-upstream",
        "--output",
        str(upstream_file),
        BACKEND_URL="http://10.0.1.20:8000",
    )
    assert result.returncode == 0, result.stderr
    assert "server 10.0.1.20:8000;" in upstream_file.read_text()

    # The backend's program finds launch_settings beside it, as on the image.
    backend = render_role(load_config("backend", "aws"), PackerVersion(1, 6, 6), tmp_path).stage
    secret_file = tmp_path / "db-password.env"
    result = run_staged(
        backend, "/usr/local/libexec/bakery/resolve-db-password", str(secret_file), DB_PASSWORD="x"
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to read" in result.stdout
    assert not list((backend / "rootfs/usr/local/libexec/bakery").glob("__pycache__"))
