"""The processes and scratch folders a run owns, and what a dead run left behind.

A run is one bakery process (`invoke build`, `invoke verify`, the smoke test). Every
Packer, QEMU and helper it starts goes through `spawn` (or `run`), which:

- starts the child in a process group of its own (a new session), so Ctrl-C on the
  terminal reaches the run only and the run decides how its children stop;
- marks the child's environment with `BAKERY_RUN=<this run's registry>`; the mark is
  inherited by everything the child starts (QEMU under Packer, apt under mmdebstrap),
  so "a process of this run" is a fact readable in /proc, not a guess from a command line;
- tells the run's watchdog about the group. The watchdog is a small process in its own
  session, started with the run's first child, reading a pipe whose write end only the
  run holds. However the run ends (SIGKILL, OOM, a cancelled CI job), the pipe reads
  end-of-file, and the watchdog stops every registered group and every marked process
  (SIGTERM, then SIGKILL) and removes the run's claimed scratch folders;
- from the main thread, sets the parent-death signal (SIGKILL, via `setpriv`) as a
  second line of defence. Not from other threads: Linux sends it when the *thread*
  that forked exits, and a pool thread may start a VM that outlives it.

Each run has a registry folder `build/.work/runs/<pid>-<start>/` (`owner.json`, and
`folders`: the scratch folders it claimed). If the watchdog died too, `sweep` at the
start of the next run (and `invoke clean`) finds runs whose owner is dead by their
registry and their marked processes, ends them and removes what they left;
`find_leftovers` only looks (`invoke doctor`).

Standard library only (and bakery.durable): the watchdog imports this module alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.durable import write_atomically

REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_ROOT = REPO_ROOT / "build" / ".work"  # the same folder as bakery.local.build's
RUN_MARK = "BAKERY_RUN"
OWNER_FILE = ".owner"  # in each claimed folder: the registry of the run that owns it
STOP_GRACE_S = 5.0  # SIGTERM first: Packer deletes its output and stops its VM on it
# Folders under the work root that hold other runs' folders rather than being one.
_CONTAINERS = ("runs", "verify", "smoke")
# A folder nobody claimed (made by an older bakery) counts as left over after this long.
UNCLAIMED_GRACE_S = 600.0


# --- facts from /proc -------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): a pid plus this names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _run_mark(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = RUN_MARK.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _marked_processes(registries: set[str] | None = None) -> dict[int, str]:
    """pid -> run registry, for processes carrying a run mark (of `registries` only)."""
    found = {}
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        mark = _run_mark(pid)
        if mark and (registries is None or mark in registries):
            found[pid] = mark
    return found


def _group_members(pgid: int, leader_started: int) -> list[int]:
    # A pgid cannot be reused while any member lives, so members that started no
    # earlier than the leader are the group's own.
    return [
        pid
        for pid in _all_pids()
        if _process_group(pid) == pgid and (start_ticks(pid) or 0) >= leader_started
    ]


# --- this run ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """One run: its pid and that pid's start time (pids are reused; the pair is not)."""

    pid: int
    started: int

    @property
    def name(self) -> str:
        return f"{self.pid}-{self.started}"

    @classmethod
    def parse(cls, name: str) -> RunIdentity | None:
        pid, _, started = name.partition("-")
        if not (pid.isdigit() and started.isdigit()):
            return None
        return cls(int(pid), int(started))

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.started


def registry_alive(registry: str | Path) -> bool:
    """Whether the run owning this registry folder is still running."""
    identity = RunIdentity.parse(Path(registry).name)
    return identity is not None and identity.alive()


class _Run:
    """This process as a run: its registry, its watchdog, its groups."""

    def __init__(self, work_root: Path) -> None:
        identity = RunIdentity(os.getpid(), start_ticks(os.getpid()) or 0)
        self.registry = work_root / "runs" / identity.name
        self.registry.mkdir(parents=True, exist_ok=True)
        write_atomically(
            self.registry / "owner.json",
            json.dumps({"pid": identity.pid, "started": identity.started, "argv": sys.argv}) + "\n",
        )
        self._lock = threading.Lock()
        read_end, self._write_end = os.pipe()  # both close-on-exec: no child inherits them
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-c", _WATCHDOG, str(REPO_ROOT), str(self.registry)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read_end)

    def tell(self, line: str) -> None:
        with self._lock:
            os.write(self._write_end, (line + "\n").encode())

    def claim(self, folder: Path) -> None:
        write_atomically(folder / OWNER_FILE, str(self.registry) + "\n")
        with self._lock, (self.registry / "folders").open("a") as handle:
            handle.write(str(folder.resolve()) + "\n")
        self.tell(f"folder {folder.resolve()}")


