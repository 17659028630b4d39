"""`install-database`: MariaDB listening on 3306 for the app tier, hardened at bake time
(no anonymous users, no test database) and holding no app credentials: those are made at
boot by `bakery-database-init.service` from the launch settings."""

from __future__ import annotations

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.files import install_copy, install_from_rootfs
from bakery_provision.packages import package_names
from bakery_provision.services import enable, is_active, reload_units

MARIADB_UNIT = "mariadb.service"
INIT_UNIT = "bakery-database-init.service"
# One server config in rootfs (at Debian's path); AL2023 reads /etc/my.cnf.d instead.
SERVER_CONFIG = "/etc/mysql/mariadb.conf.d/90-bakery.cnf"
SERVER_CONFIG_TARGET = {
    "debian12": SERVER_CONFIG,
    "al2023": "/etc/my.cnf.d/90-bakery.cnf",
}
LOG_DIR = "/var/log/mysql"
ROOTFS_FILES = (
    "/etc/systemd/system/bakery-database-init.service",
    "/usr/local/libexec/bakery/init-app-database",
)
# What mysql_secure_installation does, minus the root password: root logs in through
# the unix socket only. MariaDB >= 10.4 keeps accounts in mysql.global_priv.
HARDENING_SQL = """\
DELETE FROM mysql.global_priv WHERE User = '';
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
DROP DATABASE IF EXISTS test;
DELETE FROM mysql.db WHERE Db = 'test' OR Db LIKE 'test\\\\_%';
FLUSH PRIVILEGES;
SELECT CONCAT(User, '@', Host) AS account FROM mysql.global_priv ORDER BY account;
"""


def client(ctx: StepContext) -> str:
    for name in ("mariadb", "mysql"):
        if ctx.runner.exists(name):
            return name
    raise ProvisionError("the MariaDB client (mariadb or mysql) is not installed")


def prepare_error_log(ctx: StepContext) -> None:
    """/var/log/mysql/error.log: the server (mysql) writes it, group adm (the agent) reads.

    Made here because AL2023's mariadb-prepare-db-dir creates error logs only directly
    in /var/log, and refuses to start the server when it cannot write the one configured.
    """
    folder = ctx.path(LOG_DIR)
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    error_log = folder / "error.log"
    if not error_log.exists():
        error_log.touch(mode=0o640)
    # setgid folder: logs the server creates later inherit group adm too.
    ctx.runner.run(["chown", "mysql:adm", str(folder), str(error_log)])
    ctx.runner.run(["chmod", "2750", str(folder)])
    ctx.runner.run(["chmod", "0640", str(error_log)])


def harden(ctx: StepContext, config_changed: bool) -> None:
    """Start the server, drop anonymous users and the test database, stop it again."""
    if config_changed or not is_active(ctx, MARIADB_UNIT):
        ctx.runner.run(["systemctl", "restart", MARIADB_UNIT])
    result = ctx.runner.run(
        [client(ctx), "--protocol=socket", "--user=root", "--batch", "--skip-column-names"],
        input_text=HARDENING_SQL,
    )
    accounts = ", ".join(result.stdout.split()) or "none"
    ctx.say(f"removed anonymous users and the test database; accounts: {accounts}")
    ctx.runner.run(["systemctl", "stop", MARIADB_UNIT])


def run(ctx: StepContext) -> None:
    installed = ctx.packages.install(package_names(ctx.plan.os, "mariadb"))
    ctx.say("installed " + ", ".join(installed) if installed else "MariaDB is installed")
    prepare_error_log(ctx)
    config_changed = install_copy(
        ctx, ctx.rootfs / SERVER_CONFIG.lstrip("/"), SERVER_CONFIG_TARGET[ctx.plan.os]
    )
    install_from_rootfs(ctx, ROOTFS_FILES)
    reload_units(ctx)
    harden(ctx, config_changed)
    enable(ctx, [MARIADB_UNIT, INIT_UNIT])
