"""The Packer binary for every target: finding it, knowing what its version accepts,
running it (environment, log, Ctrl-C) and reading what a run left behind (manifests).

There is one runner, `run_packer`; the local and AWS builds, `validate` and `fmt` all
go through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery import processes
from bakery.errors import BadInput, MissingTool, OperationFailed

INSTALL_HINT = (
    "install it with `apt-get install packer` (1.6.x) or HashiCorp's release (>= 1.10), "
    "or run `./scripts/run invoke host-check`"
)


@dataclass(frozen=True)
class PackerVersion:
    """What one Packer release accepts; templates are rendered for exactly this."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def has_plugin_system(self) -> bool:
        """>= 1.7: `required_plugins` and `packer init`; 1.6 rejects the block."""
        return (self.major, self.minor) >= (1, 7)

    @property
    def has_modern_amazon_plugin(self) -> bool:
        """The amazon plugin of 1.7+ knows imds_support, metadata_options, deprecate_at,
        ami_org_arns; 1.6's built-in amazon-ebs rejects all four."""
        return self.has_plugin_system

    @classmethod
    def parse(cls, text: str) -> PackerVersion:
        match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
        if not match:
            raise OperationFailed(f"cannot read Packer's version from {text.strip()!r}")
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)


def packer_binary() -> str:
    found = shutil.which("packer")
    if found is None:
        raise MissingTool("packer", INSTALL_HINT)
    return found


# PACKER_* variables that change where Packer logs or caches, never what it builds.
HARMLESS_PACKER_VARIABLES = frozenset(
    {"PACKER_LOG", "PACKER_LOG_PATH", "PACKER_CACHE_DIR", "PACKER_TMP_DIR", "PACKER_NO_COLOR"}
)


def packer_environment(**settings: str) -> dict[str, str]:
    """The environment every Packer run gets: this process's, plus `settings`, with no
    update check. PKR_VAR_* (variable values) and PACKER_* (plugins, config file, ...)
    would change the build past bakery's validation and its record: refused, named."""
    leaks = sorted(
        name
        for name in os.environ
        if name.startswith("PKR_VAR_")
        or (name.startswith("PACKER_") and name not in HARMLESS_PACKER_VARIABLES)
    )
    if leaks:
        raise BadInput(
            f"environment variable {leaks[0]} is set: Packer would use it instead of "
            f"bakery's validated config; unset {' '.join(leaks)} (settings go in a config "
            "file or --set KEY=VALUE)"
        )
    # Packer 1.6 phones home for update checks; CI and offline machines must not wait.
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1", **settings}


def detect_version() -> PackerVersion:
    """Ask the installed Packer for its version (after checking its environment, so a
    leaking variable is refused before anything is rendered or built)."""
    env = packer_environment()
    result = subprocess.run(
        [packer_binary(), "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    if result.returncode != 0:
        raise OperationFailed(f"`packer version` failed: {result.stderr.strip()}")
    return PackerVersion.parse(result.stdout)


def stop_packer(process: subprocess.Popen[str], grace_s: float | None = None) -> None:
    """Ctrl-C for Packer: one SIGINT, then wait while it removes what it created.

    `grace_s` bounds the wait (then Packer is killed); None waits as long as it takes,
    which a cloud clean-up may need.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_packer(
    args: list[str],
    cwd: Path,
    log_path: Path | None = None,
    *,
    on_line: Callable[[str], None] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    on_interrupt: Callable[[], None] | None = None,
    stop_grace_s: float | None = None,
) -> str:
    """Run one Packer command in `cwd` for every caller (build, validate, fmt); its output.

    Each line goes to `log_path` (when given) and to `on_line`. Packer runs in its own
    session, so a terminal's Ctrl-C reaches only bakery, which forwards one SIGINT
    (see `stop_packer`) and waits for Packer's clean-up. `on_start` is told the
    process, so a caller running several Packers from threads can stop each of them;
    `on_interrupt` is told when bakery starts waiting for an interrupted Packer.
    A non-zero exit raises OperationFailed with the output's tail and the log's path.
    """
    output: list[str] = []
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(log_path.open("w", encoding="utf-8")) if log_path else None
        process = stack.enter_context(
            processes.spawn(
                [packer_binary(), *args],
                cwd=cwd,
                env=packer_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
        if on_start is not None:
            on_start(process)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                output.append(line)
                if log is not None:
                    log.write(line)
                    log.flush()
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            code = process.wait()
        except BaseException:
            if on_interrupt is not None and process.poll() is None:
                on_interrupt()
            stop_packer(process, stop_grace_s)
            raise
    if code != 0:
        tail = "\n".join(line.rstrip("\n") for line in output[-20:])
        where = f"; full log: {log_path}" if log_path else ""
        raise OperationFailed(f"packer {args[0]} failed in {cwd} (exit {code}){where}\n{tail}")
    return "".join(output)


# ---------------------------------------------------------------------------------------
# What a build leaves in the rendered folder


def manifest_run_uuids(manifest: Path) -> set[str]:
    """Packer's run uuids already in its manifest (Packer appends one entry per run)."""
    if not manifest.exists():
        return set()
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return {str(build.get("packer_run_uuid")) for build in data.get("builds", [])}


def this_run_artifacts(manifest: Path, earlier: set[str]) -> tuple[str, list[str]]:
    """(Packer's run uuid, artifact ids) of the run that just finished, from the manifest."""
    data: dict[str, Any] = (
        json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else {}
    )
    run_uuid = str(data.get("last_run_uuid") or "")
    if not run_uuid or run_uuid in earlier:
        raise OperationFailed(f"Packer finished but recorded no artifact of this run in {manifest}")
    artifacts = [
        artifact
        for build in data.get("builds", [])
        if build.get("packer_run_uuid") == run_uuid
        for artifact in str(build.get("artifact_id", "")).split(",")
        if artifact
    ]
    return run_uuid, artifacts


def read_image_manifest(rendered_dir: Path) -> dict[str, Any]:
    """What the record-manifest step downloaded: packages, pip freeze, agent version,
    and the inventory (owned files, enabled units, ports, users) under `inventory`."""
    # Packer 1.6's download of a folder may nest it once more; take it where it landed.
    found_at = sorted((rendered_dir / "manifest").rglob("manifest.json"))
    folder = found_at[0].parent if found_at else rendered_dir / "manifest"
    found: dict[str, Any] = {}
    if (folder / "manifest.json").is_file():
        found = json.loads((folder / "manifest.json").read_text())
    if (folder / "inventory.json").is_file():
        found["inventory"] = json.loads((folder / "inventory.json").read_text())
    for name in ("packages.txt", "pip-freeze.txt", "agent-version.txt"):
        if (folder / name).is_file():
            found[name.rsplit(".", 1)[0].replace("-", "_")] = (
                (folder / name).read_text().splitlines()
            )
    return found