_RUN: _Run | None = None
_RUN_LOCK = threading.Lock()


def this_run() -> _Run:
    """This process's run, started (registry and watchdog) on first use."""
    global _RUN
    with _RUN_LOCK:
        if _RUN is None or _RUN.registry.parent.parent != WORK_ROOT:
            _RUN = _Run(WORK_ROOT)
        return _RUN


def claim(folder: Path) -> Path:
    """Make `folder` this run's scratch: removed by the watchdog or the next sweep if
    the run dies before removing it itself."""
    this_run().claim(folder)
    return folder


class OwnedProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A child in its own process group, owned by this run. Once it has been reaped,
    whatever is left of its group (a QEMU whose Packer crashed) is stopped too."""

    _owner: _Run | None = None
    _leader_started = 0
    _released = False

    def poll(self) -> int | None:
        code = super().poll()
        if code is not None:
            self._release()
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        self._release()
        return code

    def _release(self) -> None:
        if self._released or self._owner is None:
            return
        self._released = True
        end_groups({self.pid: self._leader_started}, STOP_GRACE_S)
        with contextlib.suppress(OSError):
            self._owner.tell(f"end {self.pid}")


def spawn(command: Sequence[str], **options: Any) -> OwnedProcess:
    """`subprocess.Popen(command, **options)`, owned by this run (see the module doc)."""
    run = this_run()
    options["env"] = dict(options.get("env") or os.environ, **{RUN_MARK: str(run.registry)})
    options["start_new_session"] = True
    options["close_fds"] = True
    argv = [str(part) for part in command]
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    process = OwnedProcess(argv, **options)
    process._leader_started = start_ticks(process.pid) or 0
    process._owner = run
    run.tell(f"group {process.pid} {process._leader_started}")
    return process


def run(command: Sequence[str], **options: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run`, with the child owned by this run (`check` and `input` as there)."""
    check = options.pop("check", False)
    timeout = options.pop("timeout", None)
    given = options.pop("input", None)
    if options.pop("capture_output", False):
        options["stdout"] = options["stderr"] = subprocess.PIPE
    if given is not None:
        options["stdin"] = subprocess.PIPE
    with spawn(command, **options) as process:
        try:
            stdout, stderr = process.communicate(given, timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    if check and process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


# --- ending what is left ------------------------------------------------------------


def end_groups(
    groups: dict[int, int], grace_s: float, marks: set[str] | None = None
) -> list[tuple[int, str]]:
    """SIGTERM the groups (pgid -> leader start) and the processes marked with `marks`,
    SIGKILL what is still there after `grace_s`; returns (pid, command) of what was found."""

    def present() -> list[int]:
        pids = {pid for pgid, started in groups.items() for pid in _group_members(pgid, started)}
        if marks:
            pids |= set(_marked_processes(marks))
        pids.discard(os.getpid())
        return sorted(pids)

    found = [(pid, _command_line(pid)) for pid in present()]
    for wanted in (signal.SIGTERM, signal.SIGKILL):
        pids = present()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, wanted)
        deadline = time.monotonic() + (grace_s if wanted == signal.SIGTERM else grace_s * 2)
        while present() and time.monotonic() < deadline:
            time.sleep(0.1)
    return found


@dataclass
class Leftovers:
    """What dead runs left: their processes, scratch folders, registries and locks."""

    processes: list[tuple[int, str]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    registries: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.folders or self.registries or self.locks)

    def summary(self) -> str:
        parts = []
        if self.processes:
            names = sorted({Path(command.split()[0]).name for _, command in self.processes})
            parts.append(f"{len(self.processes)} process(es) ({', '.join(names)})")
        if self.folders:
            parts.append(f"{len(self.folders)} work folder(s)")
        if self.locks:
            parts.append(f"{len(self.locks)} stale lock(s)")
        runs = len(self.registries)
        return (", ".join(parts) or "nothing but its records") + f" of {runs} dead run(s)"


