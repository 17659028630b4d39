"""The speed bench of issue #13: one run prints the table (measure | before | now | goal)
and a per-role profile, and writes the numbers as JSON.

    .venv/bin/python bench/run.py                      # cheap rows: validate, noop
    .venv/bin/python bench/run.py --rows validate      # one row, in seconds
    flock /work/wt/bake.lock nice -n 5 .venv/bin/python bench/run.py \\
        --rows cold,verify3,noop,verify1,smoke,change  # the rows that bake and boot
    .venv/bin/python bench/run.py --profile-only --before bench/results/before.json
    .venv/bin/python bench/run.py --rows cold,change --set local.bake_in=vm  # the VM bake

Rows run in the order of ROWS whatever the order given (`noop` needs verified images,
`change` leaves the frontend image built from the changed page, so it runs last).
`cold` removes build/ and the cached base image but keeps the host's downloads (the
wheelhouse, the agent double): it measures baking, not the package registry. `ci` runs
`.ci/run` in a fresh clone of HEAD (venv, tests, bakes, smoke) and takes the longest.

The per-role profile comes from what the bake and the gate leave behind: each
provisioner step's seconds (the record's `timings_s`), the gate's boot and test seconds,
and the guest's own account of its boot (build/logs/<role>/boot-*.txt and
cloud-init-analyze.txt, fetched after each verification).

Numbers come from one run on this machine (noisy; 2 cores, TCG when KVM fails its
probe): compare ratios from the same run, not absolute values across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]
# --set KEY=VALUE given to the bench, passed on to every build (e.g. local.bake_in=vm).
SETS: list[str] = []
ROLE_NAMES = ("backend", "frontend", "database")
BUILD = REPO / "build"
BASE_CACHE = REPO / ".cache" / "bakery" / "base"
RESULTS = BUILD / "bench"


@dataclass(frozen=True)
class Row:
    key: str
    measure: str
    goal_s: float


# In the order they run; the measure texts are the issue's.
ROWS = (
    Row("validate", "render + validate, 3 roles × 2 targets (cold: nothing remembered)", 2),
    Row("validate_cached", "render + validate, 3 roles × 2 targets (unchanged since a pass)", 2),
    Row("validate_step_edit", "render + validate, 3 roles × 2 targets (a provisioner edited)", 2),
    Row("cold", "cold bake of 3 roles, base image included (no verify; default scheduling)", 300),
    Row("verify3", "verify all three (default scheduling: one guest per core)", 90),
    Row("noop", "no-op `invoke build`", 1),
    Row("verify1", "verify one role alone, boot + tests (slowest role)", 45),
    Row("smoke", "`invoke smoke`, all tests", 240),
    Row("change", "one role changed → only it rebuilt, bake", 90),
    Row("ci", "cold `.ci/run` (fresh clone, this machine)", 900),
    # Issue #16: arm64 under TCG on this x86_64 host, .ci/run's last stage. Its ceiling is
    # what CI can spare: 90 minutes minus the ~36 the x86_64 stages took at most.
    Row("arm64", "arm64 backend: `invoke build --role backend --set arch=arm64` (TCG)", 3240),
)
CHEAP = ("validate", "validate_cached", "validate_step_edit", "noop")


def timed(command: list[str], cwd: Path = REPO) -> tuple[float, int]:
    seconds, _, code = timed_with_cpu(command, cwd)
    return seconds, code


def timed_with_cpu(command: list[str], cwd: Path = REPO) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, the command and its children), exit code.
    On a shared 2-core host the wall time swings with the neighbours; the CPU time less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    code = subprocess.run(command, cwd=cwd, check=False).returncode
    wall = round(time.monotonic() - started, 2)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, round(cpu, 2), code


def record(role: str, arch: str = "x86_64") -> dict[str, Any]:
    """The role's local record (bakery/local/build.py image_dir: arm64 in images/arm64/)."""
    folder = BUILD / "images" / (role if arch == "x86_64" else f"{arch}/{role}")
    path = folder / "record.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def all_verified() -> bool:
    return all(record(role).get("status") == "verified" for role in ROLE_NAMES)


