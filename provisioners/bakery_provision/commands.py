"""Running programs on the image: one `CommandRunner` every step goes through.

Steps never call subprocess themselves, so the tests can swap in a runner that records
the commands and answers from canned results, without apt, dnf or systemd.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bakery_provision.errors import ProvisionError

# How much of a failed command's output an error message carries.
STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(ProvisionError):
    """A command exited non-zero (or could not start) where success was required."""

    def __init__(self, result: CommandResult, hint: str = "") -> None:
        self.result = result
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        tail = "\n  ".join(output[-STDERR_TAIL_LINES:]) or "(no output)"
        message = (
            f"command failed with exit code {result.returncode}: {shlex.join(result.argv)}\n"
            f"  {tail}"
        )
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


class CommandRunner:
    """Runs programs for real, capturing their output (the bake's runner)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run argv; with check, a non-zero exit raises CommandFailed. env adds to os.environ."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            completed = subprocess.run(
                list(argv),
                env=full_env,
                input=input_text,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except FileNotFoundError:
            result = CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr if isinstance(exc.stderr, str) else ""
            result = CommandResult(tuple(argv), 124, "", f"timed out after {timeout} s\n{stderr}")
        else:
            result = CommandResult(
                tuple(argv), completed.returncode, completed.stdout, completed.stderr
            )
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def exists(self, program: str) -> bool:
        """Whether a program is on PATH (or an existing executable path)."""
        return shutil.which(program) is not None
