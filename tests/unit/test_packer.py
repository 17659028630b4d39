"""Running Packer: output streamed and logged, failures with their tail, Ctrl-C forwarded."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery import packer
from bakery.errors import OperationFailed


def fake_packer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, shebang: str = "#!/bin/sh"
) -> None:
    path = tmp_path / "packer"
    path.write_text(f"{shebang}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(packer, "packer_binary", lambda: str(path))


def test_output_is_logged_and_failure_shows_its_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_packer(tmp_path, monkeypatch, 'echo "==> starting $1"\necho "error: no AMI" >&2\nexit 3\n')
    log = tmp_path / "packer.log"
    with pytest.raises(OperationFailed) as caught:
        packer.run_packer(["build", "."], tmp_path, log)
    assert "exit 3" in str(caught.value) and "error: no AMI" in str(caught.value)
    assert str(log) in str(caught.value)
    assert log.read_text() == "==> starting build\nerror: no AMI\n"


def test_checkpoint_is_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHECKPOINT_DISABLE", raising=False)
    fake_packer(tmp_path, monkeypatch, 'echo "checkpoint=$CHECKPOINT_DISABLE"\n')
    packer.run_packer(["build", "."], tmp_path, tmp_path / "packer.log")
    assert (tmp_path / "packer.log").read_text() == "checkpoint=1\n"


def test_ctrl_c_is_forwarded_and_packer_may_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "cleaned-up"
    # Python, not sh: like Packer (Go's signal.Notify) it takes SIGINT even when it was
    # started with SIGINT ignored, as in a background job of a CI shell; sh cannot.
    fake_packer(
        tmp_path,
        monkeypatch,
        "import pathlib, signal, sys, time\n"
        "def clean_up(*_):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    sys.exit(1)\n"
        "signal.signal(signal.SIGINT, clean_up)\n"
        "print('started', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n",
        shebang=f"#!{sys.executable}",
    )

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    told: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        packer.run_packer(
            ["build", "."],
            tmp_path,
            tmp_path / "packer.log",
            on_line=interrupt,
            on_interrupt=lambda: told.append("waiting for Packer"),
        )
    assert marker.exists()
    assert told == ["waiting for Packer"]  # the user is told why bakery does not exit yet
