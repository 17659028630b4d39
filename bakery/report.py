"""Tables for people: what a build or verification run produced."""

from __future__ import annotations

from rich.table import Table

from bakery.cli import console
from bakery.config import REPO_ROOT
from bakery.doctor import Finding
from bakery.local.build import RoleResult, image_dir, read_record
from bakery.verify.gate import Verdict


def print_build_table(results: list[RoleResult], verdicts: list[Verdict]) -> None:
    """role, image, build outcome, verified/rejected, checks, build/boot/test seconds."""
    by_role = {verdict.role: verdict for verdict in verdicts}
    table = Table(title="images")
    for column in ("role", "image", "build", "verification", "checks ok/failed",
                   "build s", "boot s", "test s"):  # fmt: skip
        table.add_column(column)
    for result in results:
        record = read_record(result.role) or result.record
        image = str(result.image.relative_to(REPO_ROOT)) if result.image else "-"
        verdict = by_role.get(result.role)
        verification = record.get("verification") or {}
        table.add_row(
            result.role,
            image,
            result.status if not result.error else f"failed: {result.error.splitlines()[0]}",
            verdict.status if verdict else record.get("status", "-"),
            f"{verification.get('passed', '-')}/{verification.get('failed', '-')}",
            str(record.get("build_seconds", "-")) if result.status == "built" else "-",
            str(verification.get("boot_seconds", "-")) if verdict else "-",
            str(verification.get("test_seconds", "-")) if verdict else "-",
        )
    console.print(table)


def print_verify_table(verdicts: list[Verdict]) -> None:
    table = Table(title="verification")
    for column in ("role", "verdict", "passed", "failed", "skipped", "boot s", "test s",
                   "report"):  # fmt: skip
        table.add_column(column)
    for v in verdicts:
        report = str(v.junit.relative_to(REPO_ROOT)) if v.junit else (v.error or "-")
        table.add_row(v.role, v.status, str(v.passed), str(v.failed), str(v.skipped),
                      str(v.boot_seconds), str(v.test_seconds), report)  # fmt: skip
    console.print(table)


def print_local_images(roles: list[str]) -> None:
    table = Table(title="local images")
    for column in ("role", "image", "built", "status", "inputs hash", "size MB"):
        table.add_column(column)
    for role in roles:
        record = read_record(role)
        if record is None:
            table.add_row(role, "-", "-", "not built", "-", "-")
            continue
        image = image_dir(role) / record["image"]
        table.add_row(
            role,
            str(image.relative_to(REPO_ROOT)),
            record.get("built_at", "-"),
            record.get("status", "-"),
            record.get("inputs_hash", "-"),
            f"{record.get('size_bytes', 0) / 1e6:.0f}",
        )
    console.print(table)


def print_findings(findings: list[Finding]) -> None:
    table = Table(title="bakery doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column)
    for f in findings:
        table.add_row(f.check, "[green]ok[/]" if f.ok else "[red]FAIL[/]", f.detail, f.fix)
    console.print(table)
