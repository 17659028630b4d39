"""The local bake: Packer's qemu builder turns the base image into one image per role.

Per role: artifacts -> render -> inputs hash (skip when unchanged) -> ephemeral build
key and NoCloud seed -> `packer build` -> the image moved into `build/images/<role>/`
with its record. Everything of a run lives in `build/.work/<role>-<run>/` and is
removed whatever happens; a failed run leaves the previous image untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import processes
from bakery.artifacts import prepare_artifacts, tree_hash
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.durable import write_atomically
from bakery.errors import BadInput, BakeryError, MissingTool, OperationFailed
from bakery.hcl import write_var_file
from bakery.local.accelerator import choose_accelerator
from bakery.local.base_image import BaseImage, ensure_base_image
from bakery.packer import PackerVersion, detect_version, packer_binary
from bakery.progress import Progress
from bakery.render import BUILD_ROOT, RenderedRole, render_role

IMAGES_ROOT = BUILD_ROOT / "images"
WORK_ROOT = BUILD_ROOT / ".work"
LOGS_ROOT = BUILD_ROOT / "logs"
# Files in a rendered tree that a build writes itself; not inputs.
_BUILD_OUTPUTS = ("packer-manifest.json", "manifest")


@dataclass
class RoleResult:
    """What happened to one role in this run."""

    role: str
    status: str  # built | unchanged | failed
    image: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def image_dir(role: str) -> Path:
    return IMAGES_ROOT / role


def read_record(role: str) -> dict[str, Any] | None:
    path = image_dir(role) / "record.json"
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None  # not a whole record (written before writes were atomic): rebuild
    return record


def write_record(role: str, record: dict[str, Any]) -> None:
    path = image_dir(role) / "record.json"
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _inputs_hash(rendered: RenderedRole, base: BaseImage) -> str:
    digest = hashlib.sha256(base.inputs_hash.encode())
    paths = [
        path
        for path in sorted(rendered.directory.iterdir())
        if path.name not in _BUILD_OUTPUTS and path.name != "render.json"
    ]
    digest.update(tree_hash(paths, rendered.directory).encode())
    return digest.hexdigest()[:16]


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One `invoke build` at a time per checkout: two would fight over the images."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # Opened without truncating: the holder's pid stays readable for the refusal.
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise BadInput(
                f"another `invoke build` is running in this checkout (pid {holder} holds "
                f"{lock_path}): wait for it, or stop it"
            ) from exc
        # The kernel drops the flock when its holder dies, however it dies; the pid
        # is only for people and `invoke doctor`, and is cleared on the way out.
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def _seed_files(run_dir: Path, role: str, public_key: str) -> list[str]:
    """A NoCloud seed authorising the build key, exactly as user data would on EC2."""
    seed = run_dir / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text(f"instance-id: bakery-build-{role}-{run_dir.name}\n")
    (seed / "user-data").write_text(
        "#cloud-config\n"
        "# The ephemeral key of this build only; the seal step removes it from the image.\n"
        f"ssh_authorized_keys:\n  - {public_key}\n"
    )
    return [str(seed / "meta-data"), str(seed / "user-data")]


def _ephemeral_key(run_dir: Path) -> tuple[Path, str]:
    key = run_dir / "build_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery-build", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return key, (run_dir / "build_key.pub").read_text().strip()


def _kill_leftover_qemu(run_dir: Path) -> None:
    """Make sure no qemu of this run survives (Packer is killed, Ctrl-C, ...)."""
    result = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*{run_dir}"], capture_output=True, text=True, check=False
    )
    for pid in result.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


# Packer's own steps, and the first line of each provisioner step ("<step>: start ...").
_STEP_START = re.compile(r"^\s+\S+: ([a-z-]+): start\b")


def _progress_line(line: str) -> str | None:
    """The lines of Packer's output worth showing as progress."""
    if line.startswith("==> ") and ": " in line and "Provisioning with shell" not in line:
        return "packer: " + line.split(": ", 1)[1].strip()
    step = _STEP_START.match(line)
    return f"provisioner step: {step.group(1)}" if step else None


def _run_packer_build(
    rendered: RenderedRole,
    var_file: Path,
    log_path: Path,
    progress: Progress,
    running: list[subprocess.Popen[str]],
) -> None:
    """`packer build`, its full output kept in the role's log, its steps shown as progress."""
    command = [packer_binary(), "build", "-color=false", f"-var-file={var_file}", "."]
    env = dict(os.environ, CHECKPOINT_DISABLE="1", PACKER_NO_COLOR="1")
    with log_path.open("w") as log:
        process = processes.spawn(
            command,
            cwd=rendered.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        running.append(process)  # so an interrupted run can stop every Packer it started
        assert process.stdout is not None
        try:
            step_started: tuple[str, float] | None = None
            for line in process.stdout:
                log.write(line)
                log.flush()
                shown = _progress_line(line)
                if shown:
                    progress.say(rendered.role, shown)
                if (
                    shown and shown.startswith("provisioner step: ")
                ) or "Gracefully halting" in line:
                    if step_started:  # a step ends where the next one (or the shutdown) starts
                        progress.record(rendered.role, step_started[0], step_started[1])
                    step_started = (shown or "", time.monotonic())
            process.wait()
        except BaseException:
            _stop_packer(process)
            raise
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-12:])
        raise OperationFailed(
            f"[{rendered.role}] packer build failed (exit {process.returncode}); "
            f"full log: {log_path.relative_to(REPO_ROOT)}\n{tail}"
        )


