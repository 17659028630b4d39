"""bakery's command line: `invoke --list` shows the tasks, `invoke --help TASK` their options.

Tasks are thin: they parse options and call the bakery package, which raises
BakeryError; `exits_cleanly` turns that into one message and exit code 2 (bad input)
or 1 (a failed operation).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

from rich.markup import escape

from bakery.artifacts import prepare_artifacts
from bakery.aws import pipeline as aws_pipeline
from bakery.aws.tasks import (
    canary,
    enable_application_signals,
    iam,
    janitor,
    launch_template,
    prune,
    release,
    sampling,
    slo,
)
from bakery.aws.tasks import show_images as show_aws_images
from bakery.cli import (
    COMMON_HELP,
    console,
    exit_2_on_bad_options,
    exits_cleanly,
    load_configs,
    output_path,
    progress,
    results,
    task,
    write_text_atomically,
)
from bakery.config import REPO_ROOT, BakeryConfig, json_schema
from bakery.diff import aws_ami, diff_records, resolve_record
from bakery.errors import BadInput, OperationFailed
from bakery.host_check import BUILD_LOCK, describe_leftovers, examine
from bakery.local.build import build_local, guests_at_once, local_record, verify_local
from bakery.packer import detect_version, run_packer
from bakery.processes import sweep
from bakery.progress import Progress
from bakery.render import BUILD_ROOT, RenderedRole, render_role
from bakery.report import (
    print_build_table,
    print_findings,
    print_local_images,
    print_verify_table,
    vulnerability_counts,
)
from bakery.validate import validate_all
from bakery.verify.suites import SuiteResult
from bakery.vuln.advisories import SNAPSHOT as ADVISORY_SNAPSHOT
from bakery.vuln.advisories import build_snapshot, pinned_names
from bakery.vuln.debian import security_index
from bakery.vuln.gate import check_record

ITERABLE = ["role", "set"]
exit_2_on_bad_options()
# Release-side tasks live with the AWS code; listed here so `invoke --list` shows them.
AWS_TASKS = (
    release, prune, janitor, iam, enable_application_signals, launch_template, canary, slo,
    sampling,
)  # fmt: skip


def _render_all(
    role: list[str], target: str, config: str | None, set: list[str]
) -> list[RenderedRole]:
    return _render_configs(load_configs(role, target, config, set))  # all checked first


def _render_configs(configs: list[BakeryConfig]) -> list[RenderedRole]:
    packer = detect_version()
    rendered = [render_role(cfg, packer) for cfg in configs]
    for item in rendered:
        console.print(f"rendered {item.directory.relative_to(REPO_ROOT)} (Packer {packer})")
        if item.post_build:
            console.print(f"  applied after the build with boto3: {', '.join(item.post_build)}")
    return rendered


BUILD_HELP = {
    **COMMON_HELP,
    "force": "rebuild even when a role's inputs hash is unchanged",
    "parallel": "how many roles to bake (and boot) at once (default: one per core, at most 3)",
    "no_verify": "skip the verification gate (the images stay unverified)",
    "no_vuln_gate": "skip the vulnerability gate (recorded in the image record as skipped)",
}
VERIFY_HELP = {
    **COMMON_HELP,
    "parallel": "how many images to boot at once (default: one per core, at most 3)",
    "no_vuln_gate": BUILD_HELP["no_vuln_gate"],
}


@task(iterable=ITERABLE, help=BUILD_HELP)
@exits_cleanly
def build(
    c,
    role=None,
    target="local",
    config=None,
    set=None,
    force=False,
    parallel=None,
    no_verify=False,
    no_vuln_gate=False,
):
    """Bake the role images and verify them (default: all three, local qemu target)."""
    configs = load_configs(role, target, config, set)
    if target == "aws":
        _build_on_aws(configs, progress)
        return
    parallel = int(parallel) if parallel else guests_at_once()
    built = build_local(configs, progress, force=force, parallel=parallel)
    failed = [result for result in built if result.status == "failed"]
    # Verify what is new, or not verified yet; a verified, unchanged image stays verified.
    pending = [
        cfg for cfg in configs
        if (record := local_record(cfg.role, cfg.arch)) is not None and record.status == "built"
        and cfg.role not in {r.role for r in failed}
    ]  # fmt: skip
    verdicts = [] if no_verify or not pending else verify_local(pending, progress, parallel)
    print_build_table(results, built, dict(verdicts))
    problems = [f"{r.role}: {r.error}" for r in failed]
    problems += [f"{role}: {v.verdict} ({_why(v)})" for role, v in verdicts if not v.verified]
    if not no_verify:
        checked = [cfg for cfg in configs if cfg.role not in {r.role for r in failed}]
        problems += _vulnerability_gate(checked, no_vuln_gate)
    if problems:
        raise OperationFailed("; ".join(problems))


def _vulnerability_gate(configs: list[BakeryConfig], skip: bool) -> list[str]:
    """Scan each role's local record; the problems of those that fail."""
    problems = []
    if not configs:
        return problems
    # One fetch of the security suite per run; its parsed index kept across runs.
    cache = REPO_ROOT / configs[0].local.cache_dir / "security-index"
    fetch = functools.cache(functools.partial(security_index, cache=cache))
    for cfg in configs:
        role = cfg.role
        record = local_record(role, cfg.arch)
        if record is None:
            continue
        report = check_record(record, skip="--no-vuln-gate" if skip else "", fetch_index=fetch)
        console.print(f"{role}: vulnerability gate {vulnerability_counts(report.as_json())}")
        if not report.passed and not report.skipped:
            problems.append(f"{role}: vulnerability gate: " + "; ".join(report.problems()[:5]))
    return problems


