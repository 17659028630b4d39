"""install-database: MariaDB on 0.0.0.0:3306, hardened at bake (no anonymous users, no
test database) through the unix socket, stopped again, with no baked credentials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision import database
from bakery_provision.context import StepContext
from provisioner_fakes import FakeSystem, MakeContext, put_rendered_rootfs


@pytest.fixture
def database_context(
    make_context: MakeContext, render_stage: Callable[..., Path]
) -> Callable[..., StepContext]:
    def make(os_family: str = "debian12") -> StepContext:
        ctx = make_context("install-database", role="database", os=os_family)
        put_rendered_rootfs(ctx, render_stage("database", os_family))
        ctx.path("/var/log").mkdir(parents=True, exist_ok=True)
        return ctx

    return make


def test_database_is_installed_hardened_and_enabled(
    database_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = database_context()
    database.run(ctx)

    assert "mariadb-server" in fake_system.packages
    config = ctx.path("/etc/mysql/mariadb.conf.d/90-bakery.cnf").read_text()
    assert "bind-address = 0.0.0.0" in config
    assert "log-error = /var/log/mysql/error.log" in config
    [client] = fake_system.ran("mariadb")
    assert "--protocol=socket" in client and "--user=root" in client
    sql = fake_system.inputs[fake_system.commands.index(client)]
    assert sql is not None
    assert "DELETE FROM mysql.global_priv WHERE User = ''" in sql
    assert "DROP DATABASE IF EXISTS test" in sql
    assert "IDENTIFIED" not in sql
    assert fake_system.ran("systemctl", "stop", "mariadb.service")
    assert "mariadb.service" not in fake_system.active
    assert {"mariadb.service", "bakery-database-init.service"} <= fake_system.enabled
    assert fake_system.ran("chown", "mysql:adm", str(ctx.path("/var/log/mysql")))
    assert ctx.path("/var/log/mysql/error.log").is_file()


def test_al2023_reads_the_server_config_from_my_cnf_d(
    database_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = database_context("al2023")
    database.run(ctx)
    assert "mariadb105-server" in fake_system.packages
    assert ctx.path("/etc/my.cnf.d/90-bakery.cnf").is_file()


def test_second_run_installs_nothing(
    database_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = database_context()
    database.run(ctx)
    fake_system.reset_log()
    database.run(ctx)
    assert fake_system.install_commands() == []
    assert "mariadb.service" not in fake_system.active
