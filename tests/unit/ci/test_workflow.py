"""The image pipeline (.github/workflows/images.yml): actionlint and zizmor find nothing
in it, its helper scripts do what the jobs rely on, and the promises docs/ci.md makes
about it (pins, permissions, one pipeline per role, the production gate) hold."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
GITHUB_DIR = REPO_ROOT / ".github"
WORKFLOW = GITHUB_DIR / "workflows" / "images.yml"
SCRIPTS = GITHUB_DIR / "scripts"
ROLES = ["backend", "frontend", "database"]
AWS_JOBS = ("bake", "canary", "production", "cleanup")
ON_MAIN_ONLY = ("github.event_name != 'pull_request'", "github.ref == 'refs/heads/main'")
CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials"
# owner/repo[/path]@<40 hex> # vX.Y.Z
PINNED_USE = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def dev_tool(name: str) -> str:
    """A checker from the dev dependencies: the virtualenv's bin/ first, then PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is missing: it is a dev dependency, `pip install -e '.[dev]'`")
    return found


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    found: dict[str, Any] = workflow.get("on", workflow.get(True))
    return found


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job["steps"]
    return found


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(job) if "run" in step]


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in steps(job) if step.get("uses", "").startswith(action + "@")]


def position(job: dict[str, Any], fragment: str) -> int:
    """Index of the first step whose run script contains `fragment`."""
    for index, step in enumerate(steps(job)):
        if fragment in step.get("run", ""):
            return index
    raise AssertionError(f"no step runs {fragment!r}")


