"""The fault matrix of the local path: each fault ends with no process of the run left,
no half-written image or record, and a rerun that converges.

Runs happen in a sandbox folder (tests/unit/local/run_in_sandbox.py) with the doubles
of tests/doubles/packer_qemu standing in for Packer, QEMU and mmdebstrap: their process
trees are the real tools' (Packer's QEMU is its child, in Packer's group), so a killed
run leaves what a real one would. "No process of the run" is read from /proc here, by
a test-side rule (the sandbox path in a process's command line or environment), not by
asking bakery.processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from invoke import Config, Context
from rich.console import Console

from bakery import artifacts, processes
from bakery.artifacts import AGENT_DOUBLE_SOURCES, tree_hash
from bakery.config import REPO_ROOT, load_config
from bakery.local import base_image, build
from bakery.local.base_image import _hash, base_inputs
from bakery.progress import Progress
from tests.doubles.packer_qemu import DOUBLES_BIN
from tests.unit.local.run_in_sandbox import sandbox_mirror

ROLE = "frontend"
OVERRIDES = ["local.accelerator=tcg", "local.cache_dir=cache", "local.disk_size_gb=2"]
GONE_WITHIN_S = 15.0  # the promise: nothing of a killed run 15 s later
T = TypeVar("T")


# --- helpers ------------------------------------------------------------------------


def poll(probe: Callable[[], T], done: Callable[[T], bool], within_s: float) -> T:
    """Probe until `done` or the time is up; the last probe either way."""
    deadline = time.monotonic() + within_s
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = probe()
    return value


def processes_of(root: Path) -> list[str]:
    """Every process naming `root` in its command line or environment (this test aside)."""
    needle = str(root).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            environ = Path(f"/proc/{name}/environ").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and (needle in cmdline or needle in environ):
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{name} {command[:160]}")
    return found


def left_in_work(root: Path) -> list[str]:
    """Every file under the work folder (folders that only hold other folders are no
    leftover: `verify/` stays between runs)."""
    work = root / "build" / ".work"
    if not work.is_dir():
        return []
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if not p.is_dir())


def _env(**modes: str) -> dict[str, str]:
    return dict(os.environ, PATH=f"{DOUBLES_BIN}:{os.environ['PATH']}", **modes)


def start(root: Path, what: str, arg: str = "", **modes: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.unit.local.run_in_sandbox", str(root), what]
    return subprocess.Popen(
        command + ([arg] if arg else []),
        cwd=REPO_ROOT,
        env=_env(**modes),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(root: Path, what: str, arg: str = "", **modes: str) -> tuple[int, str]:
    process = start(root, what, arg, **modes)
    output, _ = process.communicate(timeout=180)
    return process.returncode, output


def wait_for(root: Path, what: str) -> list[str]:
    """Wait (up to a minute) until a process of the sandbox's run matches `what`."""
    found = poll(lambda: processes_of(root), lambda ps: any(what in p for p in ps), 60)
    assert any(what in p for p in found), f"no {what} started: {found}"
    return found


def kill_and_expect_nothing_left(root: Path, run: subprocess.Popen[str]) -> None:
    run.kill()
    run.wait()
    assert poll(lambda: processes_of(root), lambda ps: not ps, GONE_WITHIN_S) == []
    assert poll(lambda: left_in_work(root), lambda left: not left, GONE_WITHIN_S) == []


def record(root: Path) -> dict[str, object] | None:
    path = root / "build" / "images" / ROLE / "record.json"
    return json.loads(path.read_text()) if path.is_file() else None


