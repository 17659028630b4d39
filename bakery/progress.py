"""Progress for people: role, step, elapsed, and the timings records keep.

Library code reports progress only through a `Progress` it is given (or, for the AWS
release-side modules, the one the CLI installed with `use_progress`); it never holds
a console itself. The CLI builds the `Progress` around its stderr console, so progress
and diagnostics go to stderr and results (tables, listings) to stdout.

Plain lines rather than a live display, because builds run in CI logs and in parallel
threads; a heartbeat line every `heartbeat_s` says a long step is still alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Console(Protocol):
    """What a Progress needs of a console (Rich's Console has it)."""

    def print(self, *objects: Any, **kwargs: Any) -> None: ...


class Progress:
    """Prints `[role] step` lines and remembers how long each step took.

    Without a console it prints nothing and still keeps the timings.
    """

    def __init__(self, console: Console | None = None, heartbeat_s: float = 30.0) -> None:
        self.console = console
        self.heartbeat_s = heartbeat_s
        self.timings: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def line(self, message: str) -> None:
        """One line of progress that belongs to no role."""
        if self.console is not None:
            self.console.print(message, soft_wrap=True)

    def output(self, line: str) -> None:
        """A line of a tool's own output, shown as it is (no markup)."""
        if self.console is not None:
            self.console.print(line, markup=False, soft_wrap=True)

    def say(self, role: str, message: str) -> None:
        self.line(f"[cyan]\\[{role}][/] {message}")

    def record(self, role: str, name: str, started: float) -> None:
        """Remember a step that was timed elsewhere (e.g. from Packer's output)."""
        with self._lock:
            self.timings.setdefault(role, {})[name] = round(time.monotonic() - started, 1)

    @contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A spinner (where the console has one) saying what bakery waits for, then done."""
        status = getattr(self.console, "status", None)
        if callable(status):
            with status(f"waiting for {what}…"):
                yield
        else:
            self.line(f"waiting for {what}…")
            yield
        self.line(f"[green]done[/] {what}")

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


_installed = Progress()


def use_progress(progress: Progress) -> None:
    """Install the Progress that modules without one of their own report to (the CLI's)."""
    global _installed
    _installed = progress


def installed_progress() -> Progress:
    """The Progress the CLI installed; a silent one when none was."""
    return _installed
