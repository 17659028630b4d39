"""Putting files on the image: from the rendered rootfs, from artifacts, or from text.

Every write compares first and reports whether it changed anything, so a second run of
a step leaves the image as it was. Everything written here is owned by root and never
group- or world-writable: the app user can read its code but not change it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError

SKIPPED_NAMES = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc", ".pyo")
PROGRAM_FOLDERS = ("/usr/local/libexec/bakery/", "/usr/local/bin/", "/usr/local/sbin/")


def _make_dirs(folder: Path) -> None:
    """Create folder and its missing parents, root-owned, 0755."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o755)
        _own_by_root(created)
        created.chmod(0o755)


def _make_parents(path: Path) -> None:
    _make_dirs(path.parent)


def _own_by_root(path: Path) -> None:
    # Only root can chown; the unit tests run the same code unprivileged too.
    if os.geteuid() == 0:
        os.chown(path, 0, 0, follow_symlinks=False)


def _needs_root_owner(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    info = path.lstat()
    return info.st_uid != 0 or info.st_gid != 0


def write_bytes(path: Path, content: bytes, mode: int = 0o644) -> bool:
    """Write content at path (root-owned, mode) unless it is already so; True if changed."""
    if mode & 0o022:
        raise ProvisionError(f"refusing to make {path} group- or world-writable ({mode:o})")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ProvisionError(f"{path} exists and is not a regular file: remove it first")
    if path.is_file():
        same = path.read_bytes() == content
        if same and (path.stat().st_mode & 0o7777) == mode and not _needs_root_owner(path):
            return False
    _make_parents(path)
    # Write beside and rename: a reader never sees half a file.
    scratch = path.with_name(f".{path.name}.bakery-tmp")
    scratch.write_bytes(content)
    _own_by_root(scratch)
    scratch.chmod(mode)
    os.replace(scratch, path)
    return True


def write_text(ctx: StepContext, absolute: str, text: str, mode: int = 0o644) -> bool:
    """Write text at an absolute image path; True if changed."""
    changed = write_bytes(ctx.path(absolute), text.encode("utf-8"), mode)
    if changed:
        ctx.say(f"wrote {absolute}")
    return changed


def source_mode(source: Path) -> int:
    """0755 for executable sources, else 0644: the renderer keeps executable bits."""
    return 0o755 if source.stat().st_mode & 0o111 else 0o644


def rootfs_mode(source: Path, absolute: str) -> int:
    """The mode of a rootfs file on the image: programs stay programs even if an upload
    dropped their executable bit (folders of programs hold no other files but modules)."""
    in_program_folder = absolute.startswith(PROGRAM_FOLDERS) and not absolute.endswith(".py")
    return 0o755 if in_program_folder else source_mode(source)


def install_from_rootfs(ctx: StepContext, absolute_paths: Iterable[str]) -> list[str]:
    """Install files from the rendered rootfs at the same paths on the image."""
    changed = []
    for absolute in absolute_paths:
        source = ctx.rootfs / absolute.lstrip("/")
        if not source.is_file():
            raise ProvisionError(
                f"{source} is missing from the stage: the rootfs was not rendered for this role"
            )
        if write_bytes(ctx.path(absolute), source.read_bytes(), rootfs_mode(source, absolute)):
            changed.append(absolute)
    if changed:
        ctx.say("installed " + ", ".join(changed))
    return changed


def install_copy(ctx: StepContext, source: Path, absolute: str, mode: int = 0o644) -> bool:
    """Install one file from anywhere (artifacts, rootfs) at an absolute image path."""
    if not source.is_file():
        raise ProvisionError(f"{source} is missing from the stage")
    changed = write_bytes(ctx.path(absolute), source.read_bytes(), mode)
    if changed:
        ctx.say(f"installed {absolute}")
    return changed


def copy_tree(ctx: StepContext, source: Path, absolute: str) -> list[str]:
    """Copy a folder's files (not bytecode) under an absolute image path, root-owned."""
    if not source.is_dir():
        raise ProvisionError(f"{source} is missing from the stage: the host build puts it there")
    changed = []
    for item in sorted(source.rglob("*")):
        relative = item.relative_to(source)
        if any(part in SKIPPED_NAMES for part in relative.parts) or item.suffix in SKIPPED_SUFFIXES:
            continue
        target = ctx.path(absolute) / relative
        if item.is_dir():
            if not target.is_dir():
                _make_dirs(target)
                changed.append(f"{absolute.rstrip('/')}/{relative.as_posix()}/")
            continue
        if write_bytes(target, item.read_bytes(), source_mode(item)):
            changed.append(f"{absolute.rstrip('/')}/{relative.as_posix()}")
    _make_dirs(ctx.path(absolute))
    if changed:
        ctx.say(f"copied {len(changed)} file(s) to {absolute}")
    return changed


def ensure_dir(ctx: StepContext, absolute: str, mode: int = 0o755) -> bool:
    """A root-owned folder at an absolute image path; True if created or changed."""
    path = ctx.path(absolute)
    if path.is_dir() and (path.stat().st_mode & 0o7777) == mode and not _needs_root_owner(path):
        return False
    _make_dirs(path)
    _own_by_root(path)
    path.chmod(mode)
    return True


def remove_path(ctx: StepContext, absolute: str) -> bool:
    """Remove a file, link or folder at an absolute image path; True if something went."""
    path = ctx.path(absolute)
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file we rendered (comments and blanks skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
