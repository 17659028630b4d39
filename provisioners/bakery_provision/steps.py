"""The steps Packer runs, by the names in the bake plan, and how one is run."""

from __future__ import annotations

from collections.abc import Callable

from bakery_provision import (
    agent,
    backend,
    database,
    frontend,
    harden,
    manifest,
    prepare,
    seal,
)
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError

STEPS: dict[str, Callable[[StepContext], None]] = {
    "prepare": prepare.run,
    "install-agent": agent.run,
    "install-backend": backend.run,
    "install-frontend": frontend.run,
    "install-database": database.run,
    "harden": harden.run,
    "record-manifest": manifest.run,
    "seal": seal.run,
}


def run_step(ctx: StepContext) -> None:
    """Run the context's step, if the plan has it (a role runs only its own install)."""
    if ctx.step not in STEPS:
        raise ProvisionError(f"unknown step {ctx.step!r}; known: {', '.join(STEPS)}")
    if ctx.step not in ctx.plan.steps:
        raise ProvisionError(
            f"step {ctx.step!r} is not in this bake plan ({', '.join(ctx.plan.steps)})"
        )
    ctx.say(f"start ({ctx.plan.role} on {ctx.plan.os}, target {ctx.plan.target})")
    STEPS[ctx.step](ctx)
    ctx.say("done")