def _why(verdict: SuiteResult) -> str:
    if verdict.error:
        return verdict.error
    failing = ", ".join(verdict.named_failures[:5]) or "see the report"
    return f"{verdict.failed} failed: {failing}; report {verdict.junit}"


@task(iterable=ITERABLE, help=VERIFY_HELP)
@exits_cleanly
def verify(c, role=None, target="local", config=None, set=None, parallel=None, no_vuln_gate=False):
    """Boot each image with launch-time settings and run its testinfra suites (the gate)."""
    configs = load_configs(role, target, config, set)
    if target == "aws":
        aws_pipeline.verify(configs)
        return
    verdicts = verify_local(configs, progress, int(parallel) if parallel else guests_at_once())
    print_verify_table(results, verdicts)
    problems = [f"{role}: {v.verdict} ({_why(v)})" for role, v in verdicts if not v.verified]
    problems += _vulnerability_gate(configs, no_vuln_gate)
    if problems:
        raise OperationFailed("; ".join(problems))


@task(iterable=ITERABLE, help=COMMON_HELP)
@exits_cleanly
def vulns(c, role=None, target="local", config=None, set=None):
    """Run the vulnerability gate on the local images as built (no boot): Debian, Python."""
    configs = load_configs(role, target, config, set)
    if target != "local":
        raise BadInput("vulns: --target aws is not supported yet; run it on local records")
    problems = _vulnerability_gate(configs, skip=False)
    if problems:
        raise OperationFailed("; ".join(problems))


def _build_on_aws(configs: list[BakeryConfig], progress: Progress) -> None:
    packer = detect_version()
    rendered = []
    for cfg in configs:
        artifacts = prepare_artifacts(cfg, REPO_ROOT / cfg.local.cache_dir, progress)
        rendered.append(render_role(cfg, packer, artifacts=artifacts))
    for record in aws_pipeline.build(configs, rendered):
        results.print(f"built {record.role}: {record.image} ({record.details['region']})")


@task(iterable=ITERABLE, help=COMMON_HELP)
@exits_cleanly
def images(c, role=None, target="local", config=None, set=None):
    """List the images per role: id, created, status, size (and promotions on AWS)."""
    configs = load_configs(role, target, config, set)
    if target == "aws":
        show_aws_images(configs)
    else:
        print_local_images(results, [cfg.role for cfg in configs])


@task(
    iterable=ITERABLE,
    positional=["a", "b"],
    help={
        "a": "the older image: a record.json path, ROLE, ROLE:HASH (local) or an AMI id",
        "b": "the newer image, named the same ways",
        "json": "print JSON for machines instead of text for people",
        **COMMON_HELP,
        "role": "the role, for released:ENV and newest (with --target aws)",
    },
)
@exits_cleanly
def diff(c, a, b, json=False, role=None, target="local", config=None, set=None):
    """What changed from image A to B: packages, owned files, units, ports, users, versions."""
    cfg = None
    if target == "aws":
        configs = load_configs(role, target, config, set)
        if len(configs) != 1:
            raise BadInput("diff: name one --role for released:ENV or newest")
        cfg = configs[0]
    found = diff_records(*(resolve_record(aws_ami(ref, cfg) or ref) for ref in (a, b)))
    if json:
        _print_json(found.as_json())
    else:
        for line in found.as_text():
            results.print(line, markup=False, soft_wrap=True)


def _print_json(data: object) -> None:
    results.print(json.dumps(data, indent=2, sort_keys=True), markup=False, soft_wrap=True)


@task(help={"database": "a checkout of the PyPA advisory database (pypa/advisory-database)"})
@exits_cleanly
def refresh_advisories(c, database):
    """Cut config/advisories/pypi.json from the advisory database for the app's pins."""
    snapshot = build_snapshot(Path(database), pinned_names())
    text = json.dumps(snapshot, indent=1, sort_keys=True) + "\n"
    write_text_atomically(ADVISORY_SNAPSHOT, text)
    count = sum(len(found) for found in snapshot["advisories"].values())
    pinned = len(snapshot["packages"])
    where = ADVISORY_SNAPSHOT.relative_to(REPO_ROOT)
    console.print(f"wrote {where}: {count} advisories for {pinned} pins, as of {snapshot['date']}")


