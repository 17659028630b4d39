"""The host-state guard (tests/unit/host_state.py) that every unit test runs under: it must
notice each way a test can read this host instead of the repo and its temp folders."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from host_state import watching


def _try_open(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError:
        pass  # absent on this host: the attempt alone is the finding


@pytest.mark.parametrize(
    "path",
    [
        "/lib/systemd/system/mariadb.service",
        "/usr/lib/systemd/system/nginx.service",
        "/etc/systemd/system/multi-user.target.wants/x.service",
        "/var/lib/dpkg/status",
        "/etc/os-release",
        "/etc/mysql/my.cnf",
        "/etc/invoke.yaml",
        "/opt/aws/amazon-cloudwatch-agent/bin/config-translator",
    ],
)
def test_guard_notices_a_read_of_host_state(path: str) -> None:
    with watching() as reads:
        _try_open(path)
    assert reads == [f"open: {path}"]


def test_guard_notices_a_relative_path_into_host_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    with watching() as reads:
        _try_open("etc/systemd/system.conf")
    assert reads == ["open: /etc/systemd/system.conf"]


def test_guard_notices_listing_the_host_units() -> None:
    with watching() as reads, contextlib.suppress(OSError):
        os.listdir("/lib/systemd/system")
    assert reads == ["os.listdir: /lib/systemd/system"]


def test_guard_notices_programs_that_report_the_host() -> None:
    with watching() as reads:
        for argv in (["dpkg-query", "-W", "mariadb-server"], ["systemctl", "cat", "nginx"]):
            with contextlib.suppress(OSError):
                subprocess.run(argv, capture_output=True, check=False)
    assert [r.split(": ", 1)[1] for r in reads] == [
        "dpkg-query -W mariadb-server",
        "systemctl cat nginx",
    ]


def test_guard_notices_systemd_analyze_on_the_host_unit_path(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    with watching() as reads:
        for env in (
            None,
            {"SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
            {"SYSTEMD_UNIT_PATH": str(tmp_path)},
        ):
            with contextlib.suppress(OSError):
                subprocess.run(
                    ["systemd-analyze", "verify", str(unit)],
                    env=env,
                    capture_output=True,
                    check=False,
                )
    assert len(reads) == 2 and all("without a SYSTEMD_UNIT_PATH" in r for r in reads), reads


def test_guard_lets_the_repo_temp_folders_and_the_runtime_through(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    with watching() as reads:
        (tmp_path / "a").read_text()
        Path(__file__).read_text()
        _try_open("/etc/localtime")
        os.listdir(tmp_path)
    assert reads == []
