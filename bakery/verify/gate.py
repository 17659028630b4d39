"""The verification gate, for every target: boot the image with launch-time settings,
run its testinfra suites, and record it `verified` or `rejected`.

An image is handed out only once verified: `invoke images` shows the status, and a
rejected record names the failing checks and the JUnit report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bakery.config import BakeryConfig
from bakery.progress import Progress
from bakery.records import ImageRecord, record_verdict
from bakery.target import ImageTarget
from bakery.verify.launch import launch_settings
from bakery.verify.suites import SshTarget, SuiteResult, run_suites

# Runs the suites against a booted image: `run_suites`, or a test's stand-in.
SuiteRunner = Callable[[SshTarget, BakeryConfig, dict[str, str], Path], SuiteResult]


def verify_record(
    target: ImageTarget,
    cfg: BakeryConfig,
    record: ImageRecord,
    junit: Path,
    progress: Progress,
    runner: SuiteRunner = run_suites,
) -> SuiteResult:
    """Boot `record`'s image on `target`, run the suites, record and mark the verdict.

    The verdict is recorded while the machine still runs, so a clean-up that fails
    cannot lose it; the machine is stopped however this ends.
    """
    settings = launch_settings(cfg)
    with ExitStack() as machine:  # stopped on every way out
        started = time.monotonic()
        with progress.step(cfg.role, f"boot {record.image} ({target.name})"):
            ssh = machine.enter_context(target.boot(cfg, record, settings))
        boot_seconds = round(time.monotonic() - started, 1)
        started = time.monotonic()
        with progress.step(cfg.role, "run the testinfra suites"):
            result = runner(ssh, cfg, settings, junit)
        result = result.timed(boot_seconds, round(time.monotonic() - started, 1))
        record_verdict(record.path, result.verdict, result.as_verification(ssh.machine))
        target.mark(cfg, record, result)
    return result