def run_row(key: str) -> dict[str, Any]:
    """Run one row; {"seconds", "exit", "detail"}."""
    if key in ("validate", "validate_cached", "validate_step_edit"):
        if key == "validate":
            shutil.rmtree(BUILD / ".validated", ignore_errors=True)
        command = [*INVOKE, "validate", "--target", "local", "--target", "aws"]
        if key == "validate_step_edit":
            step = REPO / "provisioners" / "bakery_provision" / "seal.py"
            original = step.read_text()
            try:
                step.write_text(original + "\n# bench: a provisioner edit\n")
                seconds, cpu, code = timed_with_cpu(command)
            finally:
                step.write_text(original)
        else:
            seconds, cpu, code = timed_with_cpu(command)
        return {
            "seconds": seconds,
            "exit": code,
            "cpu_seconds": cpu,
            "detail": f"one `invoke validate` for both targets; {cpu} CPU-s",
        }
    if key == "cold":
        shutil.rmtree(BUILD, ignore_errors=True)
        shutil.rmtree(BASE_CACHE, ignore_errors=True)
        seconds, code = timed([*INVOKE, "build", "--no-verify", *SETS])
        builds = {role: record(role).get("build_seconds") for role in ROLE_NAMES}
        where = {role: record(role).get("baked_in", "vm") for role in ROLE_NAMES}
        detail = f"bake s per role: {builds}, in {where}"
        return {"seconds": seconds, "exit": code, "detail": detail}
    if key == "verify3":
        seconds, code = timed([*INVOKE, "verify"])
        return {"seconds": seconds, "exit": code, "detail": _verifications()}
    if key == "noop":
        verified = [r for r in ROLE_NAMES if record(r).get("status") == "verified"]
        if not verified:
            return {"seconds": None, "exit": None, "detail": "skipped: no verified image"}
        # With only some roles verified, the no-op is theirs (the others would bake).
        roles = [] if all_verified() else [f"--role={role}" for role in verified]
        seconds, cpu, code = timed_with_cpu([*INVOKE, "build", *roles])
        which = "all roles" if not roles else ", ".join(verified)
        return {
            "seconds": seconds,
            "exit": code,
            "cpu_seconds": cpu,
            "detail": f"{which}; {cpu} CPU-s",
        }
    if key == "verify1":
        each = {role: timed([*INVOKE, "verify", "--role", role]) for role in ROLE_NAMES}
        worst = max(each, key=lambda role: each[role][0])
        return {
            "seconds": each[worst][0],
            "exit": max(code for _, code in each.values()),
            "detail": f"{worst} slowest; "
            + ", ".join(f"{role} {seconds} s" for role, (seconds, _) in each.items()),
        }
    if key == "smoke":
        seconds, code = timed([*INVOKE, "smoke"])
        return {"seconds": seconds, "exit": code, "detail": ""}
    if key == "change":
        page = REPO / "app" / "frontend" / "index.html"
        original = page.read_text()
        before = {role: record(role).get("inputs_hash") for role in ROLE_NAMES}
        try:
            page.write_text(original + "\n<!-- bench -->\n")
            seconds, code = timed([*INVOKE, "build", "--no-verify", *SETS])
        finally:
            page.write_text(original)
        rebuilt = [r for r in ROLE_NAMES if record(r).get("inputs_hash") != before[r]]
        return {
            "seconds": seconds,
            "exit": code,
            "detail": f"rebuilt: {', '.join(rebuilt) or 'nothing'} (the frontend image "
            "now has the bench's page: `invoke build` rebuilds it)",
        }
    if key == "ci":
        with tempfile.TemporaryDirectory(prefix="bakery-bench-ci-") as tmp:
            clone = Path(tmp) / "bakery"
            subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
            seconds, code = timed([str(clone / ".ci" / "run")], cwd=clone)
        return {"seconds": seconds, "exit": code, "detail": "fresh clone of HEAD"}
    if key == "arm64":
        # The base image is kept when cached (its own seconds are in base.json's
        # built_at and the first build's progress); the role is baked again (--force).
        seconds, cpu, code = timed_with_cpu(
            [*INVOKE, "build", "--role", "backend", "--set", "arch=arm64", "--force"]
        )
        return {"seconds": seconds, "exit": code, "cpu_seconds": cpu, "detail": _arm64_detail()}
    raise SystemExit(f"bench: unknown row {key!r}; rows: {', '.join(r.key for r in ROWS)}")


def _arm64_detail() -> str:
    rec = record("backend", "arm64")
    verification = rec.get("verification") or {}
    return (
        f"arch {rec.get('arch')}, status {rec.get('status')}, "
        f"bake {rec.get('build_seconds')} s, boot {verification.get('boot_seconds')} s, "
        f"tests {verification.get('test_seconds')} s, "
        f"checks {verification.get('passed')}/{verification.get('failed')} ok/failed"
    )


def _verifications() -> str:
    parts = []
    for role in ROLE_NAMES:
        verification = record(role).get("verification") or {}
        parts.append(
            f"{role} boot {verification.get('boot_seconds')} s + "
            f"tests {verification.get('test_seconds')} s"
        )
    return "; ".join(parts)


# "1.9s", "40.123s", "512ms", "1min 2.3s" (systemd-analyze's durations)
_DURATION = re.compile(r"(?:(\d+)min ?)?([\d.]+)(ms|s)\b")
_CLOUD_INIT_STAGE = re.compile(r"Finished stage: \((?P<stage>[\w-]+)\) (?P<s>[\d.]+) seconds")


def seconds_of(text: str) -> float | None:
    match = _DURATION.search(text)
    if not match:
        return None
    minutes, value, unit = match.groups()
    seconds = float(value) / (1000 if unit == "ms" else 1)
    return round(seconds + 60 * int(minutes or 0), 2)