def _stop_packer(process: subprocess.Popen[str]) -> None:
    """Ctrl-C for Packer: it stops its VM and deletes its output; kill it if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_manifest(rendered: RenderedRole) -> dict[str, Any]:
    # Packer 1.6's download of a folder may nest it once more; take it where it landed.
    found_at = sorted((rendered.directory / "manifest").rglob("manifest.json"))
    folder = found_at[0].parent if found_at else rendered.directory / "manifest"
    found: dict[str, Any] = {}
    if (folder / "manifest.json").is_file():
        found = json.loads((folder / "manifest.json").read_text())
    for name in ("packages.txt", "pip-freeze.txt", "agent-version.txt"):
        if (folder / name).is_file():
            found[name.rsplit(".", 1)[0].replace("-", "_")] = (
                (folder / name).read_text().splitlines()
            )
    return found


class LocalBuild:
    """One `invoke build` on the local target."""

    def __init__(
        self,
        configs: list[BakeryConfig],
        progress: Progress,
        force: bool = False,
        packer: PackerVersion | None = None,
    ) -> None:
        self.configs = configs
        self.progress = progress
        self.force = force
        self.packer = packer or detect_version()
        self.cache_dir = REPO_ROOT / configs[0].local.cache_dir
        self._accelerator: str | None = None
        self._base: BaseImage | None = None
        # This run's renders and scratch: `invoke render` elsewhere cannot pull a
        # folder from under a running Packer.
        self.run_root = WORK_ROOT / f"build-{uuid.uuid4().hex[:8]}"
        self._packers: list[subprocess.Popen[str]] = []

    def run(self, parallel: int) -> list[RoleResult]:
        with _exclusive(BUILD_ROOT / ".build.lock"):
            swept = processes.sweep()
            if swept:
                self.progress.say("host", f"removed what an earlier run left: {swept.summary()}")
            self.run_root.mkdir(parents=True)
            processes.claim(self.run_root)
            try:
                return self._run(parallel)
            except OSError as exc:  # a full disk, an unwritable cache: say which, once
                raise OperationFailed(
                    f"cannot write {exc.filename or 'a build file'}: {exc.strerror}; "
                    "free space there or make it writable (the cache is local.cache_dir)"
                ) from exc
            finally:
                for process in self._packers:
                    _stop_packer(process)
                shutil.rmtree(self.run_root, ignore_errors=True)

    def _run(self, parallel: int) -> list[RoleResult]:
        for tool, package in [("qemu-system-x86_64", "qemu-system-x86"), ("xorriso", "xorriso")]:
            if shutil.which(tool) is None:
                raise MissingTool(tool, f"install it with `apt-get install {package}`")
        self._base = ensure_base_image(self.configs[0], self.cache_dir, self.progress)
        planned = [self._plan(cfg) for cfg in self.configs]
        todo = [item for item in planned if item[2] is not None]
        results = {cfg.role: RoleResult(cfg.role, "unchanged") for cfg, _, h in planned if not h}
        for cfg, _, _ in planned:
            if cfg.role in results:
                record = read_record(cfg.role) or {}
                results[cfg.role].image = image_dir(cfg.role) / record.get("image", "")
                results[cfg.role].record = record
                self.progress.say(cfg.role, "unchanged since the last build: skipped")
        if todo:
            self._ensure_accelerator()
            workers = max(1, min(parallel, len(todo)))
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                futures = {
                    cfg.role: pool.submit(self._build_role, cfg, rendered, inputs_hash)
                    for cfg, rendered, inputs_hash in todo
                    if inputs_hash is not None
                }
                for role, future in futures.items():
                    results[role] = future.result()
            except BaseException:  # Ctrl-C lands here, in the main thread: stop the builds
                for process in self._packers:
                    _stop_packer(process)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return [results[cfg.role] for cfg in self.configs]

    def _plan(self, cfg: BakeryConfig) -> tuple[BakeryConfig, RenderedRole, str | None]:
        """Render with artifacts; the inputs hash, or None when the image is current."""
        assert self._base is not None
        artifacts = prepare_artifacts(cfg, self.cache_dir, self.progress)
        rendered = render_role(cfg, self.packer, build_root=self.run_root, artifacts=artifacts)
        inputs_hash = _inputs_hash(rendered, self._base)
        record = read_record(cfg.role)
        current = (
            record is not None
            and record.get("inputs_hash") == inputs_hash
            and (image_dir(cfg.role) / record.get("image", "")).is_file()
        )
        if current and not self.force:
            return cfg, rendered, None
        return cfg, rendered, inputs_hash

    def _ensure_accelerator(self) -> None:
        assert self._base is not None
        if self._accelerator is None:
            accel, warning = choose_accelerator(
                self.configs[0].local.accelerator,
                self._base.kernel,
                self._base.initrd,
                self.cache_dir / "accelerator.json",
            )
            if warning:
                self.progress.say("host", f"[yellow]warning:[/] {warning}")
            self._accelerator = accel

    def _build_role(
        self, cfg: BakeryConfig, rendered: RenderedRole, inputs_hash: str
    ) -> RoleResult:
        try:
            return self._bake(cfg, rendered, inputs_hash)
        except BakeryError as exc:
            return RoleResult(cfg.role, "failed", error=str(exc))

    def _bake(self, cfg: BakeryConfig, rendered: RenderedRole, inputs_hash: str) -> RoleResult:
        assert self._base is not None and self._accelerator is not None
        role = cfg.role
        started = time.time()
        run_dir = self.run_root / f"{role}-run"
        run_dir.mkdir(parents=True)
        log_dir = LOGS_ROOT / role
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "packer.log"
        try:
            key, public_key = _ephemeral_key(run_dir)
            var_file = write_var_file(
                run_dir / "run.pkrvars.hcl",
                {
                    "inputs_hash": inputs_hash,
                    "git_commit": _git_commit(),
                    "base_image": str(self._base.path),
                    "base_image_checksum": self._base.checksum,
                    "ssh_private_key_file": str(key),
                    "seed_files": _seed_files(run_dir, role, public_key),
                    "accelerator": self._accelerator,
                    "output_directory": str(run_dir / "output"),
                },
            )
            with self.progress.step(role, f"packer build ({self._accelerator})"):
                _run_packer_build(rendered, var_file, log_path, self.progress, self._packers)
            built = run_dir / "output" / f"{role}.qcow2"
            if not built.is_file():
                raise OperationFailed(f"[{role}] packer reported success but wrote no {built}")
            record = self._record(cfg, rendered, inputs_hash, built, started)
            self._install(role, built, record)
            return RoleResult(role, "built", image_dir(role) / record["image"], record)
        finally:
            _kill_leftover_qemu(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)

    def _record(
        self,
        cfg: BakeryConfig,
        rendered: RenderedRole,
        inputs_hash: str,
        built: Path,
        started: float,
    ) -> dict[str, Any]:
        assert self._base is not None
        plan = json.loads((rendered.stage / "bake.json").read_text())
        return {
            "role": cfg.role,
            "os": cfg.os,
            "target": "local",
            "image": f"{cfg.role}-{inputs_hash}.qcow2",
            "inputs_hash": inputs_hash,
            "status": "built",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": _git_commit(),
            "packer_version": str(self.packer),
            "accelerator": self._accelerator,
            "base_image": {
                "sha256": self._base.sha256,
                "inputs_hash": self._base.inputs_hash,
            },
            "agent": {
                "package": cfg.agent.package,
                "url": plan["agent"]["url"],
                "sha256": plan["agent"]["sha256"],
            },
            "manifest": _read_manifest(rendered),
            "size_bytes": built.stat().st_size,
            "timings_s": dict(self.progress.timings.get(cfg.role, {})),
            "build_seconds": round(time.time() - started, 1),
            "packer_log": str((LOGS_ROOT / cfg.role / "packer.log").relative_to(REPO_ROOT)),
        }

    def _install(self, role: str, built: Path, record: dict[str, Any]) -> None:
        """Move the new image in; only then drop the previous one."""
        folder = image_dir(role)
        folder.mkdir(parents=True, exist_ok=True)
        previous = read_record(role)
        with built.open("rb+") as image:
            os.fsync(image.fileno())  # on disk before a record can point at it
        shutil.move(str(built), folder / record["image"])
        write_record(role, record)
        if previous and previous.get("image") and previous["image"] != record["image"]:
            (folder / previous["image"]).unlink(missing_ok=True)


def build_local(
    configs: list[BakeryConfig],
    progress: Progress,
    force: bool = False,
    parallel: int = 3,
    on_result: Callable[[RoleResult], None] | None = None,
) -> list[RoleResult]:
    """Build the selected roles' local images; failed roles are reported, not raised."""
    results = LocalBuild(configs, progress, force=force).run(parallel)
    if on_result:
        for result in results:
            on_result(result)
    return results
