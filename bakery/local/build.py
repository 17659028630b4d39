"""The local target: the base image becomes one qcow2 per role, baked in an LXC system
container at native speed (bakery/local/container.py) or by Packer's qemu builder in a
VM (`local.bake_in`), and QEMU boots it for the gate (bakery/local/vm.py).

Per role: artifacts -> render -> inputs hash (skip when unchanged) -> ephemeral build
key and NoCloud seed -> the bake (container, or `packer build`: bakery/packer.py) -> the
image moved into `build/images/<role>/` with its record (bakery/records.py). Everything
of a run lives in `build/.work/<role>-<run>/` and is removed whatever happens; a failed
run leaves the previous image untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from dataclasses import dataclass, replace
from pathlib import Path

from bakery import processes
from bakery.artifacts import prepare_artifacts
from bakery.config import ARM64_FIRMWARE_PACKAGE, REPO_ROOT, BakeryConfig
from bakery.diff import history_path
from bakery.errors import BadInput, BakeryError, MissingTool, OperationFailed
from bakery.hcl import write_var_file
from bakery.inputs import RunInputs, run_inputs
from bakery.local.accelerator import choose_accelerator, foreign_accelerator
from bakery.local.base_image import BaseImage, ensure_base_image
from bakery.local.container import bake_in_container, bakes_in_container
from bakery.local.vm import BootedVM, booted, end_stale_boots
from bakery.packer import (
    PackerVersion,
    detect_version,
    read_image_manifest,
    run_packer,
    stop_packer,
)
from bakery.progress import Progress
from bakery.records import (
    ImageRecord,
    read_record,
    record_verdict,
    utc_timestamp,
    write_record,
)
from bakery.render import BUILD_ROOT, RenderedRole, render_role
from bakery.sbom import write_sbom
from bakery.verify.gate import SuiteRunner, verify_record
from bakery.verify.suites import SshTarget, SuiteResult, run_suites

IMAGES_ROOT = BUILD_ROOT / "images"
WORK_ROOT = BUILD_ROOT / ".work"
LOGS_ROOT = BUILD_ROOT / "logs"
REPORTS_ROOT = BUILD_ROOT / "reports"
VERIFY_WORK = WORK_ROOT / "verify"
# How long Packer may take to stop its VM after Ctrl-C before it is killed.
PACKER_STOP_GRACE_S = 60.0


@dataclass
class RoleResult:
    """What happened to one role in this run."""

    role: str
    status: str  # built | unchanged | failed
    record: ImageRecord | None = None
    error: str | None = None

    @property
    def image(self) -> Path | None:
        return image_path(self.record) if self.record else None


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _no_image(role: str) -> BadInput:
    return BadInput(f"no local image for role {role}: run `invoke build --role {role}`")


def per_arch(root: Path, role: str, arch: str = "x86_64") -> Path:
    """A role's folder under `root` (images, logs) for `arch`: x86_64 where it always
    was, another arch in a folder of its own, so both of one role stand side by side."""
    return root / role if arch == "x86_64" else root / arch / role


def image_dir(role: str, arch: str = "x86_64") -> Path:
    return per_arch(IMAGES_ROOT, role, arch)


def record_path(role: str, arch: str = "x86_64") -> Path:
    return image_dir(role, arch) / "record.json"


def image_path(record: ImageRecord) -> Path:
    return image_dir(record.role, record.arch) / record.image


def local_record(role: str, arch: str = "x86_64") -> ImageRecord | None:
    """The role's local image record of `arch`, or None when it was never built."""
    return read_record(record_path(role, arch))


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


def _seed_texts(run_dir: Path, role: str, public_key: str) -> tuple[str, str]:
    """A NoCloud seed's (meta-data, user-data), authorising the build key, exactly as
    user data would on EC2."""
    return (
        f"instance-id: bakery-build-{role}-{run_dir.name}\n",
        "#cloud-config\n"
        "# The ephemeral key of this build only; the seal step removes it from the image.\n"
        f"ssh_authorized_keys:\n  - {public_key}\n",
    )


