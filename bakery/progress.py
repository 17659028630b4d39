"""Progress output for long steps: role, step, elapsed; and the timings for records.

Plain lines rather than a live display, because builds run in CI logs and in parallel
threads; a heartbeat line every `heartbeat_s` says a long step is still alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


class Progress:
    """Prints `[role] step` lines and remembers how long each step took."""

    def __init__(self, console: Console, heartbeat_s: float = 30.0) -> None:
        self.console = console
        self.heartbeat_s = heartbeat_s
        self.timings: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def say(self, role: str, message: str) -> None:
        self.console.print(f"[cyan]\\[{role}][/] {message}", soft_wrap=True)

    def record(self, role: str, name: str, started: float) -> None:
        """Remember a step that was timed elsewhere (e.g. from Packer's output)."""
        with self._lock:
            self.timings.setdefault(role, {})[name] = round(time.monotonic() - started, 1)

    @contextmanager
    def step(self, role: str, name: str) -> Iterator[None]:
        start = time.monotonic()
        done = threading.Event()
        self.say(role, f"{name} ...")

        def heartbeat() -> None:
            while not done.wait(self.heartbeat_s):
                self.say(role, f"{name}: still running ({time.monotonic() - start:.0f}s)")

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            yield
        except BaseException:
            self.say(role, f"[red]{name}: failed after {time.monotonic() - start:.1f}s[/]")
            raise
        finally:
            done.set()
            beat.join()
        self.record(role, name, start)
        self.say(role, f"{name}: done in {time.monotonic() - start:.1f}s")