def assert_converged(root: Path) -> dict[str, object]:
    code, output = finish(root, "build", DOUBLE_PACKER_MODE="ok")
    assert code == 0, output
    built = record(root)
    assert built is not None
    image = root / "build" / "images" / ROLE / str(built["image"])
    assert image.read_bytes().startswith(b"QFI\xfb")  # the whole image the double wrote
    assert processes_of(root) == [] and left_in_work(root) == []
    # A copy outlives the next bake, for `invoke diff ROLE:HASH`.
    kept = root / "build" / "records" / "local" / f"{ROLE}-{built['inputs_hash']}.json"
    assert json.loads(kept.read_text())["image"] == built["image"]
    sbom = root / "build" / "images" / ROLE / str(built["sbom"])
    assert json.loads(sbom.read_text())["bomFormat"] == "CycloneDX"
    return built


def seed_base_image(root: Path) -> Path:
    """A cached base image that passes its hash check (the bake double never boots it)."""
    cfg = load_config(ROLE, "local", overrides=OVERRIDES)
    with pytest.MonkeyPatch.context() as patch:  # the sandbox's mirror, as its runs see it
        patch.setattr(base_image, "host_debian_mirror", sandbox_mirror)
        folder = root / "cache" / "base" / _hash(base_inputs(cfg))
    folder.mkdir(parents=True)
    (folder / "base.qcow2").write_bytes(b"QFI\xfb base image double")
    for name in ("vmlinuz", "initrd.img"):
        (folder / name).write_bytes(b"double")
    sha = hashlib.sha256((folder / "base.qcow2").read_bytes()).hexdigest()
    (folder / "base.json").write_text(json.dumps({"sha256": sha}))
    # The agent package is cached too; the bake double never installs it.
    agent = root / "cache" / "agent-double" / tree_hash([AGENT_DOUBLE_SOURCES], REPO_ROOT)[:16]
    agent.mkdir(parents=True)
    (agent / "amazon-cloudwatch-agent_0.1.0_amd64.deb").write_bytes(b"!<arch> double")
    return folder


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    seed_base_image(tmp_path)
    yield tmp_path
    for leftover in processes_of(tmp_path):  # a failed test must not leave them either
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(leftover.split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[None]:
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.decode().strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


# --- SIGKILL at any moment ---------------------------------------------------------


def test_sigkill_during_a_bake_leaves_no_process_and_the_rerun_converges(sandbox: Path) -> None:
    run = start(sandbox, "build", DOUBLE_PACKER_MODE="hang")
    wait_for(sandbox, "qemu-system-x86_64")
    kill_and_expect_nothing_left(sandbox, run)
    assert record(sandbox) is None and not (sandbox / "build" / "images" / ROLE).exists()
    assert_converged(sandbox)


def test_sigkill_during_the_base_image_leaves_no_process_and_no_partial_base(
    tmp_path: Path,
) -> None:
    run = start(tmp_path, "base", MMDEBSTRAP_DOUBLE="hang")
    wait_for(tmp_path, "apt-double")  # mmdebstrap's own child, in mmdebstrap's group
    kill_and_expect_nothing_left(tmp_path, run)
    assert poll(lambda: sorted((tmp_path / "cache" / "base").iterdir()), lambda x: not x, 15) == []
    code, output = finish(tmp_path, "base")  # the doubles make a (tiny) base image for real
    assert code == 0, output
    (folder,) = (tmp_path / "cache" / "base").iterdir()
    sha = hashlib.sha256((folder / "base.qcow2").read_bytes()).hexdigest()
    assert json.loads((folder / "base.json").read_text())["sha256"] == sha == output.split()[-1]
    assert processes_of(tmp_path) == []


@pytest.mark.parametrize("what", ["boot", "smoke"])
def test_sigkill_during_a_verify_or_smoke_boot_leaves_no_vm(tmp_path: Path, what: str) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "image.qcow2"), "64M"],
        check=True,
    )
    run = start(tmp_path, what, "600")
    wait_for(tmp_path, "qemu-system-x86_64")
    if what == "smoke":  # both VMs up, as the smoke test boots them

        def vms(found: list[str]) -> int:
            return sum("qemu-system" in p for p in found)

        assert vms(poll(lambda: processes_of(tmp_path), lambda ps: vms(ps) == 2, 60)) == 2
    kill_and_expect_nothing_left(tmp_path, run)
    # The rerun boots again; the double's guest never answers, so it fails cleanly.
    code, output = finish(tmp_path, what, "1")
    assert code == 1 and "SSH did not come up" in output
    assert processes_of(tmp_path) == [] and left_in_work(tmp_path) == []


