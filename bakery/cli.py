"""The edge between invoke tasks and the bakery package: options in, exit codes out.

With bakery/report.py and bakery/progress.py this is the CLI layer, the only code that
holds a console; everything else returns data, raises, or reports through a Progress.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

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
    """Turn BakeryError into one message and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BakeryError as exc:
            label = "bad input" if isinstance(exc, BadInput) else "failed"
            console.print(f"[bold red]bakery: {label}:[/] {exc}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.print("[bold red]bakery: interrupted[/]; cleanup ran, nothing half-written")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
