"""The checks docs/launch-settings.md gives a person for an instance ("Checking on an
instance") work as written: each line runs on the instance, as the login user, for the
roles it is for, and shows what the doc says it shows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from roles import ALL

ROLES = ALL

DOC = Path(__file__).resolve().parents[2] / "docs" / "launch-settings.md"
SECTION = "### Checking on an instance"

Expectation = Callable[[Any, dict[str, Any]], None]  # (the command's result, expect)


def documented_lines() -> list[str]:
    """The lines of the section's sh block, without their trailing comments."""
    section = DOC.read_text(encoding="utf-8").split(SECTION, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"{DOC}: no sh block under {SECTION!r}"
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines())
    return [line for line in lines if line]


def output(result: Any) -> str:
    return f"{result.stdout}{result.stderr}"


def agent_units_active(result: Any, expect: dict[str, Any]) -> None:
    # systemctl status exits 0 only when every unit it names is active.
    assert result.rc == 0, output(result)
    for unit in ("bakery-agent-config.service", "amazon-cloudwatch-agent.service"):
        assert unit in result.stdout, output(result)


def translation_names_mode_and_log_group(result: Any, expect: dict[str, Any]) -> None:
    # translate-agent-config logs `mode M; log group G; config F` at each boot.
    mode = "ec2" if expect["target"] == "aws" else "onPremise"
    log_group = rf"({re.escape(expect['log_group'])}|\(as baked\))"
    assert result.rc == 0, output(result)
    assert re.search(rf"mode {mode}; log group {log_group}; ", output(result)), output(result)


def app_running(result: Any, expect: dict[str, Any]) -> None:
    assert result.rc == 0, output(result)
    assert "Active: active (running)" in output(result), output(result)


def app_healthy(result: Any, expect: dict[str, Any]) -> None:
    assert result.rc == 0, output(result)
    assert result.stdout.strip() == '{"status":"ok"}', output(result)


def upstream_from_backend_url(result: Any, expect: dict[str, Any]) -> None:
    assert result.rc == 0, output(result)
    assert "upstream bakery_backend {" in result.stdout, output(result)
    assert f"from BACKEND_URL={expect['backend_url']}\n" in result.stdout, output(result)


def database_and_user_made(result: Any, expect: dict[str, Any]) -> None:
    made = f"database {expect['db_name']} and user {expect['db_user']}@'%' are in place"
    assert result.rc == 0, output(result)
    assert made in output(result), output(result)
    assert expect["db_password"] not in output(result), "the journal holds the password"


# Each documented line: the roles it is for (its comment in the doc) and what it shows.
CHECKS: dict[str, tuple[frozenset[str], Expectation]] = {
    "systemctl status bakery-agent-config amazon-cloudwatch-agent": (ALL, agent_units_active),
    "journalctl -u bakery-agent-config -b": (ALL, translation_names_mode_and_log_group),
    "systemctl status fastapi-otel": (frozenset({"backend"}), app_running),
    "python3 -c 'import urllib.request as u; "
    """print(u.urlopen("http://localhost:8000/health").read().decode())'""": (
        frozenset({"backend"}),
        app_healthy,
    ),
    "cat /etc/nginx/conf.d/bakery-upstream.conf": (
        frozenset({"frontend"}),
        upstream_from_backend_url,
    ),
    "journalctl -u bakery-database-init -b": (frozenset({"database"}), database_and_user_made),
}


def _cases() -> list[Any]:
    cases = []
    for line in documented_lines():
        roles = CHECKS[line][0] if line in CHECKS else ALL
        cases.append(pytest.param(line, marks=pytest.mark.roles(*sorted(roles)), id=line[:40]))
    return cases


@pytest.mark.parametrize("line", _cases())
def test_documented_check(host: Any, expect: dict[str, Any], line: str) -> None:
    assert line in CHECKS, (
        f"{DOC.name} shows `{line}` for an instance: add what it must show to CHECKS in "
        f"{Path(__file__).name}"
    )
    result = host.run(line)
    CHECKS[line][1](result, expect)