def test_a_guest_that_never_answers_ssh_fails_with_one_line_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "image.qcow2"), "64M"],
        check=True,
    )
    code, output = finish(tmp_path, "boot", "3")
    assert code == 1
    (line,) = [line for line in output.splitlines() if line.startswith("bakery:")]
    assert "SSH did not come up within 3s" in line and "console:" in line
    assert processes_of(tmp_path) == [] and left_in_work(tmp_path) == []


# --- faults under Packer -----------------------------------------------------------


def test_qemu_killed_under_packer_fails_the_bake_and_keeps_the_previous_image(
    sandbox: Path,
) -> None:
    previous = assert_converged(sandbox)
    run = start(sandbox, "build", DOUBLE_PACKER_MODE="hang")
    (qemu,) = [p for p in wait_for(sandbox, "qemu-system-x86_64") if "qemu-system" in p]
    os.kill(int(qemu.split()[0]), signal.SIGKILL)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 1
    assert "(exit 1); full log:" in output and "logs/frontend/packer.log" in output
    assert processes_of(sandbox) == [] and left_in_work(sandbox) == []
    assert record(sandbox) == previous
    assert (sandbox / "build" / "images" / ROLE / str(previous["image"])).is_file()
    assert_converged(sandbox)


@pytest.mark.parametrize(
    ("mode", "says"),
    [("crash", "(exit 2); full log:"), ("ssh-timeout", "(exit 1); full log:")],
)
def test_packer_crashing_or_ssh_timing_out_leaves_no_qemu(
    sandbox: Path, mode: str, says: str
) -> None:
    code, output = finish(sandbox, "build", DOUBLE_PACKER_MODE=mode)
    assert code == 1 and says in output, output
    assert processes_of(sandbox) == [] and left_in_work(sandbox) == []
    assert record(sandbox) is None
    assert_converged(sandbox)


def test_a_full_disk_during_a_bake_fails_and_keeps_the_previous_image(sandbox: Path) -> None:
    with mounted_tmpfs(sandbox / "build", "size=4m"):
        previous = assert_converged(sandbox)
        code, output = finish(sandbox, "build", DOUBLE_PACKER_MODE="fill-disk")
        assert code == 1, output
        # Packer's failure, or bakery's own write of Packer's log on the same full disk,
        # whichever meets the full disk first: one line either way.
        (line,) = [line for line in output.splitlines() if line.startswith("bakery:")]
        log = (sandbox / "build" / "logs" / ROLE / "packer.log").read_text()
        assert "No space left on device" in line + log
        assert processes_of(sandbox) == [] and left_in_work(sandbox) == []
        assert record(sandbox) == previous
        assert assert_converged(sandbox)["image"] == previous["image"]


def test_an_unwritable_cache_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "cache", "ro,size=1m"):
        code, output = finish(tmp_path, "build", DOUBLE_PACKER_MODE="ok")
    assert code == 1
    (line,) = [line for line in output.splitlines() if line.startswith("bakery:")]
    assert f"cannot write {tmp_path / 'cache'}" in line and "Read-only file system" in line
    assert processes_of(tmp_path) == [] and left_in_work(tmp_path) == []
    seed_base_image(tmp_path)
    assert_converged(tmp_path)


# --- two runs, dead runs ----------------------------------------------------------