def _lock_holder(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def find_leftovers(work_root: Path | None = None, locks: Sequence[Path] = ()) -> Leftovers:
    """Look (and change nothing) for what runs that are no longer alive left behind."""
    root = work_root or WORK_ROOT
    found = Leftovers()
    dead: set[str] = set()
    runs = root / "runs"
    if runs.is_dir():
        for registry in sorted(runs.iterdir()):
            if not registry_alive(registry):
                dead.add(str(registry))
                found.registries.append(registry)
                folders = registry / "folders"
                if folders.is_file():
                    for line in folders.read_text().splitlines():
                        if line and Path(line).exists():
                            found.folders.append(Path(line))
    prefix = str(root / "runs") + os.sep
    for pid, mark in sorted(_marked_processes().items()):
        if mark.startswith(prefix) and not registry_alive(mark):
            found.processes.append((pid, _command_line(pid)))
    for folder in _work_folders(root):
        owner = folder / OWNER_FILE
        if owner.is_file():
            stale = not registry_alive(owner.read_text().strip())
        else:
            stale = time.time() - folder.stat().st_mtime > UNCLAIMED_GRACE_S
        if stale and folder not in found.folders:
            found.folders.append(folder)
    for lock in locks:
        holder = _lock_holder(lock)
        if lock.is_file() and holder is not None and start_ticks(holder) is None:
            found.locks.append(lock)
    return found


def _work_folders(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name == "runs":
            continue
        if entry.name in _CONTAINERS and not (entry / OWNER_FILE).exists():
            yield from (child for child in sorted(entry.iterdir()) if child.is_dir())
        else:
            yield entry


def mounts_under(folder: Path, mountinfo: str) -> list[str]:
    """The mount points under `folder` in /proc/self/mountinfo's text, deepest first."""
    inside = str(folder.resolve()) + "/"
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        point = fields[4].encode().decode("unicode_escape") if len(fields) > 4 else ""
        if point.startswith(inside):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def loop_backings(listing: str) -> list[tuple[str, str]]:
    """(device, backing file) of each loop device in `losetup -n -l -O NAME,BACK-FILE`
    output; a deleted file is named as it was (losetup appends " (deleted)")."""
    found = []
    for line in listing.splitlines():
        name, _, backing = line.strip().partition(" ")
        found.append((name, backing.strip().removesuffix(" (deleted)")))
    return found


def attached_loops() -> list[tuple[str, str]]:
    """(device, backing file) of every loop device on this host."""
    listing = subprocess.run(
        ["losetup", "-n", "-l", "-O", "NAME,BACK-FILE"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return loop_backings(listing)


def release_mounts(folder: Path) -> None:
    """Undo what a container bake mounts under `folder` (its image's root filesystem on a
    loop device, bakery.local.container): every mount under it, deepest first (detached
    lazily when still busy), then every loop device whose backing file is under it, a
    deleted one included (a bake killed before it could detach it)."""
    with contextlib.suppress(OSError):
        for point in mounts_under(folder, Path("/proc/self/mountinfo").read_text()):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        inside = str(folder.resolve()) + "/"
        for name, backing in attached_loops():
            if backing.startswith(inside):
                subprocess.run(["losetup", "-d", name], capture_output=True, check=False)


def remove_folder(folder: Path) -> None:
    """Remove a run's scratch folder, released first: removing it through a mount would
    empty the image, and the mount and the loop device would outlive it."""
    release_mounts(folder)
    shutil.rmtree(folder, ignore_errors=True)


def sweep(work_root: Path | None = None, locks: Sequence[Path] = ()) -> Leftovers:
    """End and remove what dead runs left; returns what it found (empty: nothing)."""
    root = work_root or WORK_ROOT
    found = find_leftovers(root, locks)
    if not found:
        return found
    marks = {str(registry) for registry in found.registries}
    marks |= {_run_mark(pid) or "" for pid, _ in found.processes} - {""}
    end_groups({}, STOP_GRACE_S, marks)
    for folder in found.folders:
        remove_folder(folder)
    for registry in found.registries:
        shutil.rmtree(registry, ignore_errors=True)
    for lock in found.locks:
        with contextlib.suppress(OSError):
            lock.write_text("")  # the flock itself died with its holder; drop the stale pid
    return found


# --- the watchdog -----------------------------------------------------------------


# Isolated (-I): no site packages, no environment; only this module and the stdlib.
_WATCHDOG = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "import bakery.processes as p; p._watch(sys.argv[2])"
)


def _watch(registry_path: str) -> None:
    """Read the run's registrations until the run is gone, then end what it owned."""
    registry = Path(registry_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: dict[int, int] = {}
    folders: list[Path] = []
    for raw in sys.stdin.buffer:
        kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
        if kind == "group":
            pgid, started = rest.split()
            groups[int(pgid)] = int(started)
        elif kind == "end":
            groups.pop(int(rest), None)
        elif kind == "folder":
            folders.append(Path(rest))
    end_groups(groups, STOP_GRACE_S, {str(registry)})
    for folder in folders:
        remove_folder(folder)
    shutil.rmtree(registry, ignore_errors=True)
