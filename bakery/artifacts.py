"""What the host prepares for a bake and the image receives in `stage/artifacts/`.

- `wheelhouse/`: the backend's hash-pinned wheels for the guest's Python (3.11,
  manylinux x86_64 or aarch64, by `arch`), so the guest installs with `--no-index
  --require-hashes` and never resolves or compiles anything under emulation.
- `app/`: the role's application files (backend code or the static frontend).
- `agent/`: the CloudWatch agent test double (local target only), built here from
  `tests/doubles/` and verified by sha256 on the image like any pinned package.
- `ca/bake-ca.pem`: an extra CA bundle for a corporate HTTPS proxy, trusted during
  the bake only; the seal step removes it.

Wheelhouse and agent package are cached by the hash of what they are made from.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bakery import processes
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.errors import OperationFailed
from bakery.progress import Progress

APP_SOURCES = {"backend": REPO_ROOT / "app" / "backend", "frontend": REPO_ROOT / "app" / "frontend"}
REQUIREMENTS = REPO_ROOT / "app" / "backend" / "requirements.txt"
AGENT_DOUBLE_SOURCES = REPO_ROOT / "tests" / "doubles" / "cloudwatch_agent"
# The double's .deb Architecture per image arch (tests/doubles/cloudwatch_agent/build_deb).
AGENT_DOUBLE_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}
GUEST_PYTHON = "3.11"  # Debian 12's python3; Amazon Linux 2023 installs python3.11
# The wheel platform tags the guest accepts, per image architecture (arm64 is aarch64
# in wheel tags); requirements.txt pins the hashes of every platform's files.
GUEST_PLATFORMS = {
    "x86_64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "arm64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
}


@dataclass(frozen=True)
class AgentPackage:
    """A package file staged for the image and the sha256 the image checks it against."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class Artifacts:
    """A folder of files for `stage/artifacts/`, and the agent package in it, if any."""

    directory: Path
    agent_package: AgentPackage | None


def tree_hash(paths: list[Path], root: Path) -> str:
    """sha256 over relative names and contents of the files below `paths`."""
    digest = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _run(command: list[str], what: str, cwd: Path = REPO_ROOT) -> None:
    result = processes.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise OperationFailed(f"{what} failed (exit {result.returncode}):\n{tail}")


def _pinned_hashes(requirements: Path) -> tuple[int, set[str]]:
    """(how many packages, every sha256 allowed) of a `--generate-hashes` file."""
    text = requirements.read_text()
    packages = sum(1 for line in text.splitlines() if line[:1].strip() and not line.startswith("#"))
    return packages, set(re.findall(r"--hash=sha256:([0-9a-f]{64})", text))


def wheelhouse_intact(folder: Path) -> bool:
    """One wheel per pinned package, each with a sha256 that requirements.txt pins: a
    truncated, corrupted or missing wheel fails here, not under pip in the guest."""
    packages, allowed = _pinned_hashes(folder / "requirements.txt")
    wheels = sorted(folder.glob("*.whl"))
    return len(wheels) == packages and all(
        hashlib.sha256(wheel.read_bytes()).hexdigest() in allowed for wheel in wheels
    )


def ensure_wheelhouse(cache_dir: Path, progress: Progress, role: str, arch: str = "x86_64") -> Path:
    """The backend's wheels for the guest's architecture, downloaded once per
    requirements.txt and architecture."""
    key = tree_hash([REQUIREMENTS], REPO_ROOT)[:16]
    # x86_64 keeps the folder it had before arm64, so existing caches stay valid.
    folder = cache_dir / "wheelhouse" / (key if arch == "x86_64" else f"{key}-{arch}")
    if (folder / "requirements.txt").is_file():
        if wheelhouse_intact(folder):
            return folder
        progress.say(role, f"the cached wheelhouse {folder} fails its hashes: downloading again")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    platforms = [arg for platform in GUEST_PLATFORMS[arch] for arg in ("--platform", platform)]
    with progress.step(role, "download the wheelhouse"):
        try:
            _run(
                [
                    sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", *platforms, "--python-version", GUEST_PYTHON,
                    "--implementation", "cp", "--require-hashes",
                    "-r", str(REQUIREMENTS), "-d", str(scratch),
                ],
                "pip download of the backend's wheelhouse",
            )  # fmt: skip
            shutil.copyfile(REQUIREMENTS, scratch / "requirements.txt")
            shutil.rmtree(folder, ignore_errors=True)
            scratch.rename(folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return folder


def ensure_agent_double(
    cache_dir: Path, progress: Progress, role: str, arch: str = "x86_64"
) -> Path:
    """The test double's .deb for the image's architecture, built once per version of its
    sources and architecture."""
    key = tree_hash([AGENT_DOUBLE_SOURCES], REPO_ROOT)[:16]
    debian_arch = AGENT_DOUBLE_ARCHITECTURES[arch]
    # x86_64 keeps the folder it had before arm64, as the wheelhouse does.
    folder = cache_dir / "agent-double" / (key if arch == "x86_64" else f"{key}-{debian_arch}")
    built = sorted(folder.glob("*.deb")) if folder.is_dir() else []
    if built:
        return built[0]
    scratch = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with progress.step(role, "build the CloudWatch agent test double"):
        try:
            _run(
                [sys.executable, "-m", "tests.doubles.cloudwatch_agent.build_deb",
                 "--out", str(scratch), "--arch", debian_arch],
                "building the agent test double (tests/doubles/cloudwatch_agent)",
            )  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            scratch.rename(folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return sorted(folder.glob("*.deb"))[0]


def extra_ca_pem(cfg: BakeryConfig) -> bytes | None:
    """The configured extra CA bundle as one PEM blob (a file, or a folder of *.crt)."""
    setting = cfg.local.extra_ca_bundle
    if not setting:
        return None
    path = Path(setting)  # load_config has checked that it exists
    if path.is_dir():
        blobs = [crt.read_bytes() for crt in sorted(path.glob("*.crt"))]
        return b"\n".join(blobs) if blobs else None
    return path.read_bytes()


def prepare_artifacts(cfg: BakeryConfig, cache_dir: Path, progress: Progress) -> Artifacts:
    """Assemble the role's artifacts in a fresh folder under the cache."""
    role = cfg.role
    directory = cache_dir / "artifacts" / cfg.target / role
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if role == "backend":
        wheelhouse = ensure_wheelhouse(cache_dir, progress, role, cfg.arch)
        shutil.copytree(wheelhouse, directory / "wheelhouse")
    if role in APP_SOURCES:
        shutil.copytree(
            APP_SOURCES[role], directory / "app", ignore=shutil.ignore_patterns("__pycache__")
        )
    agent: AgentPackage | None = None
    if cfg.agent.package == "test-double":
        deb = ensure_agent_double(cache_dir, progress, role, cfg.arch)
        (directory / "agent").mkdir()
        shutil.copyfile(deb, directory / "agent" / deb.name)
        agent = AgentPackage(deb.name, hashlib.sha256(deb.read_bytes()).hexdigest())
    pem = extra_ca_pem(cfg)
    if pem:
        (directory / "ca").mkdir()
        (directory / "ca" / "bake-ca.pem").write_bytes(pem)
    return Artifacts(directory, agent)
