"""The backend's wheelhouse follows `arch` (bakery/artifacts.py): aarch64 wheels for an
arm64 guest, in a folder of their own, still held to requirements.txt's hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from rich.console import Console

from bakery import artifacts
from bakery.config import REPO_ROOT
from bakery.progress import Progress


@pytest.fixture
def pip_download_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """pip download replaced by a test double writing one wheel; the commands it got."""
    wheel = b"PK\x03\x04 a wheel"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        f"demo==1.0 \\\n    --hash=sha256:{hashlib.sha256(wheel).hexdigest()}\n    # via x\n"
    )
    commands: list[list[str]] = []

    def download(command: list[str], what: str, cwd: Path = REPO_ROOT) -> None:
        target = Path(command[command.index("-d") + 1])
        target.mkdir(parents=True, exist_ok=True)
        (target / "demo-1.0-py3-none-any.whl").write_bytes(wheel)
        commands.append(command)

    monkeypatch.setattr(artifacts, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(artifacts, "REQUIREMENTS", requirements)
    monkeypatch.setattr(artifacts, "_run", download)
    return commands


def _platforms(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]


def test_arm64_wheelhouse_asks_for_aarch64_wheels_in_a_folder_of_its_own(
    tmp_path: Path, pip_download_double: list[list[str]]
) -> None:
    progress = Progress(Console())
    x86 = artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend")
    arm = artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend", "arm64")
    assert x86 != arm and arm.name == f"{x86.name}-arm64"
    x86_command, arm_command = pip_download_double
    assert _platforms(x86_command) == list(artifacts.GUEST_PLATFORMS["x86_64"])
    assert _platforms(arm_command) and all(p.endswith("_aarch64") for p in _platforms(arm_command))
    for command in pip_download_double:
        assert "--require-hashes" in command and "--only-binary=:all:" in command
    assert artifacts.wheelhouse_intact(arm)
    # Cached per arch: asking again downloads nothing.
    artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend", "arm64")
    assert len(pip_download_double) == 2
