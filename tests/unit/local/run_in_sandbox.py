"""One bakery run in a sandbox folder, for the fault tests to kill, crash and rerun.

`python -m tests.unit.local.run_in_sandbox ROOT WHAT [ARG]` points bakery's build,
work and cache folders into ROOT (nothing of the checkout is touched), then runs WHAT:

- `build`: `build_local` for the frontend, as `invoke build --force --no-verify` does;
- `base`: `ensure_base_image`, as the first step of a build does;
- `boot`: one gate boot (`booted`) of ROOT/image.qcow2, ARG = boot timeout in seconds;
- `smoke`: two boots at once from pool threads, as the smoke test's fixture does;
- `records`: write the frontend record over and over (ARG = how many times).

It prints bakery's one-line error and exits with bakery's exit code, like the CLI.
The doubles in tests/doubles/packer_qemu/bin stand in for Packer, QEMU, mmdebstrap.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from bakery import processes
from bakery.config import load_config
from bakery.errors import BakeryError
from bakery.local import base_image, build
from bakery.local.base_image import ensure_base_image
from bakery.local.vm import booted, end_stale_boots
from bakery.progress import Progress
from bakery.records import ImageRecord, write_record

ROLE = "frontend"


# The sandbox's Debian mirror: the doubles never fetch, and a unit test reads no host
# apt sources (tests/unit/host_state.py).
SANDBOX_MIRROR = "http://mirror.invalid/debian"


def sandbox_mirror(suite: str) -> str:
    return SANDBOX_MIRROR


def point_into(root: Path) -> None:
    base_image.host_debian_mirror = sandbox_mirror
    build.REPO_ROOT = root
    build.BUILD_ROOT = root / "build"
    build.WORK_ROOT = processes.WORK_ROOT = root / "build" / ".work"
    build.IMAGES_ROOT = root / "build" / "images"
    build.LOGS_ROOT = root / "build" / "logs"


def main(root: Path, what: str, arg: str | None) -> int:
    point_into(root)
    progress = Progress(Console(width=200))
    # The Packer path (a stand-in packer): the container bake needs LXC and a real base.
    overrides = [
        "local.accelerator=tcg", "local.cache_dir=cache", "local.disk_size_gb=2",
        "local.bake_in=vm",
    ]  # fmt: skip
    cfg = load_config(ROLE, "local", overrides=overrides)
    if what == "build":
        (result,) = build.build_local([cfg], progress, force=True)
        if result.error:
            print(f"bakery: {result.error.splitlines()[0]}")
        return 0 if result.status == "built" else 1
    if what == "base":
        print(ensure_base_image(cfg, root / "cache", progress).sha256)
        return 0
    if what in ("boot", "smoke"):
        work = build.WORK_ROOT / ("verify" if what == "boot" else "smoke")
        swept = end_stale_boots(work)
        if swept:
            print(swept, flush=True)
        names = [f"{what}-a"] if what == "boot" else [f"{what}-a", f"{what}-b"]
        with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
            boots = [
                pool.submit(
                    lambda name: stack.enter_context(
                        booted(root / "image.qcow2", name, {}, work, "tcg",
                               1, 256, float(arg or 600), user="admin")
                    ),
                    name,
                )
                for name in names
            ]  # fmt: skip
            for future in boots:
                future.result()
        return 0
    if what == "records":
        for count in range(int(arg or 1)):
            record = ImageRecord(
                role=ROLE, os="debian12", target="local", image=f"{ROLE}-{count}.qcow2",
                inputs_hash=str(count), git_commit="", packer_version="", built_at="",
                path=build.record_path(ROLE), details={"padding": "x" * 200_000},
            )  # fmt: skip
            write_record(record)
            print(json.dumps({"written": count}), flush=True)
        return 0
    raise SystemExit(f"unknown run {what}")


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1]), sys.argv[2], (sys.argv[3:] or [None])[0]))
    except BakeryError as exc:
        print(f"bakery: {str(exc).splitlines()[0]}", flush=True)
        sys.exit(exc.exit_code)
