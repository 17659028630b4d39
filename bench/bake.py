"""Benchmark the local bake and the gate; prints a table (seconds, one run each).

    .venv/bin/python bench/bake.py            # no-op rebuild + step timings from records
    .venv/bin/python bench/bake.py --cold     # also: cache and images removed, full bake
    .venv/bin/python bench/bake.py --frontend-change  # only the frontend must rebuild

Numbers come from one run on this machine (noisy, 2 cores, TCG when KVM fails its
probe): compare ratios from the same run, not absolute values across machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]
ROLES = ("backend", "frontend", "database")


def timed(args: list[str]) -> tuple[float, int]:
    started = time.monotonic()
    code = subprocess.run([*INVOKE, *args], cwd=REPO, check=False).returncode
    return round(time.monotonic() - started, 1), code


def record(role: str) -> dict:
    path = REPO / "build" / "images" / role / "record.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start from an empty cache")
    parser.add_argument("--frontend-change", action="store_true",
                        help="touch only the frontend's page and rebuild")  # fmt: skip
    options = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    if options.cold:
        shutil.rmtree(REPO / "build", ignore_errors=True)
        shutil.rmtree(REPO / ".cache", ignore_errors=True)
        seconds, code = timed(["build"])
        rows.append(("cold build + verify, 3 roles (incl. base image)", str(seconds), str(code)))
        steps = {role: record(role).get("timings_s", {}) for role in ROLES}
        for role, timings in steps.items():
            for step, value in timings.items():
                rows.append((f"  {role}: {step}", str(value), ""))
    seconds, code = timed(["build"])
    rows.append(("no-op build (nothing changed)", str(seconds), str(code)))
    if options.frontend_change:
        page = REPO / "app" / "frontend" / "index.html"
        original = page.read_text()
        try:
            page.write_text(original + "\n<!-- bench -->\n")
            before = {role: record(role).get("inputs_hash") for role in ROLES}
            seconds, code = timed(["build"])
            after = {role: record(role).get("inputs_hash") for role in ROLES}
            rebuilt = [role for role in ROLES if before[role] != after[role]]
            rows.append(
                (f"frontend change (rebuilt: {', '.join(rebuilt)})", str(seconds), str(code))
            )
        finally:
            page.write_text(original)
    for role in ROLES:
        verification = record(role).get("verification") or {}
        if verification:
            rows.append((f"verify {role}: boot", str(verification.get("boot_seconds")), ""))
            rows.append((f"verify {role}: tests", str(verification.get("test_seconds")), ""))
    table = Table(title="bakery bench (seconds, one run)")
    for column in ("measure", "seconds", "exit"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
