"""The verification gate: boot each image with launch-time settings, run its testinfra
suites, and mark its record `verified` or `rejected`.

An image is handed out only once verified: `invoke images` shows the status, and a
rejected record names the failing checks and the JUnit report in `build/reports/`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import processes
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.errors import BadInput, BakeryError
from bakery.local.accelerator import choose_accelerator
from bakery.local.build import WORK_ROOT, image_dir, read_record, write_record
from bakery.progress import Progress
from bakery.render import BUILD_ROOT
from bakery.verify.vm import booted, end_stale_boots

REPORTS_ROOT = BUILD_ROOT / "reports"
VERIFY_WORK = WORK_ROOT / "verify"
INFRA_TESTS = REPO_ROOT / "tests" / "infra"
SUITE_TIMEOUT_S = 900


@dataclass
class Verdict:
    """The outcome of verifying one role's image."""

    role: str
    status: str  # verified | rejected | error
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_checks: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    test_seconds: float = 0.0
    junit: Path | None = None
    error: str | None = None


def launch_settings(cfg: BakeryConfig) -> dict[str, str]:
    """Launch-time settings for a verification boot: deliberately not the baked defaults,
    so the checks prove the values arrived at launch."""
    settings = {
        "SERVICE_NAME": f"{cfg.service.name}-verify",
        "DEPLOYMENT_ENVIRONMENT": "verify",
    }
    if cfg.role == "backend":
        # Export Application Signals metrics every 5 s instead of 60 s, so the telemetry
        # proof does not wait a minute; an SDK setting users may tune the same way.
        settings["OTEL_METRIC_EXPORT_INTERVAL"] = "5000"
    if cfg.role == "frontend":
        settings["BACKEND_URL"] = "http://127.0.0.1:8000"
    if cfg.role == "database":
        settings.update(
            DB_NAME=cfg.launch.db_name,
            DB_USER=cfg.launch.db_user,
            DB_PASSWORD=secrets.token_urlsafe(18),
        )
    return settings


def expectations(cfg: BakeryConfig, settings: dict[str, str]) -> dict[str, Any]:
    """What the suites in tests/infra hold the image to (see tests/infra/README.md)."""
    return {
        "role": cfg.role,
        "target": cfg.target,
        "service_name": settings["SERVICE_NAME"],
        "deployment_environment": settings["DEPLOYMENT_ENVIRONMENT"],
        "log_group": cfg.service.log_group,
        "app_user": cfg.app.user,
        "app_dir": cfg.app.dir,
        "app_port": cfg.app.port,
        "distro_version": cfg.otel.distro_version,
        "agent_min_version": cfg.agent.min_version,
        "agent_package": cfg.agent.package,
        "max_exposure": cfg.verify.max_exposure,
        "backend_url": settings.get("BACKEND_URL", cfg.launch.backend_url),
        "db_name": settings.get("DB_NAME", cfg.launch.db_name),
        "db_user": settings.get("DB_USER", cfg.launch.db_user),
        "db_password": settings.get("DB_PASSWORD", ""),
        "telemetry": cfg.role == "backend",
    }


def read_junit(path: Path) -> tuple[int, int, int, list[str]]:
    """(passed, failed, skipped, failed test ids) from a pytest JUnit file."""
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    failures: list[str] = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failures