def _seed_files(run_dir: Path, role: str, public_key: str) -> list[str]:
    """The seed as files, for the VM bake's NoCloud CD."""
    seed = run_dir / "seed"
    seed.mkdir()
    meta_data, user_data = _seed_texts(run_dir, role, public_key)
    (seed / "meta-data").write_text(meta_data)
    (seed / "user-data").write_text(user_data)
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


class _StepTimer:
    """Shows Packer's steps as progress and times each provisioner step."""

    def __init__(self, role: str, progress: Progress) -> None:
        self.role = role
        self.progress = progress
        self.started: tuple[str, float] | None = None

    def __call__(self, line: str) -> None:
        shown = _progress_line(line)
        if shown:
            self.progress.say(self.role, shown)
        if (shown and shown.startswith("provisioner step: ")) or "Gracefully halting" in line:
            if self.started:  # a step ends where the next one (or the shutdown) starts
                self.progress.record(self.role, self.started[0], self.started[1])
            self.started = (shown or "", time.monotonic())


# What the guest says about its own boot, fetched after the gate (bench/run.py reads it):
# file name -> command. One SSH session for all of them; the separator splits the output.
BOOT_PROFILE = {
    "boot-time.txt": "systemd-analyze time",
    "boot-blame.txt": "systemd-analyze blame --no-pager",
    "boot-critical-chain.txt": "systemd-analyze critical-chain --no-pager",
    "cloud-init-analyze.txt": "sudo -n cloud-init analyze show",
}
_PROFILE_SEPARATOR = "=====bakery-boot-profile====="


def save_boot_profile(vm: BootedVM, folder: Path) -> list[Path]:
    """Save the guest's boot profile under `folder`; the files written.

    A profile is evidence for speed work, not part of the verdict: a guest that cannot
    answer (it crashed, SSH is gone) leaves a note in the file instead of an error.
    """
    script = "; ".join(
        f"echo {_PROFILE_SEPARATOR}; {command} 2>&1" for command in BOOT_PROFILE.values()
    )
    try:
        result = vm.ssh(script, timeout=120)
        sections = result.stdout.split(_PROFILE_SEPARATOR + "\n")[1:]
        failure = "" if len(sections) == len(BOOT_PROFILE) else result.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        sections, failure = [], str(exc)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, name in enumerate(BOOT_PROFILE):
        text = sections[index] if index < len(sections) else f"not fetched: {failure}\n"
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


