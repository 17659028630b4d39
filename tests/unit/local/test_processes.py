"""bakery.processes in this process: a child's group ends with it, `run` is
`subprocess.run` for its callers. (Killed runs: test_faults.py.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bakery import processes


@pytest.fixture(autouse=True)
def work_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(processes, "WORK_ROOT", tmp_path / ".work")
    return tmp_path / ".work"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_what_is_left_of_a_group_ends_when_its_leader_is_reaped() -> None:
    # A Packer that crashes leaves its QEMU in its group: reaping Packer ends the QEMU.
    leader = processes.spawn(
        ["bash", "-c", "sleep 300 & echo $!; exit 3"], stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout is not None
    orphan = int(leader.stdout.readline())
    assert _alive(orphan)
    assert leader.wait() == 3
    deadline = time.monotonic() + 15
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(orphan)


def test_run_answers_like_subprocess_run() -> None:
    done = processes.run(["sh", "-c", "cat; exit 4"], input="x", capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (4, "x")
    with pytest.raises(subprocess.CalledProcessError):
        processes.run(["false"], check=True)


def test_children_carry_the_run_mark_and_claimed_folders_name_their_run(tmp_path: Path) -> None:
    child = processes.spawn(["sh", "-c", "echo up; exec sleep 30"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        # "up" comes before the exec: while the kernel swaps the program in, the child's
        # environ reads empty. Read it once the child is `sleep`.
        deadline = time.monotonic() + 15
        while _comm(child.pid) != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _comm(child.pid) == "sleep"
        environ = Path(f"/proc/{child.pid}/environ").read_bytes().split(b"\0")
        registry = processes.this_run().registry
        assert f"BAKERY_RUN={registry}".encode() in environ
        (tmp_path / "scratch").mkdir()
        folder = processes.claim(tmp_path / "scratch")
        assert (folder / processes.OWNER_FILE).read_text().strip() == str(registry)
        assert processes.registry_alive(registry)
        assert not processes.find_leftovers()  # a live run's things are no leftovers
    finally:
        child.kill()
        child.wait()
