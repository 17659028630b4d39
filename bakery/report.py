"""Tables for people: what a build or verification run produced."""

from __future__ import annotations

from rich.table import Table

from bakery.cli import console
from bakery.config import REPO_ROOT
from bakery.local.build import RoleResult


def print_build_table(results: list[RoleResult]) -> None:
    table = Table(title="images")
    for column in ("role", "status", "image", "inputs hash", "size MB", "build s"):
        table.add_column(column)
    for result in results:
        record = result.record
        image = str(result.image.relative_to(REPO_ROOT)) if result.image else "-"
        size = record.get("size_bytes")
        table.add_row(
            result.role,
            result.status if not result.error else f"failed: {result.error.splitlines()[0]}",
            image,
            record.get("inputs_hash", "-"),
            f"{size / 1e6:.0f}" if size else "-",
            str(record.get("build_seconds", "-")),
        )
    console.print(table)
