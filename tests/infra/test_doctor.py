"""The on-instance doctor agrees that the instance is ready for Application Signals."""

from __future__ import annotations

import json
from typing import Any

from roles import ALL

ROLES = ALL

DOCTOR = "/usr/local/bin/appsignals-doctor"


def test_doctor_is_installed_for_root_only_to_change(host: Any) -> None:
    doctor = host.file(DOCTOR)
    assert doctor.exists, f"{DOCTOR} is missing: the image predates the doctor?"
    assert (doctor.user, doctor.group, doctor.mode) == ("root", "root", 0o755)


def test_doctor_passes_and_prints_its_table(host: Any, role: str) -> None:
    result = host.run("sudo %s", DOCTOR)
    # The whole table on failure: each row that is not ok carries its fix.
    assert result.rc == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"appsignals-doctor: {role} instance"
    assert lines[1].split() == ["CHECK", "STATUS", "DETAIL"]
    assert lines[-1] == "result: ok"


def test_doctor_json_names_the_role_and_every_check_passes(host: Any, role: str) -> None:
    document = json.loads(host.run("sudo %s --json", DOCTOR).stdout)
    assert document["role"] == role
    assert [row for row in document["checks"] if row["status"] == "FAIL"] == []
    assert document["ok"] is True