def run_suites(
    testinfra_host: str, ssh_config: Path, role: str, expect_file: Path, junit: Path
) -> subprocess.CompletedProcess[str]:
    """`pytest tests/infra` for one role against one host; the same command works by hand."""
    return processes.run(
        [
            sys.executable, "-m", "pytest", str(INFRA_TESTS), "-p", "no:cacheprovider",
            "-q", "-o", "addopts=", f"--hosts={testinfra_host}", f"--ssh-config={ssh_config}",
            f"--bakery-role={role}", f"--bakery-expect={expect_file}", f"--junitxml={junit}",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, check=False,
    )  # fmt: skip


class LocalGate:
    """Verify local images, one VM per role."""

    def __init__(self, configs: list[BakeryConfig], progress: Progress) -> None:
        self.configs = configs
        self.progress = progress
        self.accelerator: str | None = None

    def run(self, parallel: int) -> list[Verdict]:
        swept = end_stale_boots(VERIFY_WORK)  # a killed earlier run must not leave VMs behind
        if swept:
            self.progress.say("host", swept)
        REPORTS_ROOT.mkdir(parents=True, exist_ok=True)
        images = {cfg.role: self._image(cfg.role) for cfg in self.configs}
        self.accelerator = self._choose_accelerator()
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(self.configs)))) as pool:
            futures = [pool.submit(self._verify, cfg, images[cfg.role]) for cfg in self.configs]
            return [future.result() for future in futures]

    def _image(self, role: str) -> Path:
        record = read_record(role)
        image = image_dir(role) / str(record["image"]) if record else None
        if image is None or not image.is_file():
            raise BadInput(f"no local image for role {role}: run `invoke build --role {role}`")
        return image

    def _choose_accelerator(self) -> str:
        record = read_record(self.configs[0].role) or {}
        base = record.get("base_image", {}).get("inputs_hash", "")
        folder = REPO_ROOT / self.configs[0].local.cache_dir / "base" / base
        accel, warning = choose_accelerator(
            self.configs[0].local.accelerator,
            folder / "vmlinuz",
            folder / "initrd.img",
            REPO_ROOT / self.configs[0].local.cache_dir / "accelerator.json",
        )
        if warning:
            self.progress.say("host", f"[yellow]warning:[/] {warning}")
        return accel

    def _verify(self, cfg: BakeryConfig, image: Path) -> Verdict:
        try:
            verdict = self._boot_and_test(cfg, image)
        except BakeryError as exc:
            verdict = Verdict(cfg.role, "error", error=str(exc))
        self._record(cfg.role, verdict)
        return verdict

    def _boot_and_test(self, cfg: BakeryConfig, image: Path) -> Verdict:
        assert self.accelerator is not None
        role = cfg.role
        settings = launch_settings(cfg)
        expect_file = REPORTS_ROOT / f"{role}.expect.json"
        expected = expectations(cfg, settings)
        # The password is the one secret here; the report keeps no copy of it.
        expect_file.write_text(json.dumps(expected, indent=2))
        junit = REPORTS_ROOT / f"{role}.junit.xml"
        junit.unlink(missing_ok=True)
        try:
            with ExitStack() as vm_lifetime:  # the VM is stopped on every way out
                with self.progress.step(role, f"boot {image.name} ({self.accelerator})"):
                    vm = vm_lifetime.enter_context(
                        booted(
                            image,
                            f"verify-{role}",
                            settings,
                            VERIFY_WORK,
                            self.accelerator,
                            cfg.local.cpus,
                            cfg.local.memory_mb,
                            cfg.verify.boot_timeout_s,
                        )
                    )
                started = time.monotonic()
                with self.progress.step(role, "run the testinfra suites"):
                    result = run_suites(vm.testinfra_host, vm.ssh_config, role, expect_file, junit)
                test_seconds = round(time.monotonic() - started, 1)
        finally:
            expect_file.unlink(missing_ok=True)
        (REPORTS_ROOT / f"{role}.pytest.txt").write_text(result.stdout + result.stderr)
        if not junit.is_file():
            return Verdict(role, "error", boot_seconds=vm.boot_seconds, error=(
                f"the suites did not run (exit {result.returncode}); "
                f"see {(REPORTS_ROOT / f'{role}.pytest.txt').relative_to(REPO_ROOT)}"
            ))  # fmt: skip
        passed, failed, skipped, failures = read_junit(junit)
        ok = failed == 0 and result.returncode == 0 and passed > 0
        return Verdict(
            role, "verified" if ok else "rejected", passed, failed, skipped, failures,
            vm.boot_seconds, test_seconds, junit,
        )  # fmt: skip

    def _record(self, role: str, verdict: Verdict) -> None:
        record = read_record(role)
        if record is None:
            return
        record["status"] = "verified" if verdict.status == "verified" else "rejected"
        record["verification"] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "passed": verdict.passed,
            "failed": verdict.failed,
            "skipped": verdict.skipped,
            "failed_checks": verdict.failed_checks,
            "boot_seconds": verdict.boot_seconds,
            "test_seconds": verdict.test_seconds,
            "junit": str(verdict.junit.relative_to(REPO_ROOT)) if verdict.junit else None,
            "error": verdict.error,
        }
        write_record(role, record)


def verify_local(configs: list[BakeryConfig], progress: Progress, parallel: int) -> list[Verdict]:
    """Verify the selected roles' local images and record the verdicts."""
    return LocalGate(configs, progress).run(parallel)