class LocalTarget:
    """The local adapter (see bakery/target.py): bakes the cached base image in an LXC
    container or with Packer's qemu builder, boots with QEMU in user-mode networking."""

    name = "local"

    def __init__(
        self,
        configs: list[BakeryConfig],
        progress: Progress,
        packer: PackerVersion | None = None,
    ) -> None:
        self.configs = configs
        self.progress = progress
        self._packer = packer
        self.cache_dir = REPO_ROOT / configs[0].local.cache_dir
        self._accelerator: str | None = None
        self._bases: dict[str, BaseImage] = {}
        self.packers: list[subprocess.Popen[str]] = []

    @property
    def packer(self) -> PackerVersion:
        if self._packer is None:
            self._packer = detect_version()
        return self._packer

    def base(self, cfg: BakeryConfig) -> BaseImage:
        """The base image of `cfg`'s architecture (one per arch, each cached by itself)."""
        if cfg.arch not in self._bases:
            self._bases[cfg.arch] = ensure_base_image(cfg, self.cache_dir, self.progress)
        return self._bases[cfg.arch]

    def accelerator_for(self, cfg: BakeryConfig) -> str:
        """The host's accelerator for its own architecture; TCG for another one, whose
        guests KVM cannot run (an arm64 guest on an x86_64 host)."""
        return foreign_accelerator(cfg) or self.accelerator

    @property
    def accelerator(self) -> str:
        """kvm where it works, else tcg; probed once per run against the host-arch base
        kernel. Foreign-arch roles never use it (accelerator_for)."""
        if self._accelerator is None:
            native = [cfg for cfg in self.configs if foreign_accelerator(cfg) is None]
            if not native:  # only foreign-arch roles: nothing to probe
                self._accelerator = "tcg"
                return self._accelerator
            setting = native[0].local.accelerator
            # tcg needs no probe, so no kernel: verify must not build a base image for it.
            kernel, initrd = self._probe_kernel(native[0]) if setting != "tcg" else (Path(), Path())
            accel, warning = choose_accelerator(
                setting, kernel, initrd, self.cache_dir / "accelerator.json"
            )
            if warning:
                self.progress.say("host", f"[yellow]warning:[/] {warning}")
            self._accelerator = accel
        return self._accelerator

    def _probe_kernel(self, cfg: BakeryConfig) -> tuple[Path, Path]:
        """The base image's kernel and initrd: of this run's base image when it has one,
        else of the base the role's current image was built from (verify needs no base)."""
        if cfg.arch not in self._bases:
            record = local_record(cfg.role, cfg.arch)
            built_from = record.details.get("base_image", {}) if record else {}
            if built_from.get("inputs_hash"):
                folder = self.cache_dir / "base" / str(built_from["inputs_hash"])
                return folder / "vmlinuz", folder / "initrd.img"
        base = self.base(cfg)
        return base.kernel, base.initrd

    def stop_packers(self) -> None:
        for process in self.packers:
            stop_packer(process, PACKER_STOP_GRACE_S)

    def build(self, cfg: BakeryConfig, rendered: RenderedRole) -> ImageRecord:
        role = cfg.role
        base = self.base(cfg)
        accelerator = self.accelerator_for(cfg)
        in_container = bakes_in_container(cfg)
        inputs = run_inputs(rendered, base.inputs_hash)
        started = time.time()
        run_dir = rendered.directory.parent / f"{role}-run"
        run_dir.mkdir(parents=True)
        log_dir = per_arch(LOGS_ROOT, role, cfg.arch)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / ("container.log" if in_container else "packer.log")
        try:
            key, public_key = _ephemeral_key(run_dir)
            if in_container:
                seed = _seed_texts(run_dir, role, public_key)
                built = bake_in_container(
                    cfg, rendered, base, run_dir, seed, log_path, self.progress
                )
            else:
                built = self._packer_bake(
                    cfg, rendered, base, inputs, run_dir, key, public_key, log_path
                )
            if not built.is_file():
                raise OperationFailed(f"[{role}] the bake reported success but wrote no {built}")
            plan = json.loads((rendered.stage / "bake.json").read_text())
            record = ImageRecord(
                role=role,
                os=cfg.os,
                arch=cfg.arch,
                target=self.name,
                image=f"{role}-{inputs.inputs_hash}.qcow2",
                inputs_hash=inputs.inputs_hash,
                git_commit=inputs.git_commit,
                packer_version=str(self.packer),
                built_at=utc_timestamp(),
                path=record_path(role, cfg.arch),
                packer_log=_shown(log_path),
                details={
                    "accelerator": accelerator,
                    # Where the provisioner steps ran: an LXC container or a QEMU VM.
                    "baked_in": "container" if in_container else "vm",
                    "base_image": {
                        "sha256": base.sha256,
                        "inputs_hash": base.inputs_hash,
                    },
                    "agent": {
                        "package": cfg.agent.package,
                        "url": plan["agent"]["url"],
                        "sha256": plan["agent"]["sha256"],
                    },
                    "manifest": read_image_manifest(rendered.directory),
                    "size_bytes": built.stat().st_size,
                    "timings_s": dict(self.progress.timings.get(role, {})),
                    "build_seconds": round(time.time() - started, 1),
                },
            )
            self._install(built, record)
            return record
        finally:
            _kill_leftover_qemu(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)

    def _packer_bake(
        self,
        cfg: BakeryConfig,
        rendered: RenderedRole,
        base: BaseImage,
        inputs: RunInputs,
        run_dir: Path,
        key: Path,
        public_key: str,
        log_path: Path,
    ) -> Path:
        """The VM bake: Packer's qemu builder boots the base image and runs the steps."""
        role = cfg.role
        accelerator = self.accelerator_for(cfg)
        var_file = write_var_file(
            run_dir / "run.pkrvars.hcl",
            {
                "inputs_hash": inputs.inputs_hash,
                "git_commit": inputs.git_commit,
                "base_image": str(base.path),
                "base_image_checksum": base.checksum,
                "ssh_private_key_file": str(key),
                "seed_files": _seed_files(run_dir, role, public_key),
                "accelerator": accelerator,
                "output_directory": str(run_dir / "output"),
            },
        )
        with self.progress.step(role, f"packer build ({accelerator})"):
            run_packer(
                ["build", "-color=false", f"-var-file={var_file}", "."],
                rendered.directory,
                log_path,
                on_line=_StepTimer(role, self.progress),
                on_start=self.packers.append,
                stop_grace_s=PACKER_STOP_GRACE_S,
            )
        return run_dir / "output" / f"{role}.qcow2"

    def _install(self, built: Path, record: ImageRecord) -> None:
        """Move the new image in; only then drop the previous one."""
        folder = image_dir(record.role, record.arch)
        folder.mkdir(parents=True, exist_ok=True)
        previous = local_record(record.role, record.arch)
        with built.open("rb+") as image:
            os.fsync(image.fileno())  # on disk before a record can point at it
        shutil.move(str(built), folder / record.image)
        write_sbom(record)
        write_record(record)
        # A copy that outlives the next bake, so `invoke diff ROLE:HASH` can name it.
        kept = history_path(
            record.role, record.inputs_hash, IMAGES_ROOT.parent / "records" / "local"
        )
        write_record(replace(record, path=kept))
        if previous and previous.image and previous.image != record.image:
            (folder / previous.image).unlink(missing_ok=True)

    @contextmanager
    def boot(
        self, cfg: BakeryConfig, record: ImageRecord, settings: dict[str, str]
    ) -> Iterator[SshTarget]:
        image = image_path(record)
        if not image.is_file():
            raise BadInput(
                f"no local image for role {cfg.role}: run `invoke build --role {cfg.role}`"
            )
        with booted(
            image,
            f"verify-{cfg.role}",
            settings,
            VERIFY_WORK,
            self.accelerator_for(cfg),
            cfg.local.cpus,
            cfg.local.memory_mb,
            cfg.verify.boot_timeout_s * cfg.local_wait_factor,
            user=cfg.ssh_username,
            arch=cfg.arch,
            firmware=cfg.local.arm64_firmware if cfg.arch == "arm64" else None,
        ) as vm:
            try:
                yield vm.ssh_target
            finally:  # also for a rejected image: its boot is what needs explaining
                if isinstance(vm, BootedVM):  # a test's stand-in VM has no guest to ask
                    save_boot_profile(vm, per_arch(LOGS_ROOT, cfg.role, cfg.arch))

    def mark(self, cfg: BakeryConfig, record: ImageRecord, result: SuiteResult) -> None:
        """The local image's record is the only place its verdict lives."""


