"""wait-for-agent, the backend unit's ExecStartPre: it waits, bounded, for the agent's
ports (real sockets on 127.0.0.1). Its place in the rendered unit is tested in
tests/unit/provisioners/test_rootfs_render.py."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from program_fakes import ONIMAGE, load_program

SCRIPT = ONIMAGE / "wait-for-agent"


@pytest.fixture(scope="module")
def wait_for_agent() -> ModuleType:
    return load_program("wait-for-agent")


@pytest.fixture
def closed_port() -> Iterator[socket.socket]:
    """A port bound on 127.0.0.1 but not listening: connections to it are refused, and no
    other process can take it while the test runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def listening_port(closed_port: socket.socket) -> socket.socket:
    closed_port.listen()
    return closed_port


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


@pytest.fixture
def other_listening_port() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield address(sock)
    sock.close()


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_returns_at_once_when_the_agent_answers_on_every_port(
    listening_port: socket.socket, other_listening_port: str
) -> None:
    result = run_script("30", address(listening_port), other_listening_port)
    assert result.returncode == 0, result.stderr
    assert f"answers on {address(listening_port)}, {other_listening_port} after" in result.stdout


def test_waits_until_a_late_port_starts_listening(
    wait_for_agent: ModuleType, closed_port: socket.socket
) -> None:
    tried = threading.Event()
    original = wait_for_agent.answers

    def answers_then_listen(where: tuple[str, int]) -> bool:
        answered = bool(original(where))
        if not tried.is_set():
            # The first try was refused; the "agent" opens its port only now.
            tried.set()
            closed_port.listen()
        return answered

    wait_for_agent.answers = answers_then_listen
    try:
        silent = wait_for_agent.wait_for([closed_port.getsockname()], 30)
    finally:
        wait_for_agent.answers = original
    assert tried.is_set()
    assert silent == []


def test_gives_up_after_the_timeout_with_a_warning_and_lets_the_app_start(
    closed_port: socket.socket, other_listening_port: str
) -> None:
    result = run_script("0.5", other_listening_port, address(closed_port))
    assert result.returncode == 0, result.stderr
    assert f"did not answer on {address(closed_port)} within 0.5s" in result.stdout
    # Only the silent port is named: the one that answered is not the problem.
    assert other_listening_port not in result.stdout.split("within")[0]
    assert "systemctl status amazon-cloudwatch-agent" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((), "usage: wait-for-agent TIMEOUT_S HOST:PORT"),
        (("soon", "localhost:4316"), "TIMEOUT_S must be a number of seconds, got 'soon'"),
        (("-1", "localhost:4316"), "TIMEOUT_S must not be negative"),
        (("5", "localhost"), "'localhost' is not HOST:PORT"),
        (("5", "localhost:70000"), "'localhost:70000' is not HOST:PORT"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args: tuple[str, ...], named: str) -> None:
    result = run_script(*args)
    assert result.returncode == 2
    assert named in result.stderr
