"""The one suite runner and the one verdict rule, for every target.

A target boots an image to an `SshTarget`; `run_suites` runs `pytest tests/infra`
against it with a JUnit report, and `SuiteResult.verdict` decides: an image is
*verified* only when at least one check passed, none failed or errored and pytest
exited 0; anything else (including suites that did not run) *rejects* it. Failed checks
are named `module.test_name`, the same on every target and for every host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bakery import processes
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.records import REJECTED, VERIFIED, utc_timestamp

INFRA_TESTS = REPO_ROOT / "tests" / "infra"
# The lynis audit (tests/infra/test_hardening.py) took 16 of the backend gate's 19 minutes
# under TCG on a loaded host (docs/hardening.md); it may take up to 25 (LYNIS_TIMEOUT_S).
SUITE_TIMEOUT_S = 2400


@dataclass(frozen=True)
class SshTarget:
    """A booted image as the suites reach it. `known_hosts` None: a throwaway VM on a
    loopback port, whose host key is not worth pinning."""

    host: str
    port: int
    user: str
    key_file: Path
    machine: str = ""  # the VM's name or the instance id, for the record
    known_hosts: Path | None = None

    @property
    def testinfra_host(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        """A private folder of this boot: the key's."""
        return self.key_file.parent

    @property
    def ssh_config(self) -> Path:
        return self.workdir / "ssh_config"

    def write_ssh_config(self) -> Path:
        """An ssh config for this target (testinfra ignores --ssh-extra-args)."""
        checking = (
            f"  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {self.known_hosts}\n"
            if self.known_hosts
            else "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        )
        self.ssh_config.write_text(
            f"Host *\n{checking}  IdentityFile {self.key_file}\n  IdentitiesOnly yes\n"
            "  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n"
        )
        return self.ssh_config


@dataclass(frozen=True)
class SuiteResult:
    """What one run of the suites found, and how long booting and testing took."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_checks: tuple[str, ...] = ()
    returncode: int = 0
    junit: Path | None = None
    error: str | None = None
    boot_seconds: float = 0.0
    test_seconds: float = 0.0
    # The lynis audit's summary (bakery/verify/hardening.py), when the suites ran it.
    hardening: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        """The verdict rule, the same on every target."""
        return self.passed > 0 and self.failed == 0 and self.returncode == 0 and not self.error

    @property
    def verdict(self) -> str:
        return VERIFIED if self.verified else REJECTED

    @property
    def named_failures(self) -> tuple[str, ...]:
        """The failed checks, or what stands for them when none is named."""
        if self.verified:
            return ()
        if self.failed_checks:
            return self.failed_checks
        if self.error:
            return (self.error.splitlines()[0],)
        if self.passed == 0 and self.returncode == 0:
            return ("no check passed",)
        return (f"pytest exited {self.returncode} before any check failed",)

    def timed(self, boot_seconds: float, test_seconds: float) -> SuiteResult:
        return replace(self, boot_seconds=boot_seconds, test_seconds=test_seconds)

    def as_verification(self, machine: str = "") -> dict[str, Any]:
        """What an image record keeps of the run (see bakery/records.py)."""
        return {
            "at": utc_timestamp(),
            "machine": machine,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "failed_checks": list(self.named_failures),
            "boot_seconds": self.boot_seconds,
            "test_seconds": self.test_seconds,
            "junit": _shown(self.junit) if self.junit else None,
            "error": self.error,
            "hardening": self.hardening,
        }


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def read_junit(path: Path) -> tuple[int, int, int, tuple[str, ...]]:
    """(passed, failed, skipped, failed check names) from a pytest JUnit report.

    A failed or erroring case is named `module.test_name`: the parameter (the host's
    address) is left out, so the same failure has the same name on every target.
    """
    passed = failed = skipped = 0
    names: list[str] = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            module = case.get("classname", "").rsplit(".", 1)[-1]
            name = case.get("name", "?").split("[", 1)[0]
            names.append(f"{module}.{name}" if module else name)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, tuple(dict.fromkeys(names))


def hardening_from_junit(path: Path) -> dict[str, Any] | None:
    """The lynis summary `tests/infra/test_hardening.py` put in the report's test-suite
    properties, or None when the audit did not get that far."""
    for prop in ElementTree.parse(path).getroot().iter("property"):
        if prop.get("name") == "hardening":
            try:
                summary = json.loads(prop.get("value", ""))
            except ValueError:
                return None
            return summary if isinstance(summary, dict) else None
    return None


def failed_checks_from_junit(path: Path) -> tuple[str, ...]:
    """The failed checks a JUnit report names (see `read_junit`); none without a report."""
    return read_junit(path)[3] if path.exists() else ()


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
        "app_workers": cfg.app.workers,
        "distro_version": cfg.otel.distro_version,
        "agent_min_version": cfg.agent.min_version,
        "agent_package": cfg.agent.package,
        "max_exposure": cfg.verify.max_exposure,
        "min_hardening_index": cfg.verify.min_hardening_index,
        "backend_url": settings.get("BACKEND_URL", cfg.launch.backend_url),
        "db_name": settings.get("DB_NAME", cfg.launch.db_name),
        "db_user": settings.get("DB_USER", cfg.launch.db_user),
        "db_password": settings.get("DB_PASSWORD", ""),
        "telemetry": cfg.role == "backend",
    }


def suites_command(target: SshTarget, role: str, expect_file: Path, junit: Path) -> list[str]:
    """`pytest tests/infra` for one role against one host; the same command works by hand."""
    return [
        sys.executable, "-m", "pytest", str(INFRA_TESTS), "-p", "no:cacheprovider",
        "-q", "-o", "addopts=", f"--hosts={target.testinfra_host}",
        f"--ssh-config={target.ssh_config}", f"--bakery-role={role}",
        f"--bakery-expect={expect_file}", f"--junitxml={junit}",
    ]  # fmt: skip


def run_suites(
    target: SshTarget, cfg: BakeryConfig, settings: dict[str, str], junit: Path
) -> SuiteResult:
    """Run the role's suites against `target`; their output is kept beside the JUnit
    report (`<junit>.txt`)."""
    target.write_ssh_config()
    expect_file = target.workdir / "expect.json"
    # It holds the launch-time database password: private to this boot, removed after.
    expect_file.write_text(json.dumps(expectations(cfg, settings), indent=2))
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    output = junit.with_suffix(".txt")
    try:
        result = processes.run(
            suites_command(target, cfg.role, expect_file, junit),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return SuiteResult(returncode=-1, error=f"the suites ran over {SUITE_TIMEOUT_S}s")
    finally:
        expect_file.unlink(missing_ok=True)
    output.write_text(result.stdout + result.stderr)
    if not junit.is_file():
        return SuiteResult(
            returncode=result.returncode,
            error=f"the suites did not run (exit {result.returncode}); see {_shown(output)}",
        )
    passed, failed, skipped, names = read_junit(junit)
    return SuiteResult(
        passed, failed, skipped, names, result.returncode, junit,
        hardening=hardening_from_junit(junit),
    )  # fmt: skip