class LocalBuild:
    """One `invoke build` on the local target: skip what is current, bake the rest."""

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
        self.target = LocalTarget(configs, progress, packer)
        # This run's renders and scratch: `invoke render` elsewhere cannot pull a
        # folder from under a running Packer.
        self.run_root = WORK_ROOT / f"build-{uuid.uuid4().hex[:8]}"

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
                self.target.stop_packers()
                shutil.rmtree(self.run_root, ignore_errors=True)

    def _run(self, parallel: int) -> list[RoleResult]:
        for tool, package in [("qemu-system-x86_64", "qemu-system-x86"), ("xorriso", "xorriso")]:
            if shutil.which(tool) is None:
                raise MissingTool(tool, f"install it with `apt-get install {package}`")
        planned = [self._plan(cfg) for cfg in self.configs]
        todo = [(cfg, rendered) for cfg, rendered, current in planned if current is None]
        results: dict[str, RoleResult] = {}
        for cfg, _, current in planned:
            if current is not None:
                results[cfg.role] = RoleResult(cfg.role, "unchanged", current)
                self.progress.say(cfg.role, "unchanged since the last build: skipped")
        if todo:
            _ = self.target.accelerator  # probed once, before the threads start
            pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo))))
            try:
                futures = {cfg.role: pool.submit(self._build_role, cfg, r) for cfg, r in todo}
                for role, future in futures.items():
                    results[role] = future.result()
            except BaseException:  # Ctrl-C lands here, in the main thread: stop the builds
                self.target.stop_packers()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return [results[cfg.role] for cfg in self.configs]

    def _plan(self, cfg: BakeryConfig) -> tuple[BakeryConfig, RenderedRole, ImageRecord | None]:
        """Render with artifacts; the current record when the image needs no rebuild."""
        artifacts = prepare_artifacts(cfg, self.target.cache_dir, self.progress)
        rendered = render_role(
            cfg, self.target.packer, build_root=self.run_root, artifacts=artifacts
        )
        record = local_record(cfg.role, cfg.arch)
        current = (
            record is not None
            and record.inputs_hash
            == run_inputs(rendered, self.target.base(cfg).inputs_hash).inputs_hash
            and image_path(record).is_file()
        )
        return cfg, rendered, record if current and not self.force else None

    def _build_role(self, cfg: BakeryConfig, rendered: RenderedRole) -> RoleResult:
        try:
            return RoleResult(cfg.role, "built", self.target.build(cfg, rendered))
        except BakeryError as exc:
            return RoleResult(cfg.role, "failed", error=str(exc))


