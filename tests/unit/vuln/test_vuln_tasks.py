"""The gate's tasks as the docs show them: `invoke vulns --role backend` on a local
record, and `invoke refresh-advisories --database PATH`, run in-process with the
security suite's fetch replaced by a stand-in (no network in unit tests)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from invoke import Config, Context
from tasks_module import load_tasks

from bakery.records import read_record, write_record

from .test_gate import SECURITY_INDEX, VULNERABLE_IDNA, backend_record


def test_invoke_vulns_rejects_a_vulnerable_record_and_records_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """invoke vulns --role backend"""
    tasks = load_tasks()
    record = write_record(backend_record(tmp_path, [VULNERABLE_IDNA]))
    monkeypatch.setattr(tasks, "local_record", lambda role, arch="x86_64": read_record(record))
    monkeypatch.setattr(
        tasks, "security_index", lambda os, arch, cache: ("stand-in index", SECURITY_INDEX)
    )

    with pytest.raises(SystemExit) as exited:
        tasks.vulns(Context(Config(lazy=True)), role=["backend"])

    assert exited.value.code == 1
    assert "vulnerability gate: PYSEC-2024-60 in idna 3.6 (fixed in 3.7)" in capsys.readouterr().err
    saved = read_record(record)
    assert saved is not None and saved.details["vulnerabilities"]["status"] == "failed"


def test_invoke_vulns_passes_a_clean_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = load_tasks()
    record = write_record(backend_record(tmp_path, ["idna==3.7"]))
    monkeypatch.setattr(tasks, "local_record", lambda role, arch="x86_64": read_record(record))
    monkeypatch.setattr(
        tasks, "security_index", lambda os, arch, cache: ("stand-in index", SECURITY_INDEX)
    )

    tasks.vulns(Context(Config(lazy=True)), role=["backend"])

    assert "backend: vulnerability gate passed: none" in capsys.readouterr().err


def test_invoke_refresh_advisories_writes_the_dated_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """invoke refresh-advisories --database PATH"""
    tasks = load_tasks()
    database = tmp_path / "advisory-database"
    (database / "vulns" / "idna").mkdir(parents=True)
    (database / "vulns" / "idna" / "PYSEC-1.yaml").write_text("id: PYSEC-1\naffected: []\n")
    git = ["git", "-C", str(database), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "advisories"], check=True)
    snapshot = tmp_path / "repo" / "config" / "advisories" / "pypi.json"
    monkeypatch.setattr(tasks, "ADVISORY_SNAPSHOT", snapshot)
    monkeypatch.setattr(tasks, "REPO_ROOT", tmp_path / "repo")

    tasks.refresh_advisories(Context(Config(lazy=True)), database=str(database))

    written = json.loads(snapshot.read_text())
    assert written["advisories"]["idna"][0]["id"] == "PYSEC-1"
    assert "idna" in written["packages"] and len(written["commit"]) == 40