@task(iterable=ITERABLE, help=COMMON_HELP)
@exits_cleanly
def render(c, role=None, target="local", config=None, set=None):
    """Render Packer HCL and on-image files into build/<target>/<role>/."""
    _render_all(role, target, config, set)


@task(
    iterable=[*ITERABLE, "target"],
    help={**COMMON_HELP, "target": COMMON_HELP["target"] + "; repeat for both (default local)"},
)
@exits_cleanly
def validate(c, role=None, target=None, config=None, set=None):
    """Render, then `packer fmt -check` and `packer validate` each new render (cached)."""
    targets = list(dict.fromkeys(target or ["local"]))
    # Every target's configs are checked before anything is rendered.
    configs = [cfg for name in targets for cfg in load_configs(role, name, config, set)]
    rendered = _render_configs(configs)
    for checked in validate_all(rendered):
        item = checked.rendered
        note = " (unchanged since it last passed)" if checked.cached else ""
        console.print(f"[green]valid[/] {item.role} ({item.target}){note}")


@task(iterable=ITERABLE, help=COMMON_HELP)
@exits_cleanly
def fmt(c, role=None, target="local", config=None, set=None):
    """Show where rendered HCL drifts from `packer fmt` (fix the templates in packer/)."""
    drift = []
    for item in _render_all(role, target, config, set):
        try:
            run_packer(["fmt", "-check", "-diff", "."], item.directory)
        except OperationFailed as exc:
            drift.append(str(exc))
    if drift:
        raise OperationFailed("rendered HCL is not in canonical form:\n" + "\n".join(drift))
    console.print("[green]rendered HCL is in canonical form[/]")


@task(help={"output": "file to write the schema to (default: build/bakery.schema.json)"})
@exits_cleanly
def schema(c, output=None):
    """Write the JSON Schema of a config file, for editors and CI to check YAML against."""
    path = output_path("--output", output, BUILD_ROOT / "bakery.schema.json")
    write_text_atomically(path, json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    console.print(f"wrote {escape(str(path))}")


@task(
    help={
        "cache": "also remove the cache of base images and wheelhouses",
        "leftovers": "only stop and remove what dead runs left (processes, work folders, locks)",
    }
)
@exits_cleanly
def clean(c, cache=False, leftovers=False):
    """Remove build/ (rendered trees, images, reports); --cache also the download cache."""
    # Processes first: a dead run's QEMU must not keep writing into what is removed.
    found = sweep(locks=[BUILD_LOCK])
    console.print(f"removed {describe_leftovers(found)}" if found else "no leftovers of dead runs")
    if leftovers:
        return
    shutil.rmtree(BUILD_ROOT, ignore_errors=True)
    console.print(f"removed {BUILD_ROOT.relative_to(REPO_ROOT)}/")
    if cache:
        cache_dir = REPO_ROOT / ".cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        console.print(f"removed {cache_dir.relative_to(REPO_ROOT)}/")


@task(
    help={
        "slow": "also run the slow tests that bake and boot real images",
        "k": "only tests matching this pytest -k expression",
    }
)
@exits_cleanly
def test(c, slow=False, k=None):
    """Run the test suite (lint, types, unit tests; --slow adds real bakes)."""
    steps = [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy", "bakery"],
        # The slowest tests' times in every run's output: the profile CI time is cut by.
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--durations=15",
            # Every core (pytest-xdist; tests/unit/conftest.py keeps the AWS call
            # recording in one worker); the slow tests boot guests, one at a time.
            *(["-m", "slow or not slow"] if slow else ["-n", "auto"]),
        ],
    ]
    if k:
        steps[-1] += ["-k", k]
    for command in steps:
        console.print(f"[bold]$ {' '.join(command[2:])}[/]")
        if subprocess.run(command, cwd=REPO_ROOT, check=False).returncode != 0:
            raise OperationFailed(f"{' '.join(command[2:])} failed")


@task(iterable=["set"], help={"target": COMMON_HELP["target"], "set": COMMON_HELP["set"]})
@exits_cleanly
def host_check(c, target="local", set=None):
    """Check this host is ready to bake: tools, KVM or TCG, disk, CA bundle, AWS access."""
    (cfg,) = load_configs(["backend"], target, None, set)
    findings = examine(cfg)
    print_findings(results, findings)
    problems = [f"{f.check}: {f.detail} (fix: {f.fix})" for f in findings if not f.ok]
    if problems:
        raise OperationFailed("; ".join(problems))


@task
@exits_cleanly
def smoke(c):
    """Boot database, backend and frontend together and drive users through all three."""
    # --durations=0: the boot (the fixture's setup) and each test's seconds, in CI's log.
    command = [sys.executable, "-m", "pytest", "tests/smoke", "-m", "slow", "-p",
               "no:cacheprovider", "-v", "--durations=0"]  # fmt: skip
    if subprocess.run(command, cwd=REPO_ROOT, check=False).returncode != 0:
        raise OperationFailed("the three-tier smoke test failed (output above)")
