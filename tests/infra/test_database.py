"""The database: MariaDB on 3306, hardened, with the app's database and user made at
first boot from the launch settings, and the password kept only in launch.env."""

from __future__ import annotations

from typing import Any

from guest import listens

ROLES = {"database"}

LAUNCH_ENV = "/etc/bakery/launch.env"
# Where a leaked password would persist: configuration, programs and their data, homes,
# logs (the journal keeps short fields uncompressed, so grep finds them there too) and
# cloud-init's records. Left out: /proc, /sys, /run and /dev (not on disk; the backend
# keeps its SSM-read password in /run on purpose) and /var/lib/mysql, the server's own
# binary data, which holds only the password's hash.
SEARCHED = ("/etc", "/opt", "/home", "/root", "/usr/local", "/srv", "/tmp", "/var")
NOT_SEARCHED = ("/var/lib/mysql",)
# cloud-init keeps the user data it was given (user-data.txt and its parsed forms): the
# launch settings arrive that way, so the password is there too, as on any instance
# given secrets in user data. Accepted only while root alone can read those files.
CLOUD_INIT_RECORDS = "/var/lib/cloud/instances/"


def query(host: Any, sql: str) -> list[str]:
    """Rows of a query run as MariaDB's root (unix socket), one tab-separated line each."""
    output = host.check_output("sudo mariadb --batch --skip-column-names -e %s", sql)
    return [line for line in output.splitlines() if line]


def files_containing(host: Any, text: str) -> list[str]:
    prune = " ".join(f"-path {path} -prune -o" for path in NOT_SEARCHED)
    search = (
        "IFS= read -r SECRET; "
        f"find {' '.join(SEARCHED)} -xdev {prune} -type f -print0 2>/dev/null"
        ' | xargs -0 -r grep -lsF -e "$SECRET" || true'
    )
    # The secret goes in on stdin: on sudo's command line it would land in the journal.
    output = host.check_output("printf '%%s\\n' %s | sudo sh -c %s", text, search)
    return sorted(line for line in output.splitlines() if line)


def test_mariadb_is_enabled_running_and_listening_on_3306(host: Any) -> None:
    mariadb = host.service("mariadb")
    assert mariadb.is_enabled
    assert mariadb.is_running
    assert listens(host, 3306)


def test_app_database_init_succeeded(host: Any) -> None:
    init = host.service("bakery-database-init")
    assert init.is_enabled
    assert init.systemd_properties["Result"] == "success"


def test_no_anonymous_users(host: Any) -> None:
    assert (
        query(host, "SELECT CONCAT(User, '@', Host) FROM mysql.global_priv WHERE User = ''") == []
    )


def test_no_test_database(host: Any) -> None:
    assert query(host, "SHOW DATABASES LIKE 'test'") == []


def test_app_user_was_created_from_the_launch_settings(host: Any, expect: dict[str, Any]) -> None:
    user = expect["db_user"].replace("'", "")
    assert query(host, f"SELECT Host FROM mysql.global_priv WHERE User = '{user}'") == ["%"]
    assert query(host, f"SHOW DATABASES LIKE '{expect['db_name']}'") == [expect["db_name"]]


def test_app_user_logs_in_with_the_launch_time_password(host: Any, expect: dict[str, Any]) -> None:
    result = host.run(
        "MYSQL_PWD=%s mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u %s -D %s "
        "--batch --skip-column-names -e 'SELECT CURRENT_USER()'",
        expect["db_password"],
        expect["db_user"],
        expect["db_name"],
    )
    # Not the command in the message: it holds the password.
    assert result.rc == 0, f"login as {expect['db_user']} failed: {result.stderr.strip()}"
    assert result.stdout.strip() == f"{expect['db_user']}@%"


def test_password_is_stored_only_in_launch_env(host: Any, expect: dict[str, Any]) -> None:
    found = files_containing(host, expect["db_password"])
    assert LAUNCH_ENV in found, "the search did not even find launch.env"
    cloud_init = [path for path in found if path.startswith(CLOUD_INIT_RECORDS)]
    for record in cloud_init:
        owner, mode = host.check_output("sudo stat -c '%%U %%a' %s", record).split()
        assert owner == "root" and int(mode, 8) & 0o077 == 0, f"{record}: {owner} {mode}"
    assert [path for path in found if path != LAUNCH_ENV and path not in cloud_init] == []
    assert host.check_output("sudo stat -c '%%U %%a' %s", LAUNCH_ENV) == "root 600"
