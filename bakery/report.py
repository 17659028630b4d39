"""Tables for people, for the CLI to print: what a build or verification run produced,
the images there are, what `invoke host-check` found. Each function renders onto the
console it is given (the CLI's stdout console: results go to stdout)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bakery.config import ARCHES, REPO_ROOT
from bakery.host_check import Finding
from bakery.local.build import RoleResult, image_path, local_record
from bakery.progress import Console
from bakery.records import LISTING_COLUMNS, ImageRecord, listing_row
from bakery.verify.suites import SuiteResult


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _shown(record: ImageRecord) -> str:
    return str(image_path(record).relative_to(REPO_ROOT))


def print_build_table(
    out: Console, results: list[RoleResult], verdicts: dict[str, SuiteResult]
) -> None:
    """role, image, build outcome, verified/rejected, checks, build/boot/test seconds."""
    table = _table("images", ("role", "image", "build", "verification", "checks ok/failed",
                              "build s", "boot s", "test s"))  # fmt: skip
    for result in results:
        arch = result.record.arch if result.record else "x86_64"
        record = local_record(result.role, arch) or result.record
        verdict = verdicts.get(result.role)
        verification = (record.verification if record else None) or {}
        table.add_row(
            result.role,
            _shown(result.record) if result.record else "-",
            result.status if not result.error else f"failed: {result.error.splitlines()[0]}",
            verdict.verdict if verdict else (record.status if record else "-"),
            f"{verification.get('passed', '-')}/{verification.get('failed', '-')}",
            str(record.details.get("build_seconds", "-"))
            if record and result.status == "built"
            else "-",
            str(verification.get("boot_seconds", "-")) if verdict else "-",
            str(verification.get("test_seconds", "-")) if verdict else "-",
        )
    out.print(table)


def print_verify_table(out: Console, verdicts: list[tuple[str, SuiteResult]]) -> None:
    table = _table("verification", ("role", "verdict", "passed", "failed", "skipped",
                                    "boot s", "test s", "report"))  # fmt: skip
    for role, v in verdicts:
        report = str(v.junit.relative_to(REPO_ROOT)) if v.junit else (v.error or "-")
        table.add_row(role, v.verdict, str(v.passed), str(v.failed), str(v.skipped),
                      str(v.boot_seconds), str(v.test_seconds), report)  # fmt: skip
    out.print(table)


def print_local_images(out: Console, roles: list[str]) -> None:
    """One row per role and architecture: x86_64 always (`not built` when absent), and
    each other architecture the role has an image of, beside it."""
    table = _table("local images", (*LISTING_COLUMNS, "vulnerabilities"))
    for role in roles:
        for arch in ARCHES:
            record = local_record(role, arch)
            if record is None:
                if arch == "x86_64":
                    table.add_row(role, arch, "-", "-", "not built", "-", "-", "-")
                continue
            table.add_row(
                *listing_row(record, _shown(record)),
                vulnerability_counts(record.details.get("vulnerabilities")),
            )
    out.print(table)


def vulnerability_counts(found: Any) -> str:
    """The gate's result in a cell: `failed: 3 unrated, 1 accepted`, `skipped`, or `-`."""
    if not isinstance(found, dict):
        return "-"
    if found.get("status") == "skipped":
        return f"skipped ({found.get('skipped_by', '')})"
    counts = found.get("counts") or {}
    shown = ", ".join(f"{n} {severity}" for severity, n in counts.items()) or "none"
    return f"{found.get('status')}: {shown}"


def print_findings(out: Console, findings: list[Finding]) -> None:
    table = _table("bakery host-check", ("check", "status", "detail", "fix"))
    for f in findings:
        table.add_row(f.check, "[green]ok[/]" if f.ok else "[red]FAIL[/]", f.detail, f.fix)
    out.print(table)