# --- the checkers -------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    files = sorted(str(p) for p in (GITHUB_DIR / "workflows").glob("*.y*ml"))
    result = subprocess.run(
        [dev_tool("actionlint"), "-no-color", f"-shellcheck={dev_tool('shellcheck')}", *files],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    # --offline: the audits that ask GitHub's API (impostor commits, stale refs) need a
    # network this suite does not assume.
    result = subprocess.run(
        [dev_tool("zizmor"), "--offline", "--no-progress", "--color=never", str(GITHUB_DIR)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout, result.stdout


def test_helper_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in SCRIPTS.iterdir())
    result = subprocess.run(
        [dev_tool("shellcheck"), *scripts], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_helper_scripts_are_executable() -> None:
    for script in SCRIPTS.iterdir():
        assert os.access(script, os.X_OK), f"{script} is not executable (chmod +x)"


# --- pins and permissions -------------------------------------------------------------


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version() -> None:
    lines = [
        line.strip().removeprefix("- ").removeprefix("uses:").strip()
        for line in WORKFLOW.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s*(- )?uses:", line)
    ]
    assert lines, "the workflow uses no action at all?"
    unpinned = [line for line in lines if not PINNED_USE.match(line)]
    assert unpinned == [], "pin by full SHA with a `# vX.Y.Z` comment: " + ", ".join(unpinned)


def test_one_action_is_pinned_to_one_commit_everywhere(workflow: dict[str, Any]) -> None:
    pins: dict[str, set[str]] = {}
    for job in workflow["jobs"].values():
        for step in steps(job):
            if "uses" in step:
                action, commit = step["uses"].split("@")
                pins.setdefault(action, set()).add(commit)
    assert {action: len(commits) for action, commits in pins.items()} == dict.fromkeys(pins, 1)


def test_default_permissions_only_read_the_repository(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}


def test_only_jobs_that_assume_an_aws_role_get_an_oidc_token(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        assumes_role = bool(uses(job, CREDENTIALS_ACTION))
        permissions = job.get("permissions", workflow["permissions"])
        expected = {"contents": "read"} | ({"id-token": "write"} if assumes_role else {})
        assert permissions == expected, name


def test_the_aws_role_comes_from_a_variable_never_a_key(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for step in uses(job, CREDENTIALS_ACTION):
            assert step["with"]["role-to-assume"] == "${{ vars.BAKERY_AWS_ROLE_ARN }}", name
            assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"]), name


def test_checkouts_do_not_keep_the_token(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        checkouts = uses(job, "actions/checkout")
        assert checkouts, f"{name} does not check out the repository"
        assert all(step["with"]["persist-credentials"] is False for step in checkouts), name


def test_run_scripts_expand_no_expressions(workflow: dict[str, Any]) -> None:
    # Values reach scripts through env:, so nothing from an event is pasted into a shell.
    for name, job in workflow["jobs"].items():
        for script in runs(job):
            assert "${{" not in script, f"{name}: pass it through env: instead\n{script}"


# --- what runs when -------------------------------------------------------------------


def test_runs_for_pull_requests_pushes_to_main_weekly_and_by_hand(
    workflow: dict[str, Any],
) -> None:
    on = triggers(workflow)
    assert set(on) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    (schedule,) = on["schedule"]
    *_, day_of_month, month, day_of_week = schedule["cron"].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit(), "weekly"


def test_pull_requests_get_lint_types_tests_and_validation(workflow: dict[str, Any]) -> None:
    check = workflow["jobs"]["check"]
    assert "if" not in check, "the checks run for every event"
    scripts = "\n".join(runs(check))
    for command in (
        "./scripts/run invoke test",
        "./scripts/run invoke validate --target local",
        "./scripts/run invoke validate --target aws\n",
        "./scripts/run invoke validate --target aws --set os=al2023",
    ):
        assert command in scripts + "\n", command


def test_aws_jobs_run_only_on_main_never_for_pull_requests(workflow: dict[str, Any]) -> None:
    for name in AWS_JOBS:
        condition = workflow["jobs"][name]["if"]
        assert all(part in condition for part in ON_MAIN_ONLY), name


def test_each_role_has_its_own_pipeline_one_run_at_a_time(workflow: dict[str, Any]) -> None:
    groups = set()
    for name in ("bake", "production"):
        job = workflow["jobs"][name]
        assert job["strategy"]["fail-fast"] is False, name
        assert job["strategy"]["matrix"] == {"role": ROLES}, name
        assert "${{ matrix.role }}" in job["concurrency"]["group"], name
        assert job["concurrency"]["cancel-in-progress"] is False, name
        groups.add(job["concurrency"]["group"])
    assert len(groups) == 1, "bake and production of a role share one concurrency group"


def test_bake_builds_then_verifies_then_releases_to_staging(workflow: dict[str, Any]) -> None:
    bake = workflow["jobs"]["bake"]
    assert bake["needs"] == "check"
    order = [
        position(bake, 'bakery-aws build --target aws --role "$ROLE"'),
        position(bake, 'bakery-aws verify --target aws --role "$ROLE"'),
        position(bake, '--environment staging --ami-id "$AMI_ID"'),
    ]
    assert order == sorted(order)
    assert position(bake, "bakery-aws release") == order[2]


def test_production_waits_for_approval_in_its_environment(workflow: dict[str, Any]) -> None:
    production = workflow["jobs"]["production"]
    assert production["needs"] == "bake"
    assert production["environment"] == "production"
    assert '--environment production --ami-id "$AMI_ID"' in "\n".join(runs(production))
    # it promotes the AMI staging got, read from the bake job's record, not "the newest"
    assert uses(production, "actions/download-artifact")[0]["with"]["name"] == (
        "records-${{ matrix.role }}"
    )


def test_canary_is_optional_and_proves_staging_after_the_bake(workflow: dict[str, Any]) -> None:
    canary = workflow["jobs"]["canary"]
    assert canary["needs"] == "bake"
    assert canary["if"].startswith("vars.BAKERY_CANARY == 'true' && ")
    assert runs(canary)[-1] == (
        ".github/scripts/bakery-aws canary --role backend --environment staging"
    )


def test_prune_and_janitor_come_last_and_always_run(workflow: dict[str, Any]) -> None:
    cleanup = workflow["jobs"]["cleanup"]
    assert cleanup["needs"] == ["bake", "production"]
    assert cleanup["if"].startswith("always() && ")
    prune = position(cleanup, "bakery-aws prune --apply")
    janitor = position(cleanup, "bakery-aws janitor --apply")
    assert prune < janitor
    assert steps(cleanup)[janitor]["if"] == "always()"


def test_reports_and_records_are_kept_even_when_a_step_fails(workflow: dict[str, Any]) -> None:
    kept = {
        step["with"]["path"]: step
        for step in uses(workflow["jobs"]["bake"], "actions/upload-artifact")
    }
    for path in ("build/reports/", "build/records/"):
        assert path in kept, path
        assert kept[path]["if"] == "always()", path
    (unit_report,) = uses(workflow["jobs"]["check"], "actions/upload-artifact")
    assert unit_report["with"]["path"] == "build/reports/"


# --- the helper scripts ---------------------------------------------------------------


def copy_script(tmp_path: Path, name: str) -> Path:
    """The script in a scratch repository tree (it works from the tree it lives in)."""
    target = tmp_path / ".github" / "scripts" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SCRIPTS / name, target)
    return target


def test_recorded_ami_prints_the_one_record_of_the_role(tmp_path: Path) -> None:
    script = copy_script(tmp_path, "recorded-ami")
    records = tmp_path / "build" / "records" / "aws"
    records.mkdir(parents=True)
    (records / "backend-ami-0123456789abcdef0.json").write_text("{}")
    (records / "frontend-ami-0fedcba9876543210.json").write_text("{}")
    result = subprocess.run([script, "backend"], capture_output=True, text=True, check=True)
    assert result.stdout == "ami-0123456789abcdef0\n"


@pytest.mark.parametrize("records", [[], ["ami-0123456789abcdef0", "ami-0fedcba9876543210"]])
def test_recorded_ami_refuses_anything_but_exactly_one_record(
    tmp_path: Path, records: list[str]
) -> None:
    script = copy_script(tmp_path, "recorded-ami")
    folder = tmp_path / "build" / "records" / "aws"
    folder.mkdir(parents=True)
    for ami in records:
        (folder / f"backend-{ami}.json").write_text("{}")
    result = subprocess.run([script, "backend"], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert f"found {len(records)}" in result.stderr


def fake_scripts_run(tmp_path: Path) -> None:
    """A scripts/run that prints the command it was given instead of running it."""
    run = tmp_path / "scripts" / "run"
    run.parent.mkdir(parents=True)
    run.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    run.chmod(0o755)


def test_bakery_aws_layers_the_account_settings_over_config(tmp_path: Path) -> None:
    script = copy_script(tmp_path, "bakery-aws")
    fake_scripts_run(tmp_path)
    settings = "aws:\n  subnet_id: subnet-0123456789abcdef0\n"
    env = {**os.environ, "BAKERY_AWS_REGION": "eu-west-1", "BAKERY_CONFIG": settings}
    result = subprocess.run(
        [script, "prune", "--apply"], env=env, capture_output=True, text=True, check=True
    )
    account = "build/ci/account.yaml"
    assert result.stdout.splitlines() == [
        "invoke", "prune", "--config", account, "--set", "aws.region=eu-west-1", "--apply",
    ]  # fmt: skip
    assert (tmp_path / account).read_text() == settings + "\n"


def test_bakery_aws_stops_when_the_region_variable_is_missing(tmp_path: Path) -> None:
    script = copy_script(tmp_path, "bakery-aws")
    fake_scripts_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "BAKERY_AWS_REGION"}
    result = subprocess.run([script, "prune"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert "BAKERY_AWS_REGION" in result.stderr
