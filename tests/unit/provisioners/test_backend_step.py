"""install-backend: Python >= 3.10, a nologin system user, the venv from the wheelhouse
(hashes required, skipped when pip freeze matches), root-owned code, the unit enabled."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision import backend
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from provisioner_fakes import REPO_ROOT, FakeSystem, MakeContext, put_rendered_rootfs

BACKEND_APP = REPO_ROOT / "app" / "backend"


@pytest.fixture
def backend_context(
    make_context: MakeContext, render_stage: Callable[..., Path]
) -> Callable[..., StepContext]:
    def make(os_family: str = "debian12", **changes: object) -> StepContext:
        ctx = make_context("install-backend", role="backend", os=os_family, **changes)
        put_rendered_rootfs(ctx, render_stage("backend", os_family))
        wheelhouse = ctx.artifacts / "wheelhouse"
        wheelhouse.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BACKEND_APP / "requirements.txt", wheelhouse / "requirements.txt")
        app = ctx.artifacts / "app"
        app.mkdir(parents=True, exist_ok=True)
        for name in ("main.py", "database.py", "models.py"):
            shutil.copyfile(BACKEND_APP / name, app / name)
        return ctx

    return make


def test_backend_is_installed_from_the_wheelhouse_only(
    backend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = backend_context()
    backend.run(ctx)

    assert {"python3", "python3-venv"} <= set(fake_system.packages)
    [useradd] = fake_system.ran("useradd")
    assert "--system" in useradd and useradd[-1] == "app"
    assert useradd[useradd.index("--shell") + 1] == "/usr/sbin/nologin"
    [pip] = [c for c in fake_system.commands if c[1:4] == ["-m", "pip", "install"]]
    assert pip[0] == str(ctx.path("/opt/app/venv/bin/python"))
    assert "--no-index" in pip and "--require-hashes" in pip
    assert pip[pip.index("--find-links") + 1] == str(ctx.artifacts / "wheelhouse")
    assert fake_system.pip["aws-opentelemetry-distro"] == "0.21.0"
    assert (ctx.path("/opt/app/main.py")).read_bytes() == (BACKEND_APP / "main.py").read_bytes()
    assert "fastapi-otel.service" in fake_system.enabled
    for path in backend.ROOTFS_FILES:
        assert ctx.path(path).is_file(), path


def test_app_code_is_not_writable_by_the_app_user(
    backend_context: Callable[..., StepContext],
) -> None:
    ctx = backend_context()
    backend.run(ctx)
    for path in [ctx.path("/opt/app"), *ctx.path("/opt/app").rglob("*")]:
        assert not path.stat().st_mode & 0o022, path


def test_second_run_installs_nothing(
    backend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = backend_context()
    backend.run(ctx)
    fake_system.reset_log()

    backend.run(ctx)

    assert fake_system.install_commands() == []
    assert not fake_system.ran(str(ctx.path("/opt/app/venv/bin/python")), "-m", "compileall")


def test_al2023_builds_the_venv_from_python311(
    backend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    backend.run(backend_context("al2023"))
    assert fake_system.ran("dnf", "install")[0][-2:] == ["python3.11", "python3.11-pip"]
    assert fake_system.ran("/usr/bin/python3.11", "-m", "venv")


def test_python_older_than_310_is_refused(
    backend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    fake_system.python_version = "3.9"
    with pytest.raises(ProvisionError, match=r"needs Python >= 3\.10"):
        backend.run(backend_context())


def test_wheelhouse_with_another_distro_pin_is_refused(
    backend_context: Callable[..., StepContext],
) -> None:
    ctx = backend_context(otel={"distro_version": "0.20.0"})
    with pytest.raises(ProvisionError, match=r"the plan wants 0\.20\.0"):
        backend.run(ctx)


def test_existing_user_with_a_login_shell_loses_it(
    backend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    fake_system.users["app"] = "/bin/bash"
    backend.run(backend_context())
    assert fake_system.ran("usermod", "--shell", "/usr/sbin/nologin", "app")
    assert not fake_system.ran("useradd")


def test_pinned_versions_reads_requirements_and_freeze() -> None:
    text = (
        "# comment\n"
        "Foo_Bar==1.2.3 \\\n    --hash=sha256:abc\n"
        "uvicorn[standard]==0.30.0 ; python_version >= '3.10'\n"
        "-e git+https://example.invalid/x#egg=x\n"
    )
    assert backend.pinned_versions(text) == {"foo-bar": "1.2.3", "uvicorn": "0.30.0"}
