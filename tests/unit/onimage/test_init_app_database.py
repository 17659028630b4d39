"""init-app-database: the app's database and user, created from the launch settings
with the MariaDB client faked."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from program_fakes import SECRET, fake_program, load_program


@pytest.fixture
def init_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_program("init-app-database")
    monkeypatch.setenv("DB_NAME", "appdb")
    monkeypatch.setenv("DB_USER", "app")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    monkeypatch.delenv("DB_PASSWORD_SSM_PARAMETER", raising=False)
    return module


def test_database_and_user_are_created_from_the_launch_password(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    received = tmp_path / "sql"
    client = fake_program(tmp_path / "mariadb", f'echo "$@" > {received}.args\ncat > {received}\n')
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    monkeypatch.setenv("DB_PASSWORD", SECRET)

    assert init_db.main() == 0

    sql = received.read_text()
    assert "CREATE DATABASE IF NOT EXISTS `appdb`" in sql
    assert "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'p\\'a\"ss\\\\w$rd`x';" in sql
    assert "GRANT ALL PRIVILEGES ON `appdb`.* TO 'app'@'%';" in sql
    assert SECRET not in Path(f"{received}.args").read_text()
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "appdb and user app@'%' are in place (password from DB_PASSWORD)" in out.out


def test_without_a_password_nothing_is_created(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = fake_program(tmp_path / "mariadb", f"touch {tmp_path}/ran\n")
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    assert init_db.main() == 0
    assert not (tmp_path / "ran").exists()
    assert "created no database and no user" in capsys.readouterr().out


def test_client_errors_never_show_the_password(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A client that quotes the whole statement back in its error, as MariaDB does.
    client = fake_program(tmp_path / "mariadb", "cat >&2\nexit 1\n")
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    assert init_db.main() == 1
    out = capsys.readouterr()
    assert "creating appdb" in out.err
    assert SECRET not in out.err and init_db.sql_string(SECRET)[1:-1] not in out.err


def test_bad_database_names_are_refused(
    init_db: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_NAME", "app`; DROP")
    monkeypatch.setenv("DB_PASSWORD", "x")
    assert init_db.main() == 1
