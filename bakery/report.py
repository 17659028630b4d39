"""Tables for people: what a build or verification run produced."""

from __future__ import annotations

from rich.table import Table

from bakery.cli import console
from bakery.config import REPO_ROOT
from bakery.local.build import RoleResult, image_dir, read_record


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