def boot_profile(folder: Path, top: int = 8) -> dict[str, Any]:
    """The guest's boot as the files saved after verification describe it."""
    profile: dict[str, Any] = {}
    timing = folder / "boot-time.txt"
    if timing.is_file():
        line = next((x for x in timing.read_text().splitlines() if "Startup" in x), "")
        profile["systemd"] = line.replace("Startup finished in ", "").strip()
    blame = folder / "boot-blame.txt"
    if blame.is_file():
        units = []
        for line in blame.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and (value := seconds_of(" ".join(parts[:-1]))) is not None:
                units.append((parts[-1], value))
        profile["blame_top"] = units[:top]
    analyze = folder / "cloud-init-analyze.txt"
    if analyze.is_file():
        stages: dict[str, float] = {}
        for match in _CLOUD_INIT_STAGE.finditer(analyze.read_text()):
            stage = match["stage"]
            stages[stage] = round(stages.get(stage, 0) + float(match["s"]), 2)
        profile["cloud_init_stages"] = stages
    return profile


def role_profiles() -> dict[str, Any]:
    """Each role's profile; an arm64 image's beside it as `<role>-arm64` when there is one."""
    profiles = {}
    images = [(role, "x86_64") for role in ROLE_NAMES]
    images += [(role, "arm64") for role in ROLE_NAMES if record(role, "arm64")]
    for role, arch in images:
        rec = record(role, arch)
        details = rec  # a record keeps its details at the top level
        logs = BUILD / "logs" / (role if arch == "x86_64" else f"{arch}/{role}")
        profiles[role if arch == "x86_64" else f"{role}-{arch}"] = {
            "build_seconds": details.get("build_seconds"),
            "size_bytes": details.get("size_bytes"),
            "steps": details.get("timings_s", {}),
            "verification": {
                k: (rec.get("verification") or {}).get(k) for k in ("boot_seconds", "test_seconds")
            },
            "boot": boot_profile(logs),
        }
    return profiles


def _cell(result: dict[str, Any] | None) -> str:
    if not result or result.get("seconds") is None:
        return "–"
    failed = "" if result.get("exit") == 0 else f" (exit {result.get('exit')})"
    return f"{result['seconds']} s{failed}"


def print_report(now: dict[str, Any], before: dict[str, Any] | None) -> None:
    rows_before = (before or {}).get("rows", {})
    print("| measure | before | now | goal |")
    print("| --- | --- | --- | --- |")
    for row in ROWS:
        if row.key in now["rows"] or row.key in rows_before:
            print(
                f"| {row.measure} | {_cell(rows_before.get(row.key))} | "
                f"{_cell(now['rows'].get(row.key))} | ≤ {row.goal_s:g} s |"
            )
    for row in ROWS:
        detail = now["rows"].get(row.key, {}).get("detail")
        if detail:
            print(f"  {row.key}: {detail}")
    for role, profile in now["roles"].items():
        print(
            f"\n{role}: bake {profile['build_seconds']} s, verification {profile['verification']}"
        )
        for step, seconds in profile["steps"].items():
            print(f"  bake step {step}: {seconds} s")
        boot = profile["boot"]
        if boot.get("systemd"):
            print(f"  boot (systemd-analyze): {boot['systemd']}")
        for unit, seconds in boot.get("blame_top", []):
            print(f"  boot blame {unit}: {seconds} s")
        for stage, seconds in boot.get("cloud_init_stages", {}).items():
            print(f"  cloud-init {stage}: {seconds} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        default=",".join(CHEAP),
        help=f"comma-separated rows to run: {', '.join(r.key for r in ROWS)}, "
        "or all (default: the cheap ones)",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="run no row; report the profile of the current images",
    )
    parser.add_argument("--before", type=Path, help="an earlier run's JSON, for the before column")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write this run's JSON "
        "(default: build/bench/<time>.json and build/bench/latest.json)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the bakes of `cold` and `change` "
        "(e.g. local.bake_in=vm: the VM bake, for a before column)",
    )
    options = parser.parse_args()
    SETS.extend(f"--set={value}" for value in options.set)
    wanted = [r.key for r in ROWS] if options.rows == "all" else options.rows.split(",")
    unknown = set(wanted) - {row.key for row in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows: {', '.join(r.key for r in ROWS)}")
    before = json.loads(options.before.read_text()) if options.before else None
    now: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sets": options.set,
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "kvm": os.access("/dev/kvm", os.R_OK | os.W_OK),
        },
        "rows": {},
    }
    if not options.profile_only:
        for row in ROWS:
            if row.key in wanted:
                print(f"bench: {row.key} ...", file=sys.stderr, flush=True)
                now["rows"][row.key] = run_row(row.key)
    now["roles"] = role_profiles()
    paths = (
        [options.json]
        if options.json
        else [RESULTS / f"{now['started'].replace(':', '')}.json", RESULTS / "latest.json"]
    )
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2) + "\n")
    print_report(now, before)
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
