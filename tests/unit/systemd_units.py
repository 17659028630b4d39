"""systemd-analyze on rendered units without this host's units: a temp unit search path
with the rendered units, their drop-ins and a stand-in for every unit they reference."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

UNIT_DIR = "etc/systemd/system"

# Keys whose values name other units; verify loads each of them, so each needs a file.
UNIT_REFERENCE_KEYS = (
    "After", "Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds",
    "Conflicts", "OnFailure", "OnSuccess", "WantedBy", "RequiredBy", "UpheldBy", "Also",
)  # fmt: skip
# The units systemd adds to every service by default (DefaultDependencies=yes).
DEFAULT_DEPENDENCIES = ("sysinit.target", "basic.target", "shutdown.target")
EXEC_LINE = re.compile(r"^(Exec[A-Za-z]+=[-@:+!]*)(/\S+)", re.M)


def referenced_units(text: str) -> set[str]:
    """The unit names a unit file's dependency keys mention."""
    names: set[str] = set()
    for key in UNIT_REFERENCE_KEYS:
        for match in re.finditer(rf"^{key}=(.*)$", text, re.M):
            names.update(match.group(1).split())
    return names


def hermetic_unit_tree(stages: Iterable[Path], out: Path) -> tuple[Path, list[Path]]:
    """A unit search path that holds only the rendered units of `stages` and drop-ins, and a
    stub for each unit they reference: verify then never reads the host's /lib/systemd or
    /etc/systemd (a host without MariaDB, nginx or the agent sees the same result). Every
    program a unit runs is replaced by an executable stub for the same reason."""
    stub = out / "stub-program"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    tree = out / "units"
    tree.mkdir()
    ours: list[Path] = []
    referenced = set(DEFAULT_DEPENDENCIES)
    for stage in stages:
        rendered = stage / "rootfs" / UNIT_DIR
        for source in sorted(p for p in rendered.rglob("*") if p.is_file()):
            text = EXEC_LINE.sub(lambda m: m.group(1) + str(stub), source.read_text())
            referenced |= referenced_units(text)
            target = tree / source.relative_to(rendered)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            if target.parent == tree:
                ours.append(target)
            else:  # a drop-in extends a unit the image's packages ship
                referenced.add(target.parent.name.removesuffix(".d"))
    for name in sorted(referenced):
        if not (tree / name).exists():
            kind = "Service" if name.endswith(".service") else None
            body = f"[Unit]\nDescription=stand-in for {name}\n"
            if kind:
                body += f"\n[Service]\nExecStart={stub}\n"
            (tree / name).write_text(body)
    return tree, ours


def systemd_analyze(tree: Path, *arguments: str, cwd: Path | None = None) -> str:
    """systemd-analyze with `tree` as its only unit search path (no trailing ':', so the
    built-in host paths are not appended); returns stdout and stderr together."""
    result = subprocess.run(
        ["systemd-analyze", *arguments],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYSTEMD_UNIT_PATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"
