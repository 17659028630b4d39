"""systemd during the bake: reload unit files and enable units, never start the app's."""

from __future__ import annotations

from collections.abc import Sequence

from bakery_provision.context import StepContext


def reload_units(ctx: StepContext) -> None:
    """Make systemd read unit files the step installed."""
    ctx.runner.run(["systemctl", "daemon-reload"])


def enable(ctx: StepContext, units: Sequence[str]) -> list[str]:
    """Enable units that are not enabled yet; return the ones it enabled."""
    enabled = []
    for unit in units:
        state = ctx.runner.run(["systemctl", "is-enabled", unit], check=False).stdout.strip()
        if state != "enabled":
            ctx.runner.run(["systemctl", "enable", unit])
            enabled.append(unit)
    ctx.say("enabled " + ", ".join(enabled) if enabled else "units already enabled")
    return enabled


def is_active(ctx: StepContext, unit: str) -> bool:
    return ctx.runner.run(["systemctl", "is-active", "--quiet", unit], check=False).ok
