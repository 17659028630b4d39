"""Build the amazon-cloudwatch-agent TEST DOUBLE .deb, reproducibly.

Owns turning `root/` (a tree mirroring `/` on the image) and `DEBIAN/` beside this module,
plus the agent's JSON schema from the shared reference data, into
`amazon-cloudwatch-agent_<DOUBLE_VERSION>_<arch>.deb` (amd64 or arm64: the double is
Python and shell only, so the Architecture field is its only difference, and it is what
dpkg checks against the image). The same inputs give the same bytes, so the bake's input
hash stays stable.

    python -m tests.doubles.cloudwatch_agent.build_deb --out DIR [--arch arm64] [--schema PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# "+bakery.testdouble" keeps the double recognisable wherever its version shows (dpkg -l,
# CWAGENT_VERSION, ctl status); the real agent's versions look like 1.300040.0b650.
DOUBLE_VERSION = "0.1.0+bakery.testdouble"
PACKAGE = "amazon-cloudwatch-agent"
ARCHITECTURE = "amd64"  # the default: x86_64 images
# Debian's architecture name for each image arch bakery bakes (dpkg refuses the others).
DEBIAN_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}
AGENT_HOME = Path("opt/aws/amazon-cloudwatch-agent")

_HERE = Path(__file__).resolve().parent
SOURCE_ROOT = _HERE / "root"
DEBIAN_TEMPLATES = _HERE / "DEBIAN"
# shared/ lies beside the repository's checkout; its reference data is never copied in.
DEFAULT_SCHEMA_PATH = _HERE.parents[3] / "shared" / "reference" / "cloudwatch-agent-schema.json"

# Fixed, not taken from the environment or git: a new commit must not change the package.
_SOURCE_DATE_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
_EXECUTABLES = {
    AGENT_HOME / "bin" / "amazon-cloudwatch-agent",
    AGENT_HOME / "bin" / "amazon-cloudwatch-agent-ctl",
    Path("DEBIAN/postinst"),
    Path("DEBIAN/prerm"),
    Path("DEBIAN/postrm"),
}
# Created empty, as in the real package; git cannot hold empty folders.
_EMPTY_DIRS = ("etc", "logs", "var")


class DebBuildError(Exception):
    """The double's package could not be built; the message says what to fix."""


def deb_filename(version: str = DOUBLE_VERSION, architecture: str = ARCHITECTURE) -> str:
    return f"{PACKAGE}_{version}_{architecture}.deb"


def _check_schema(schema_path: Path) -> None:
    try:
        json.loads(schema_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DebBuildError(
            f"agent schema not found at {schema_path}: pass --schema with the path to"
            " cloudwatch-agent-schema.json (shared/reference/ beside the repo)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise DebBuildError(f"agent schema {schema_path} is not readable JSON: {exc}") from exc


def _stage(package_dir: Path, schema_path: Path, architecture: str) -> None:
    """Lay out the package tree: the sources, generated files and DEBIAN control files."""
    shutil.copytree(SOURCE_ROOT, package_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    home = package_dir / AGENT_HOME
    for name in _EMPTY_DIRS:
        (home / name).mkdir(parents=True, exist_ok=True)
    (home / "bin" / "CWAGENT_VERSION").write_text(DOUBLE_VERSION + "\n", encoding="utf-8")
    (home / "doc").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(schema_path, home / "doc" / "amazon-cloudwatch-agent-schema.json")

    control_dir = package_dir / "DEBIAN"
    control_dir.mkdir()
    control = (DEBIAN_TEMPLATES / "control.in").read_text(encoding="utf-8")
    (control_dir / "control").write_text(
        control.replace("@VERSION@", DOUBLE_VERSION).replace("@ARCHITECTURE@", architecture),
        encoding="utf-8",
    )
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(DEBIAN_TEMPLATES / script, control_dir / script)


def _normalise(package_dir: Path) -> None:
    """Give every entry fixed modes and mtimes, whatever the checkout's umask and clock."""
    entries = sorted(package_dir.rglob("*"))
    for entry in entries:
        relative = entry.relative_to(package_dir)
        if entry.is_dir() or relative in _EXECUTABLES:
            entry.chmod(0o755)
        else:
            entry.chmod(0o644)
    for entry in [*entries, package_dir]:
        os.utime(entry, (_SOURCE_DATE_EPOCH, _SOURCE_DATE_EPOCH), follow_symlinks=False)


def build_deb(
    out_dir: Path, schema_path: Path = DEFAULT_SCHEMA_PATH, architecture: str = ARCHITECTURE
) -> Path:
    """Build the double's .deb for a Debian `architecture` into out_dir; its path."""
    if architecture not in DEBIAN_ARCHITECTURES.values():
        raise DebBuildError(
            f"--arch {architecture}: choose one of {', '.join(DEBIAN_ARCHITECTURES.values())}"
        )
    if shutil.which("dpkg-deb") is None:
        raise DebBuildError("dpkg-deb is not installed: apt-get install dpkg")
    _check_schema(schema_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / deb_filename(architecture=architecture)
    with tempfile.TemporaryDirectory(prefix="cwagent-double-") as staging:
        package_dir = Path(staging) / "pkg"
        _stage(package_dir, schema_path, architecture)
        _normalise(package_dir)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(_SOURCE_DATE_EPOCH)}
        # One compressor thread: multi-threaded xz output depends on the core count.
        command = [
            "dpkg-deb",
            "--root-owner-group",
            "-Zxz",
            "--threads-max=1",
            "--build",
            str(package_dir),
            str(target),
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DebBuildError(f"dpkg-deb failed ({result.returncode}): {result.stderr.strip()}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.doubles.cloudwatch_agent.build_deb",
        description="Build the amazon-cloudwatch-agent TEST DOUBLE .deb (not the real agent).",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the .deb to")
    parser.add_argument(
        "--schema",
        type=Path,
        default=DEFAULT_SCHEMA_PATH,
        help="the agent's config JSON schema to ship (default: %(default)s)",
    )
    parser.add_argument(
        "--arch",
        default=ARCHITECTURE,
        help="the Debian architecture of the image it goes on: amd64 or arm64 "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        path = build_deb(args.out, args.schema, args.arch)
    except DebBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
