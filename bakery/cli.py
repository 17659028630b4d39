"""The edge between invoke tasks and the bakery package: options in, exit codes out.

With bakery/report.py and bakery/progress.py this is the CLI layer, the only code that
holds a console; everything else returns data, raises, or reports through a Progress.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit, ParseError
from invoke.program import Program
from invoke.tasks import Task
from invoke.tasks import task as invoke_task
from rich.console import Console
from rich.markup import escape

from bakery import ROLES
from bakery.config import BakeryConfig, load_config
from bakery.errors import BadInput, BakeryError
from bakery.progress import Progress, use_progress

# Progress and diagnostics go to stderr; results (tables, listings, JSON) to stdout, so
# `invoke images | grep` finds them. CI logs are not terminals: give tables room
# instead of 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
results = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
progress = Progress(console)
# Library modules report only through a Progress; this one prints on stderr.
use_progress(progress)

# The help text of the options every task shares.
COMMON_HELP = {
    "role": "role to act on: backend, frontend or database (repeatable; default: all three)",
    "target": "local (Packer's qemu builder, the default) or aws (amazon-ebs)",
    "config": "a YAML file of settings layered over config/ (see `invoke schema`)",
    "set": "override one setting, KEY.PATH=VALUE (repeatable), e.g. local.cpus=2",
}

F = TypeVar("F", bound=Callable[..., Any])

# One meaning per short flag in every task (Invoke would pick the first free letter of
# each name, task by task, so -s meant --set here and --secret-path there). An option
# not in this table has no short flag.
SHORT_FLAGS = {
    "role": "r",
    "target": "t",
    "config": "c",
    "set": "s",
    "environment": "e",
    "output": "o",
    "force": "f",
    "parallel": "p",
    "no_verify": "n",
    "apply": "a",
    "user_data": "u",
    "instance_profile": "i",
}


class BakeryTask(Task[Any]):
    """An Invoke task whose short flags come from SHORT_FLAGS only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        # Invoke pops each help text as it builds an argument: keep them for the next call
        # (each in-process parse, `--help` after a run, the documentation tests).
        kept = dict(self.help)
        try:
            arguments: list[Any] = super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept
        return arguments

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        return opts


def task(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """invoke.task with bakery's one table of short flags."""
    kwargs.setdefault("klass", BakeryTask)
    decorator: Callable[[F], F] = invoke_task(*args, **kwargs)
    return decorator


def output_path(option: str, value: str | None, default: Path) -> Path:
    """A path option as the user meant it: relative to the current folder, like --config.
    A folder given where a file goes is refused before anything is written."""
    path = Path(value) if value else default
    if path.is_dir():
        raise BadInput(f"{option} {value}: is a folder; give the path of a file to write")
    return path


def write_text_atomically(path: Path, text: str) -> None:
    """Write a whole file or nothing: a full disk or a read-only folder leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    try:
        scratch.write_text(text, encoding="utf-8")
        scratch.replace(path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def selected_roles(roles: Iterable[str] | None) -> list[str]:
    """The roles a task acts on, in the canonical order; unknown names are bad input."""
    chosen = list(roles or []) or list(ROLES)
    for role in chosen:
        if role not in ROLES:
            raise BadInput(f"--role {role}: unknown role; choose from {', '.join(ROLES)}")
    return [role for role in ROLES if role in chosen]


def load_configs(
    roles: Iterable[str] | None,
    target: str,
    config_file: str | None,
    overrides: Iterable[str] | None,
) -> list[BakeryConfig]:
    """Load and validate every selected role before anything is written."""
    user_file = Path(config_file) if config_file else None
    return [
        load_config(role, target, user_file, list(overrides or []))
        for role in selected_roles(roles)
    ]


def exits_cleanly(func: F) -> F:
    """Turn BakeryError into one message and its exit code, a filesystem fault (read-only,
    full, a folder where a file goes) into one line naming the path and exit 1, Ctrl-C
    into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BakeryError as exc:
            label = "bad input" if isinstance(exc, BadInput) else "failed"
            # escape: a value in the message ('[/x]' in a tag) is text, not Rich markup
            console.print(
                f"[bold red]bakery: {label}:[/] {escape(str(exc))}", soft_wrap=True, emoji=False
            )
            sys.exit(exc.exit_code)
        except OSError as exc:
            where = exc.filename if exc.filename is not None else "a file"
            console.print(
                f"[bold red]bakery: failed:[/] {escape(str(where))}: "
                f"{escape(exc.strerror or str(exc))}; nothing was left half-written",
                soft_wrap=True,
                emoji=False,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            console.print("[bold red]bakery: interrupted[/]; cleanup ran, nothing half-written")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def exit_2_on_bad_options() -> None:
    """Make Invoke's parse errors (an unknown or value-less option, a missing required
    one, an unknown task) bakery's one line and exit 2, like every other bad input.

    Invoke prints them as they are and exits 1; tasks.py calls this when Invoke loads it,
    which is before the task arguments are parsed.
    """
    if getattr(Program.parse_tasks, "bakery_exit_2", False):
        return
    parse_tasks = Program.parse_tasks

    def parse_tasks_exit_2(self: Program) -> None:
        try:
            parse_tasks(self)
            # Invoke takes a repeatable option left without a value at the end as empty
            last = self.argv[-1] if self.argv else ""
            if last in ("--set", "-s", "--role", "-r"):
                raise ParseError(f"{last} needs a value")
        except ParseError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else "bad options"
            # Invoke names a flag by its repr, <Argument: target (t)>: say --target
            message = re.sub(r"<Argument: ([\w-]+)[^>]*>", r"--\1", message)
            raise Exit(f"bakery: bad input: {message} (see `invoke --help TASK`)", code=2) from None

    parse_tasks_exit_2.bakery_exit_2 = True  # type: ignore[attr-defined]
    Program.parse_tasks = parse_tasks_exit_2  # type: ignore[method-assign]
