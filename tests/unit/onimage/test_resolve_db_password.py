"""resolve-db-password: the backend's database password in a root-only env file in /run."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from program_fakes import SECRET, load_program, read_systemd_env_line


def test_backend_secret_file_is_root_only_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_program("resolve-db-password")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    monkeypatch.setattr(module, "resolve_db_password", lambda environ: (SECRET, "SSM parameter /x"))
    output = tmp_path / "run" / "db-password.env"

    assert module.main(["resolve-db-password", str(output)]) == 0

    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    [line] = [x for x in output.read_text().splitlines(True) if not x.startswith("#")]
    assert read_systemd_env_line(line) == ("DB_PASSWORD", SECRET)


def test_backend_secret_file_goes_when_launch_env_has_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_program("resolve-db-password")
    output = tmp_path / "db-password.env"
    output.write_text("DB_PASSWORD='old'\n")
    monkeypatch.setenv("DB_PASSWORD", "direct")
    assert module.main(["resolve-db-password", str(output)]) == 0
    assert not output.exists()
