"""install-frontend: nginx, the static page, our site instead of the distro's default,
the upstream from the defaults at bake time (rewritten at boot), nginx -t, units enabled."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision import frontend
from bakery_provision.context import StepContext
from provisioner_fakes import REPO_ROOT, FakeSystem, MakeContext, put_rendered_rootfs


@pytest.fixture
def frontend_context(
    make_context: MakeContext, render_stage: Callable[..., Path]
) -> Callable[..., StepContext]:
    def make(os_family: str = "debian12") -> StepContext:
        ctx = make_context("install-frontend", role="frontend", os=os_family)
        put_rendered_rootfs(ctx, render_stage("frontend", os_family))
        shutil.copytree(REPO_ROOT / "app" / "frontend", ctx.artifacts / "app")
        # prepare installs the launch defaults the bake-time upstream is written from.
        defaults = ctx.path("/etc/bakery/defaults.env")
        defaults.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ctx.rootfs / "etc/bakery/defaults.env", defaults)
        return ctx

    return make


def test_frontend_is_installed_and_enabled(
    frontend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = frontend_context()
    default_site = ctx.path("/etc/nginx/sites-enabled/default")
    default_site.parent.mkdir(parents=True)
    default_site.symlink_to("../sites-available/default")

    frontend.run(ctx)

    assert "nginx" in fake_system.packages
    assert ctx.path("/var/www/bakery/index.html").is_file()
    assert not default_site.is_symlink()
    [writer] = fake_system.ran(str(ctx.path(frontend.UPSTREAM_WRITER)))
    assert writer[1:] == ["--output", str(ctx.path("/etc/nginx/conf.d/bakery-upstream.conf"))]
    env = fake_system.envs[fake_system.commands.index(writer)]
    assert env == {"BACKEND_URL": "http://127.0.0.1:8000"}
    assert fake_system.ran("nginx", "-t")
    assert {"nginx.service", "bakery-frontend-config.service"} <= fake_system.enabled
    for path in frontend.ROOTFS_FILES:
        assert ctx.path(path).is_file(), path


def test_second_run_installs_nothing(
    frontend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = frontend_context()
    frontend.run(ctx)
    fake_system.reset_log()
    frontend.run(ctx)
    assert fake_system.install_commands() == []


def test_nginx_conf_runs_as_the_distros_nginx_user(
    frontend_context: Callable[..., StepContext],
) -> None:
    for os_family, user in (("debian12", "www-data"), ("al2023", "nginx")):
        ctx = frontend_context(os_family)
        frontend.run(ctx)
        assert f"user {user};" in ctx.path("/etc/nginx/nginx.conf").read_text()
        shutil.rmtree(ctx.root)


def test_existing_nginx_logs_become_readable_by_group_adm(
    frontend_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = frontend_context()
    log = ctx.path("/var/log/nginx/access.log")
    log.parent.mkdir(parents=True)
    log.write_text("")
    frontend.run(ctx)
    assert fake_system.ran("chgrp", "adm", str(log))