def test_a_second_build_refuses_naming_the_first_and_a_killed_ones_lock_does_not_block(
    sandbox: Path,
) -> None:
    first = start(sandbox, "build", DOUBLE_PACKER_MODE="hang")
    wait_for(sandbox, "qemu-system-x86_64")
    code, output = finish(sandbox, "build", DOUBLE_PACKER_MODE="ok")
    assert code == 2
    assert f"another `invoke build` is running in this checkout (pid {first.pid} holds" in output
    kill_and_expect_nothing_left(sandbox, first)
    lock = sandbox / "build" / ".build.lock"
    assert lock.read_text().strip() == str(first.pid)  # the killed run's lock file stays
    assert processes.find_leftovers(sandbox / "build" / ".work", [lock]).locks == [lock]
    assert_converged(sandbox)  # and does not block


def _kill_run_and_its_watchdog(root: Path) -> None:
    run = start(root, "build", DOUBLE_PACKER_MODE="hang")
    found = wait_for(root, "qemu-system-x86_64")
    (watchdog,) = [p for p in found if "_watch" in p]
    os.kill(int(watchdog.split()[0]), signal.SIGKILL)
    run.kill()
    run.wait()
    # Packer was started from a pool thread (no parent-death signal): it and its QEMU live.
    left = poll(lambda: processes_of(root), lambda ps: len(ps) == 2, GONE_WITHIN_S)
    assert sorted("qemu-system" in p for p in left) == [False, True], left


def test_what_a_run_killed_with_its_watchdog_left_is_swept_by_the_next_run(sandbox: Path) -> None:
    _kill_run_and_its_watchdog(sandbox)
    code, output = finish(sandbox, "build", DOUBLE_PACKER_MODE="ok")
    assert code == 0, output
    (line,) = [line for line in output.splitlines() if "removed what an earlier run left" in line]
    assert "2 process(es)" in line and "1 work folder(s)" in line and "of 1 dead run(s)" in line
    assert processes_of(sandbox) == [] and left_in_work(sandbox) == []


