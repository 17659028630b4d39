#!/usr/bin/env python3
"""Run one bake step on the image: `provision.py <step> --plan /tmp/bakery/bake.json`.

Packer calls this once per step, as root, with the image's python3 (3.9 on Amazon
Linux 2023): standard library only. The steps live in `bakery_provision/` beside it.
Exit code 0 when the step is done, 1 with a message on stderr when it failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.plan import load_plan
from bakery_provision.steps import STEPS, run_step


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="provision.py", description="Run one bake step of the bakery image build."
    )
    parser.add_argument("step", choices=list(STEPS), help="the step to run")
    parser.add_argument("--plan", type=Path, required=True, help="the bake plan (bake.json)")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="filesystem root to act on (default /; other roots are for tests)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        plan = load_plan(args.plan)
        run_step(StepContext(plan=plan, step=args.step, root=args.root))
    # OSError: a file the step needed could not be read or written; its message names it.
    except (ProvisionError, OSError) as exc:
        print(f"{args.step}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
