"""bakery/cli.py: results on stdout, progress and diagnostics on stderr."""

from __future__ import annotations

import subprocess
import sys

from bakery.config import REPO_ROOT


def _invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_images_table_goes_to_stdout_so_it_can_be_piped() -> None:
    listed = _invoke("images", "--role", "frontend")
    assert listed.returncode == 0, listed.stderr
    assert "local images" in listed.stdout and "frontend" in listed.stdout
    assert "local images" not in listed.stderr


def test_bad_input_goes_to_stderr_and_nothing_to_stdout() -> None:
    refused = _invoke("images", "--role", "cache")
    assert refused.returncode == 2
    assert "--role cache" in refused.stderr and refused.stdout == ""