def test_host_check_reports_a_dead_runs_leftovers_and_clean_removes_them(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bakery import host_check
    from tasks import clean

    _kill_run_and_its_watchdog(sandbox)
    monkeypatch.setattr(processes, "WORK_ROOT", sandbox / "build" / ".work")
    finding = host_check.check_leftovers()
    assert not finding.ok and finding.fix == "invoke clean --leftovers"
    assert "2 process(es)" in finding.detail and "qemu-system-x86_64" in finding.detail
    clean(Context(Config(lazy=True)), leftovers=True)
    assert processes_of(sandbox) == [] and left_in_work(sandbox) == []
    assert host_check.check_leftovers().ok


# --- caches and records ------------------------------------------------------------


def test_a_truncated_cached_base_image_is_detected_by_its_hash_and_rebuilt(
    tmp_path: Path,
) -> None:
    code, output = finish(tmp_path, "base")
    assert code == 0, output
    (folder,) = (tmp_path / "cache" / "base").iterdir()
    image = folder / "base.qcow2"
    with image.open("r+b") as handle:
        handle.truncate(image.stat().st_size // 2)
    code, output = finish(tmp_path, "base")
    assert code == 0 and "fails its sha256: rebuilding it" in output, output
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    assert json.loads((folder / "base.json").read_text())["sha256"] == sha


def _cached_base(
    folder: Path, content: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A cached base image written a moment ago, older than a shortened racy window."""
    image, record = folder / "base.qcow2", folder / "base.json"
    image.write_bytes(content)
    record.write_text(json.dumps({"sha256": hashlib.sha256(content).hexdigest()}))
    monkeypatch.setattr(base_image, "RACY_WINDOW_NS", 50_000_000)
    time.sleep(0.1)
    return image, record


def test_an_unchanged_base_image_is_hashed_once_not_on_every_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, record = _cached_base(tmp_path, b"a base image" * 1000, monkeypatch)
    hashed = []
    whole_file = base_image._file_sha256
    monkeypatch.setattr(base_image, "_file_sha256", lambda p: hashed.append(p) or whole_file(p))
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    assert [base_image._intact_sha256(image, record) for _ in range(3)] == [sha] * 3
    assert hashed == [image]


def test_a_base_image_hashed_in_the_tick_it_was_written_is_hashed_again(tmp_path: Path) -> None:
    image, record = tmp_path / "base.qcow2", tmp_path / "base.json"
    image.write_bytes(b"just written")
    record.write_text(json.dumps({"sha256": hashlib.sha256(b"just written").hexdigest()}))
    assert base_image._intact_sha256(image, record) is not None
    assert not (tmp_path / "base.qcow2.hashed").exists()  # racily clean: no stamp yet


def test_a_base_image_changed_in_place_is_hashed_again_even_with_its_mtime_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, record = _cached_base(tmp_path, b"a base image" * 1000, monkeypatch)
    assert base_image._intact_sha256(image, record) is not None
    assert (tmp_path / "base.qcow2.hashed").is_file()
    before = image.stat()
    with image.open("r+b") as handle:  # same size, one byte flipped, as a disk error might
        handle.write(b"A")
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert base_image._intact_sha256(image, record) is None


def test_a_corrupt_cached_wheelhouse_is_detected_by_its_hashes_and_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = b"PK\x03\x04 a wheel double"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        f"demo==1.0 \\\n    --hash=sha256:{hashlib.sha256(wheel).hexdigest()}\n    # via x\n"
    )
    downloads = []

    def pip_download_double(command: list[str], what: str, cwd: Path = REPO_ROOT) -> None:
        target = Path(command[command.index("-d") + 1])
        target.mkdir(parents=True, exist_ok=True)
        (target / "demo-1.0-py3-none-any.whl").write_bytes(wheel)
        downloads.append(target)

    monkeypatch.setattr(artifacts, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(artifacts, "REQUIREMENTS", requirements)
    monkeypatch.setattr(artifacts, "_run", pip_download_double)
    progress = Progress(Console())
    folder = artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend")
    assert artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend") == folder
    assert len(downloads) == 1  # intact: used as it is
    (folder / "demo-1.0-py3-none-any.whl").write_bytes(wheel[:5])  # a truncated wheel
    assert not artifacts.wheelhouse_intact(folder)
    artifacts.ensure_wheelhouse(tmp_path / "cache", progress, "backend")
    assert len(downloads) == 2 and artifacts.wheelhouse_intact(folder)
    (folder / "demo-1.0-py3-none-any.whl").unlink()  # a missing wheel
    assert not artifacts.wheelhouse_intact(folder)


def test_a_record_is_whole_at_whatever_moment_its_writer_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "build" / "images" / ROLE / "record.json"
    for kill_after in (1, 7, 40):
        run = start(tmp_path, "records", "100000")
        assert run.stdout is not None
        for _ in range(kill_after):
            run.stdout.readline()
        run.kill()
        run.wait()
        whole = json.loads(path.read_text())  # never a truncated record
        assert whole["role"] == ROLE and len(str(whole["padding"])) == 200_000


def test_a_truncated_record_from_an_older_bakery_means_rebuild(sandbox: Path) -> None:
    built = assert_converged(sandbox)
    path = sandbox / "build" / "images" / ROLE / "record.json"
    path.write_text(path.read_text()[:40])
    build.IMAGES_ROOT, saved = sandbox / "build" / "images", build.IMAGES_ROOT
    try:
        assert build.local_record(ROLE) is None
    finally:
        build.IMAGES_ROOT = saved
    assert assert_converged(sandbox)["inputs_hash"] == built["inputs_hash"]


def test_a_sweep_leaves_a_live_runs_processes_and_folders_alone(sandbox: Path) -> None:
    run = start(sandbox, "build", DOUBLE_PACKER_MODE="hang")
    running = wait_for(sandbox, "qemu-system-x86_64")
    work = left_in_work(sandbox)
    assert not processes.sweep(sandbox / "build" / ".work")  # a second run's sweep
    assert processes_of(sandbox) == running and left_in_work(sandbox) == work
    kill_and_expect_nothing_left(sandbox, run)
