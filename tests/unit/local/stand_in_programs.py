"""A PATH of stand-in programs (test doubles) for the host checks' "is it installed" tests."""

from __future__ import annotations

from pathlib import Path


def path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only stand-in executables with these names, each exiting 0."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in programs:
        double = folder / program
        double.write_text("#!/bin/sh\nexit 0\n")
        double.chmod(0o755)
    return str(folder)
