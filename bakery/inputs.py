"""What identifies a build on every target: the hash of its inputs and the commit.

The inputs of an image are the rendered folder (HCL, `render.json` with the whole
merged config and the Packer version, and the stage: every file uploaded to the image)
plus the image it starts from (the local base image, or the AWS source AMI). Equal
hashes mean equal bakes; the local build skips a role whose hash is unchanged, and
both targets tag and record it.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bakery.config import REPO_ROOT
from bakery.render import RenderedRole

# What a build writes into the rendered folder itself: not inputs, so not hashed.
RUN_OUTPUTS = frozenset(
    {"packer-manifest.json", "run.pkrvars.hcl", "packer.log", "manifest", "packer_cache"}
)


@dataclass(frozen=True)
class RunInputs:
    """What identifies a build: the hash of its inputs and the commit that rendered it."""

    inputs_hash: str
    git_commit: str


def _input_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        outputs = relative.parts[0] in RUN_OUTPUTS or "__pycache__" in relative.parts
        if path.is_file() and not outputs:
            yield path


def inputs_hash(rendered: RenderedRole, source_image: str = "") -> str:
    """A short hash of the rendered folder's inputs and the image the bake starts from.

    `source_image` names that image (the local base image's inputs hash, or the AMI id
    of the AWS source image); the same folder and source give the same hash on any
    target.
    """
    digest = hashlib.sha256()
    if source_image:
        digest.update(b"source-image\0" + source_image.encode() + b"\0")
    for path in _input_files(rendered.directory):
        digest.update(path.relative_to(rendered.directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The commit of the bakery repo, `+dirty` with uncommitted changes, or `unknown`."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=30
        )
        if result.returncode != 0:
            raise OSError(result.stderr.strip())
        return result.stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_inputs(rendered: RenderedRole, source_image: str = "") -> RunInputs:
    """The identity of one build of `rendered` from `source_image`."""
    return RunInputs(inputs_hash(rendered, source_image), git_commit())