def guests_at_once() -> int:
    """How many guests (bakes or boots) run at once by default: one per host core, at
    most the three roles. Under TCG a guest needs a core to itself: on 2 cores with three
    bakes at once, one guest missed its 300 s SSH timeout (bench, before.json)."""
    return max(1, min(3, len(os.sched_getaffinity(0))))


def check_host_can_bake(cfg: BakeryConfig) -> None:
    """Refuse, before anything starts, a bake this host cannot run: the QEMU of the
    image's architecture, and for arm64 its UEFI firmware, name the package to install.
    Rendering and `packer validate` need neither; x86_64's tools are checked where the
    base image is made (bakery/local/base_image.py)."""
    if cfg.arch != "arm64":
        return
    machine = cfg.local_machine
    if shutil.which(machine.program) is None:
        raise MissingTool(machine.program, f"install it with `apt-get install {machine.package}`")
    firmware = cfg.local.arm64_firmware
    if not Path(firmware).is_file():
        raise BadInput(
            f"local.arm64_firmware: {firmware} does not exist: install the UEFI firmware "
            f"with `apt-get install {ARM64_FIRMWARE_PACKAGE}` (or point the setting at "
            "an AArch64 UEFI image)"
        )


def build_local(
    configs: list[BakeryConfig],
    progress: Progress,
    force: bool = False,
    parallel: int = 3,
    on_result: Callable[[RoleResult], None] | None = None,
) -> list[RoleResult]:
    """Build the selected roles' local images; failed roles are reported, not raised."""
    for cfg in configs:
        check_host_can_bake(cfg)
    results = LocalBuild(configs, progress, force=force).run(parallel)
    if on_result:
        for result in results:
            on_result(result)
    return results


def verify_local(
    configs: list[BakeryConfig],
    progress: Progress,
    parallel: int,
    runner: SuiteRunner = run_suites,
) -> list[tuple[str, SuiteResult]]:
    """Verify the selected roles' local images with the gate; (role, result) each."""
    end_stale_boots(VERIFY_WORK)  # a killed earlier run must not leave VMs behind
    target = LocalTarget(configs, progress)
    records = {}
    for cfg in configs:
        record = local_record(cfg.role, cfg.arch)
        if record is None or not image_path(record).is_file():
            raise BadInput(
                f"no local image for role {cfg.role}: run `invoke build --role {cfg.role}`"
            )
        records[cfg.role] = record
    _ = target.accelerator  # probed once, before the threads start

    def verify_one(cfg: BakeryConfig) -> tuple[str, SuiteResult]:
        suffix = "" if cfg.arch == "x86_64" else f"-{cfg.arch}"
        junit = REPORTS_ROOT / f"{cfg.role}{suffix}.junit.xml"
        try:
            return cfg.role, verify_record(target, cfg, records[cfg.role], junit, progress, runner)
        except BakeryError as exc:
            result = SuiteResult(error=str(exc))
            record_verdict(records[cfg.role].path, result.verdict, result.as_verification())
            return cfg.role, result

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(configs)))) as pool:
        return list(pool.map(verify_one, configs))
