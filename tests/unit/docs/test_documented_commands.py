"""Every command the docs show is exercised, and every `invoke` command in them parses.

EVIDENCE says, for each documented command (its text as the doc shows it, without the
trailing comment), how it is exercised:
- Run(...): run here, by test_documented_command_runs, in a copy of the repository
  (never the developer's build/), AWS tasks against moto's server;
- CiRun(...): .ci/run runs it (or the line named);
- Workflow(job, line): a step of .github/workflows/images.yml runs that line;
- Test("path::function"): a test exercises it (mentions=True: and names it verbatim).
A documented command without an entry fails, and so does an entry no doc shows.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke.exceptions import ParseError

from .conftest import AGES, Account, command_env, seed_account
from .documented_commands import (
    MENTION,
    REPO_ROOT,
    DocCommand,
    block_after,
    documented_commands,
    invoke_argv,
    parse_invoke,
    task_collection,
)

DOCUMENTED = documented_commands()
COLLECTION = task_collection()


# --- how a command is exercised -----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What running a documented command here did."""

    command: str
    returncode: int
    output: str  # stdout and stderr together
    copy: Path  # the repository copy it ran in
    account: Account | None  # moto's account, for AWS tasks

    def ami(self, name: str) -> str:
        assert self.account is not None
        return self.account.ids[name]


Check = Callable[[Outcome], None]


def exits(code: int = 0, *shown: str) -> Check:
    """It exits with `code`, its output holding each of `shown`."""

    def check(outcome: Outcome) -> None:
        assert outcome.returncode == code, outcome.output
        for text in shown:
            assert text in outcome.output, f"{text!r} not in:\n{outcome.output}"

    return check


SUCCEEDS = exits(0)


@dataclass(frozen=True)
class Run:
    """Run here by test_documented_command_runs: with bash, in a copy of the repository,
    the virtualenv on PATH, after the `export` lines of the command's block.

    check: what the outcome must be; fill: placeholder -> value ("{third}": the id of
    that image of the AWS account); files: written into the copy first; extra: appended
    to the command; aws: seed moto's account (conftest.seed_account), AWS calls go there.
    """

    check: Check = SUCCEEDS
    fill: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    extra: str = ""
    aws: bool = False


@dataclass(frozen=True)
class CiRun:
    """.ci/run runs `line` (default: the documented command itself)."""

    line: str | None = None
    why: str = ""


@dataclass(frozen=True)
class Workflow:
    """A `run:` step of `job` in .github/workflows/images.yml runs `line`."""

    job: str
    line: str


@dataclass(frozen=True)
class Test:
    """The test `path::function` (or every test in `path`) exercises the command; with
    mentions=True the test's module holds the command's text as a string."""

    node: str
    mentions: bool = False

    __test__ = False  # not a pytest test class


Evidence = Run | CiRun | Workflow | Test


# --- checks of what ran -------------------------------------------------------------


def wrote(path: str, *shown: str) -> Check:
    """The command wrote `path` in the copy, holding each of `shown`."""

    def check(outcome: Outcome) -> None:
        assert outcome.returncode == 0, outcome.output
        written = outcome.copy / path
        assert written.is_file(), f"{path} was not written:\n{outcome.output}"
        text = written.read_text(encoding="utf-8")
        for each in shown:
            assert each in text, f"{each!r} not in {path}"

    return check


def lists_every_task(outcome: Outcome) -> None:
    exits(0)(outcome)
    listed = {line.split()[0] for line in outcome.output.splitlines()[1:] if line.strip()}
    assert set(COLLECTION.task_names) <= listed, outcome.output


def prints_findings(outcome: Outcome) -> None:
    # The host decides the verdict: 0 when ready, 1 with each problem's fix.
    assert outcome.returncode in (0, 1), outcome.output
    for check in ("packer", "accelerator", "disk"):
        assert check in outcome.output
    if outcome.returncode == 1:
        assert "fix:" in outcome.output


def schema_written(outcome: Outcome) -> None:
    wrote("build/bakery.schema.json")(outcome)
    schema = json.loads((outcome.copy / "build/bakery.schema.json").read_text())
    assert {"service", "aws", "local"} <= set(schema["properties"])


def iam_as_committed(outcome: Outcome) -> None:
    """The documents `invoke iam` writes are the ones the repository holds."""
    exits(0)(outcome)
    for path in sorted((REPO_ROOT / "iam").glob("*.json")):
        written = outcome.copy / "iam" / path.name
        assert json.loads(written.read_text()) == json.loads(path.read_text()), (
            f"iam/{path.name} differs from what `invoke iam` writes: run it and commit"
        )


def parameter(environment: str, image: str) -> Check:
    """The release parameter of the backend in `environment` holds `image`."""

    def check(outcome: Outcome) -> None:
        exits(0)(outcome)
        assert outcome.account is not None
        assert outcome.account.parameter(environment) == outcome.ami(image), outcome.output

    return check


def images_left(*names: str) -> Check:
    """Exactly the named images of the account are left."""

    def check(outcome: Outcome) -> None:
        exits(0)(outcome)
        assert outcome.account is not None
        assert outcome.account.images() == {outcome.ami(name) for name in names}, outcome.output

    return check


def dry_run(outcome: Outcome) -> None:
    images_left(*AGES)(outcome)
    assert "would delete" in outcome.output and outcome.ami("oldest") in outcome.output


def lists_images(outcome: Outcome) -> None:
    exits(0)(outcome)
    for name in AGES:
        assert outcome.ami(name) in outcome.output, outcome.output


def janitor_cleaned(outcome: Outcome) -> None:
    exits(0)(outcome)
    assert outcome.account is not None
    ec2 = outcome.account.client("ec2")
    [reservation] = ec2.describe_instances(InstanceIds=[outcome.ami("left_instance")])[
        "Reservations"
    ]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert outcome.ami("left_group") not in groups


LAUNCHES_STAGING = '"ImageId": "resolve:ssm:/bakery/images/staging/backend/ami-id"'


def collected_infra_checks(outcome: Outcome) -> None:
    """The suite takes the documented options and the README's example expect file, and
    selects the backend's checks only (the documented instance checks included)."""
    exits(0, "tests/infra/test_backend.py::", "tests/infra/test_agent.py::")(outcome)
    assert "test_frontend.py" not in outcome.output
    assert "-systemctl status fastapi-otel]" in outcome.output  # [HOST-line]
    assert "-cat /etc/nginx" not in outcome.output


# --- the registry -------------------------------------------------------------------

E2E = "tests/unit/aws/test_end_to_end.py::test_packer_build_release_copy_share_prune"
LAUNCH_TESTS = "tests/unit/aws/test_launch.py::"
CANARY_TESTS = "tests/unit/aws/test_canary.py::"
SLO_TESTS = "tests/unit/aws/test_slo.py::"
SAMPLING_TESTS = "tests/unit/aws/test_sampling.py::"
BAKERY_AWS = Test(
    "tests/unit/ci/test_workflow.py::test_bakery_aws_layers_the_account_settings_over_config"
)
BAKE_BUILD = Workflow("bake", '.github/scripts/bakery-aws build --target aws --role "$ROLE"')
BAKE_VERIFY = Workflow("bake", '.github/scripts/bakery-aws verify --target aws --role "$ROLE"')
BAKE_STAGING = Workflow(
    "bake",
    '.github/scripts/bakery-aws release --role "$ROLE" --environment staging --ami-id "$AMI_ID"',
)
PRODUCTION = Workflow(
    "production",
    '.github/scripts/bakery-aws release --role "$ROLE" --environment production --ami-id "$AMI_ID"',
)
CLEANUP_PRUNE = Workflow("cleanup", ".github/scripts/bakery-aws prune --apply")
CLEANUP_JANITOR = Workflow("cleanup", ".github/scripts/bakery-aws janitor --apply")
THE_GATE = CiRun(
    "./scripts/run invoke build",
    why="the bake's gate runs tests/infra over SSH with these options (bakery/verify/gate.py)",
)
RENDER_VALIDATES = Test(
    "tests/unit/foundation/test_render.py::test_rendered_hcl_passes_packer_fmt_and_validate"
)
INSTANCE_CHECK = Test("tests/infra/test_documented_checks.py::test_documented_check", mentions=True)
LAUNCH_FILE = Test(
    LAUNCH_TESTS + "test_launch_template_task_writes_the_file_for_create_launch_template"
)
ROLE_PROFILE = Test(
    LAUNCH_TESTS + "test_the_documented_instance_role_is_the_profile_the_template_names"
)

# The docs' own examples serve as the files their commands read.
ACCOUNT_YAML = block_after(REPO_ROOT / "docs/ci.md", "For example, `BAKERY_CONFIG`", "yaml")
EXPECT_JSON = block_after(REPO_ROOT / "tests/infra/README.md", "Example (backend, local)", "json")
CI_ACCOUNT = {"account.yaml": ACCOUNT_YAML}


def frontend_record(inputs_hash: str, page_sha256: str) -> str:
    """A local frontend record whose inventory holds only the page, as `invoke diff` reads it."""
    page = {"sha256": page_sha256, "mode": "0644", "owner": "root", "group": "root"}
    inventory = {"files": {"/var/www/bakery/index.html": page}, "enabled_units": ["nginx.service"]}
    record = {
        "role": "frontend",
        "image": f"frontend-{inputs_hash}.qcow2",
        "inputs_hash": inputs_hash,
        "packer_version": "1.6.6",
        "manifest": {"packages": ["nginx\t1.22.1-9\tamd64"], "inventory": inventory},
    }
    return json.dumps(record)


# The page changed between a kept bake and the current one: the diff names only it.
TWO_FRONTEND_BAKES = {
    "build/records/local/frontend-1111aaaa.json": frontend_record("1111aaaa", "a" * 64),
    "build/images/frontend/record.json": frontend_record("2222bbbb", "b" * 64),
}


def shows_only_the_page(outcome: Outcome) -> None:
    assert outcome.returncode == 0, outcome.output
    assert "owned files: 0 added, 0 removed, 1 changed" in outcome.output
    assert "~ /var/www/bakery/index.html: sha256:" + "a" * 64 in outcome.output
    assert "packages" not in outcome.output.replace("debian packages: 0", "")


def diff_json_names_the_page(outcome: Outcome) -> None:
    assert outcome.returncode == 0, outcome.output
    changes = json.loads(outcome.output)["changes"]
    assert list(changes["owned files"]["changed"]) == ["/var/www/bakery/index.html"]
    assert not any(changes[name][kind] for name in changes if name != "owned files"
                   for kind in ("added", "removed", "changed"))  # fmt: skip


EVIDENCE: dict[str, tuple[Evidence, ...]] = {
    # The main job, the test suite and the smoke test: .ci/run.
    "./scripts/run invoke build": (CiRun(),),
    "./scripts/run invoke test": (CiRun(),),
    "./scripts/run invoke validate --target local --target aws": (CiRun(),),
    "./scripts/run invoke images": (CiRun(),),
    "./scripts/run invoke smoke": (CiRun(),),
    "invoke build": (CiRun("./scripts/run invoke build"),),
    "invoke images": (
        Test("tests/unit/test_cli.py::test_images_table_goes_to_stdout_so_it_can_be_piped"),
    ),
    "invoke test": (CiRun("./scripts/run invoke test"),),
    "invoke vulns --role backend": (
        Test(
            "tests/unit/vuln/test_vuln_tasks.py::"
            "test_invoke_vulns_rejects_a_vulnerable_record_and_records_why",
            mentions=True,
        ),
    ),
    "invoke refresh-advisories --database PATH": (
        Test(
            "tests/unit/vuln/test_vuln_tasks.py::"
            "test_invoke_refresh_advisories_writes_the_dated_snapshot",
            mentions=True,
        ),
    ),
    "invoke diff frontend:OLDHASH frontend": (
        Run(shows_only_the_page, fill={"OLDHASH": "1111"}, files=TWO_FRONTEND_BAKES),
    ),
    "invoke diff frontend:OLDHASH frontend --json": (
        Run(diff_json_names_the_page, fill={"OLDHASH": "1111"}, files=TWO_FRONTEND_BAKES),
    ),
    "invoke smoke": (CiRun("./scripts/run invoke smoke"),),
    "invoke verify": (
        CiRun("./scripts/run invoke build", why="invoke build ends with the same gate"),
    ),
    ".venv/bin/pytest tests/unit/ci": (
        CiRun("./scripts/run invoke test", why="the unit suite holds tests/unit/ci"),
    ),
    # Cheap tasks and tools: run here.
    ".venv/bin/invoke --list": (Run(lists_every_task),),
    "invoke --help TASK": (Run(exits(0, "--no-verify", "--force"), fill={"TASK": "build"}),),
    "invoke host-check": (Run(prints_findings),),
    "invoke clean --leftovers": (
        Test(
            "tests/unit/local/test_faults.py::"
            "test_host_check_reports_a_dead_runs_leftovers_and_clean_removes_them"
        ),
    ),
    "invoke schema": (Run(schema_written),),
    "invoke render --role backend --set service.deployment_environment=staging": (
        Run(
            wrote(
                "build/local/backend/stage/rootfs/etc/bakery/defaults.env",
                "DEPLOYMENT_ENVIRONMENT=staging",
            )
        ),
    ),
    "invoke validate --target aws --config my-account.yaml": (
        Run(
            exits(0, "valid backend (aws)", "valid frontend (aws)", "valid database (aws)"),
            files={"my-account.yaml": ACCOUNT_YAML},
        ),
    ),
    "invoke iam": (Run(iam_as_committed),),
    "invoke iam --output build/iam": (
        Test("tests/unit/aws/test_tasks.py::test_iam_task_writes_the_documents"),
    ),
    "invoke iam --packer-version 1.10.0 --output build/iam": (
        Test(
            "tests/unit/aws/test_tasks.py::"
            "test_iam_task_renders_the_pipeline_policy_for_the_packer_version_asked"
        ),
    ),
    "invoke iam --role R --set service.log_group=GROUP": (
        Run(
            wrote("iam/instance-backend.json", "log-group:/aws/ec2/staging/checkout:"),
            fill={"R": "backend", "GROUP": "/aws/ec2/staging/checkout"},
        ),
    ),
    'BAKERY_AWS_REGION=eu-west-1 BAKERY_CONFIG="$(cat account.yaml)" '
    ".github/scripts/bakery-aws iam --output build/iam": (
        Run(wrote("build/iam/pipeline.json", "eu-west-1", "eu-central-1"), files=CI_ACCOUNT),
    ),
    ".venv/bin/actionlint -shellcheck .venv/bin/shellcheck": (Run(SUCCEEDS),),
    ".venv/bin/zizmor --offline .github": (Run(exits(0, "No findings")),),
    "cp docs/examples/user-data/backend.yaml my-backend.yaml": (
        Run(wrote("my-backend.yaml", "#cloud-config")),
    ),
    # Every role validated for each target: CI's check job, and the unit suite.
    "invoke validate": (Workflow("check", "./scripts/run invoke validate --target local"),),
    "./scripts/run invoke validate --target local": (
        Workflow("check", "./scripts/run invoke validate --target local"),
        RENDER_VALIDATES,
    ),
    "./scripts/run invoke validate --target aws": (
        Workflow("check", "./scripts/run invoke validate --target aws"),
        RENDER_VALIDATES,
    ),
    # arm64 (docs/aws.md#arm64-graviton): validated here for both targets; built and
    # released on moto from the rendered arm64 template.
    "invoke validate --target local --target aws --set arch=arm64": (
        Run(exits(0, "valid backend (local)", "valid database (aws)")),
        Test(
            "tests/unit/foundation/test_arch.py::test_arm64_templates_pass_packer_fmt_and_validate"
        ),
    ),
    "invoke build --target aws --role backend --set arch=arm64": (
        Test(
            "tests/unit/aws/test_arch.py::"
            "test_arm64_build_runs_graviton_from_the_arm64_source_and_records_arm64"
        ),
    ),
    # The local arm64 bake and verify (issue #16): .ci/run's last stage, and its guest here.
    "invoke build --role backend --set arch=arm64": (
        CiRun("./scripts/run invoke build --role backend --set arch=arm64"),
        Test("tests/unit/local/test_arm64_guest.py"),
    ),
    "./scripts/run invoke build --role backend --set arch=arm64": (
        CiRun(),
        Test("tests/unit/local/test_arm64_guest.py"),
    ),
    # The local gate without its lynis audit (docs/hardening.md): the --set reaches the
    # gate's expectations, by which tests/infra/test_hardening.py skips the audit.
    "./scripts/run invoke build --set verify.min_hardening_index=0": (
        Test(
            "tests/unit/verify/test_launch.py::"
            "test_the_local_gate_audits_with_lynis_unless_the_minimum_is_set_to_0"
        ),
    ),
    "invoke images --role backend": (CiRun("./scripts/run invoke images --role backend"),),
    "./scripts/run invoke images --role backend": (
        CiRun(),
        Test(
            "tests/unit/local/test_arm64_guest.py::"
            "test_invoke_images_lists_both_arches_of_a_role_side_by_side"
        ),
    ),
    "invoke host-check --set arch=arm64": (Run(prints_findings),),
    "invoke release --role backend -e staging --set arch=arm64": (
        Test(
            "tests/unit/aws/test_arch.py::test_each_architecture_is_released_to_its_own_parameter"
        ),
    ),
    "./scripts/run invoke validate --target aws --set os=al2023": (
        Workflow("check", "./scripts/run invoke validate --target aws --set os=al2023"),
        Test("tests/unit/foundation/test_render.py::test_al2023_renders_and_validates_for_aws"),
    ),
    # Build and verify on AWS: the real Packer against moto in the unit suite; CI's bake.
    "invoke build --target aws": (Test(E2E), BAKE_BUILD),
    "invoke verify --target aws": (Test(E2E), BAKE_VERIFY),
    "invoke build --target aws --role R": (Test(E2E), BAKE_BUILD),
    "invoke verify --target aws --role R": (Test(E2E), BAKE_VERIFY),
    "invoke build --target aws --role backend": (Test(E2E), BAKE_BUILD),
    "invoke verify --target aws --role backend": (Test(E2E), BAKE_VERIFY),
    ".github/scripts/bakery-aws build --target aws --role backend": (Test(E2E), BAKE_BUILD),
    ".github/scripts/bakery-aws verify --target aws --role backend": (Test(E2E), BAKE_VERIFY),
    # Release, listing, pruning, the janitor, launch templates: run here against moto.
    "invoke images --target aws": (Run(lists_images, aws=True),),
    "invoke release --role backend -e staging": (Run(parameter("staging", "newest"), aws=True),),
    "invoke release --role backend -e production --ami-id ami-0123456789abcdef0": (
        Run(parameter("production", "third"), fill={"ami-0123456789abcdef0": "{third}"}, aws=True),
    ),
    "invoke release --role backend -e production --rollback": (
        Run(parameter("production", "second"), aws=True),
    ),
    "invoke prune": (Run(dry_run, aws=True),),
    "invoke prune --keep 2 --apply": (Run(images_left("newest", "second"), aws=True),),
    "invoke janitor --apply": (Run(janitor_cleaned, aws=True), CLEANUP_JANITOR),
    "invoke launch-template --role backend -e staging --output build/launch/backend-staging.json": (
        Run(wrote("build/launch/backend-staging.json", LAUNCHES_STAGING), aws=True),
    ),
    '.github/scripts/bakery-aws release --role backend -e staging --ami-id "$(.github/scripts/'
    'recorded-ami backend)"': (
        Run(
            parameter("staging", "third"),
            files={**CI_ACCOUNT, "build/records/aws/backend-{third}.json": "{}"},
            aws=True,
        ),
        BAKE_STAGING,
    ),
    ".github/scripts/bakery-aws prune --apply": (
        Run(images_left("newest", "second", "third"), files=CI_ACCOUNT, aws=True),
        CLEANUP_PRUNE,
    ),
    # The same tasks as above, as CI's workflow runs them.
    "invoke prune --apply": (CLEANUP_PRUNE,),
    ".github/scripts/bakery-aws janitor --apply": (CLEANUP_JANITOR,),
    "invoke release --role R --environment E": (BAKE_STAGING,),
    "invoke release --role R -e staging --ami-id <the AMI just built>": (BAKE_STAGING,),
    "invoke release --role R -e production --ami-id <the AMI staging got>": (PRODUCTION,),
    ".github/scripts/bakery-aws release --role backend -e production --ami-id "
    "ami-0123456789abcdef0": (PRODUCTION, BAKERY_AWS),
    "./scripts/run invoke TASK --config build/ci/account.yaml --set "
    "aws.region=$BAKERY_AWS_REGION …": (BAKERY_AWS,),
    # Covered in-process by tests of their own.
    "invoke launch-template --role backend -e staging --user-data my-backend.yaml --output "
    "build/launch/backend-staging.json": (LAUNCH_FILE,),
    ".github/scripts/bakery-aws prune": (
        BAKERY_AWS,
        Test("tests/unit/aws/test_prune.py::test_dry_run_changes_nothing"),
    ),
    "invoke release --role backend -e staging --rollback": (
        Test(LAUNCH_TESTS + "test_a_rollback_changes_what_the_same_template_launches"),
    ),
    "invoke launch-template --role R -e E": (
        Test(LAUNCH_TESTS + "test_launch_template_task_prints_the_template_data"),
    ),
    # EC2 and SSM on moto; Application Signals, CloudWatch and X-Ray through Stubber.
    "invoke canary --role backend -e staging": (
        Test(CANARY_TESTS + "test_canary_task_launches_checks_and_prints_what_it_found"),
    ),
    "invoke canary --role backend -e staging --instance-id i-0123456789abcdef0": (
        Test(CANARY_TESTS + "test_canary_task_reuses_a_running_instance"),
    ),
    ".github/scripts/bakery-aws canary --role backend --environment staging": (
        Workflow(
            "canary", ".github/scripts/bakery-aws canary --role backend --environment staging"
        ),
        Test(CANARY_TESTS + "test_canary_task_launches_checks_and_prints_what_it_found"),
    ),
    "invoke launch-template --role backend -e staging --create-security-group": (
        Test(LAUNCH_TESTS + "test_create_security_group_makes_one_with_no_ingress_once"),
    ),
    "invoke launch-template --role backend -e staging --security-group sg-0123456789abcdef0": (
        Test(LAUNCH_TESTS + "test_a_group_open_only_on_the_app_port_is_attached"),
    ),
    # SLOs and sampling: application-signals and X-Ray through Stubber (moto has neither),
    # CloudWatch alarms on moto.
    "invoke slo --role backend -e staging": (
        Test(SLO_TESTS + "test_slo_task_prints_the_plan_as_a_dry_run"),
    ),
    "invoke slo --role backend -e staging --apply": (
        Test(SLO_TESTS + "test_slo_task_applies_then_shows_the_status"),
    ),
    "invoke slo --role backend -e staging --status": (
        Test(SLO_TESTS + "test_slo_task_applies_then_shows_the_status"),
    ),
    "invoke sampling --role backend -e staging": (
        Test(SAMPLING_TESTS + "test_sampling_task_prints_the_rule_and_what_wins_over_it"),
    ),
    "invoke sampling --role backend -e staging --apply": (
        Test(SAMPLING_TESTS + "test_sampling_task_applies_the_rule"),
    ),
    "invoke release --role backend -e staging --slo --sampling": (
        Test(SLO_TESTS + "test_release_with_slo_applies_the_objectives_after_promoting"),
        Test(SAMPLING_TESTS + "test_release_with_sampling_applies_the_rule_after_promoting"),
    ),
    # No application-signals service in moto: botocore's Stubber answers.
    "invoke enable-application-signals": (
        Test("tests/unit/aws/test_appsignals.py::test_discovery_starts_once_per_region"),
    ),
    # The aws CLI is not a dependency: the tests make the same calls with boto3 and moto.
    "aws ec2 create-launch-template --region us-east-1 --launch-template-name "
    "bakery-backend-staging --launch-template-data file://build/launch/backend-staging.json": (
        LAUNCH_FILE,
    ),
    "aws ec2 run-instances --region us-east-1 --launch-template "
    "LaunchTemplateName=bakery-backend-staging --subnet-id subnet-0123456789abcdef0 "
    "--security-group-ids sg-0123456789abcdef0": (
        Test(LAUNCH_TESTS + "test_instances_launched_from_the_template_carry_its_tags"),
    ),
    "aws iam create-role --role-name bakery-backend --assume-role-policy-document "
    """'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"""
    """"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'""": (ROLE_PROFILE,),
    "aws iam put-role-policy --role-name bakery-backend --policy-name bakery-instance "
    "--policy-document file://build/iam/instance-backend.json": (ROLE_PROFILE,),
    "aws iam create-instance-profile --instance-profile-name bakery-backend": (ROLE_PROFILE,),
    "aws iam add-role-to-instance-profile --instance-profile-name bakery-backend "
    "--role-name bakery-backend": (ROLE_PROFILE,),
    # The image checks by hand: collected here with the documented options and the
    # README's example expect file (no host to reach); run over SSH by the gate.
    "pytest tests/infra --hosts=ssh://admin@HOST --bakery-role=backend "
    "--bakery-expect=expect.json": (
        Run(
            collected_infra_checks,
            fill={"HOST": "127.0.0.1"},
            files={"expect.json": EXPECT_JSON},
            extra=" --collect-only -q",
        ),
        THE_GATE,
    ),
    "python -m pytest tests/infra -p no:cacheprovider --hosts=ssh://admin@127.0.0.1:PORT "
    "--ssh-config=FILE --bakery-role=backend --bakery-expect=expect.json "
    "--junitxml=report.xml": (
        Run(
            collected_infra_checks,
            fill={"PORT": "2222", "FILE": "ssh_config"},
            files={"expect.json": EXPECT_JSON, "ssh_config": ""},
            extra=" --collect-only -q",
        ),
        THE_GATE,
    ),
    # On an instance: tests/infra/test_documented_checks.py runs each line for its roles.
    "systemctl status bakery-agent-config amazon-cloudwatch-agent": (INSTANCE_CHECK,),
    "journalctl -u bakery-agent-config -b": (INSTANCE_CHECK,),
    "systemctl status fastapi-otel": (INSTANCE_CHECK,),
    "python3 -c 'import urllib.request as u; "
    """print(u.urlopen("http://localhost:8000/health").read().decode())'""": (INSTANCE_CHECK,),
    "cat /etc/nginx/conf.d/bakery-upstream.conf": (INSTANCE_CHECK,),
    "journalctl -u bakery-database-init -b": (INSTANCE_CHECK,),
}


# --- the docs' commands -------------------------------------------------------------


def is_mention(command: DocCommand) -> bool:
    """Prose naming a task without its required options (`invoke release`): its task and
    flags must parse, but it is no command to run."""
    argv = invoke_argv(command.text)
    if not command.inline or argv is None:
        return False
    try:
        parse_invoke(argv, COLLECTION)
    except ParseError as exc:
        return MENTION in str(exc)
    return False


COMMANDS = [command for command in DOCUMENTED if not is_mention(command)]
INVOKE_COMMANDS = [command for command in DOCUMENTED if invoke_argv(command.text) is not None]


def first_showing(text: str) -> DocCommand:
    return next(command for command in COMMANDS if command.text == text)


@pytest.mark.parametrize("command", INVOKE_COMMANDS, ids=[c.where for c in INVOKE_COMMANDS])
def test_documented_invoke_command_parses(command: DocCommand) -> None:
    argv = invoke_argv(command.text)
    assert argv is not None
    if is_mention(command):
        return  # task and flags parsed; only the required options are left out
    try:
        parse_invoke(argv, COLLECTION)
    except ParseError as exc:
        pytest.fail(f"{command.where}: `{command.text}`: invoke says: {exc}")


def test_every_documented_command_is_exercised() -> None:
    missing = [command for command in COMMANDS if command.text not in EVIDENCE]
    assert not missing, (
        "these documented commands have no evidence that they work:\n"
        + "\n".join(f"  {c.where}: {c.text}" for c in missing)
        + "\nAdd each to EVIDENCE in tests/unit/docs/test_documented_commands.py, keyed by"
        " the text above: Run(...) to run it in this test (cheap commands; AWS tasks run"
        " against moto with aws=True), CiRun(...) if .ci/run runs it, Workflow(job, line)"
        " if a step of .github/workflows/images.yml runs it, or Test('path::function')"
        " naming the test that exercises it."
    )


def test_every_evidence_entry_is_documented() -> None:
    shown = {command.text for command in COMMANDS}
    stale = sorted(text for text in EVIDENCE if text not in shown)
    assert not stale, (
        "EVIDENCE names commands no doc shows (reworded or removed? update the key):\n"
        + "\n".join(f"  {text}" for text in stale)
    )


# --- evidence outside this test -----------------------------------------------------


def _entries(kind: type) -> list[tuple[str, Any]]:
    return [(text, e) for text, found in EVIDENCE.items() for e in found if isinstance(e, kind)]


def _ids(entries: list[tuple[str, Any]]) -> list[str]:
    return [text[:60] for text, _ in entries]


def ci_run_lines() -> list[str]:
    text = (REPO_ROOT / ".ci/run").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(("text", "evidence"), _entries(CiRun), ids=_ids(_entries(CiRun)))
def test_ci_runs_it(text: str, evidence: CiRun) -> None:
    line = evidence.line or text
    assert line in ci_run_lines(), f".ci/run does not run `{line}` (evidence for `{text}`)"


def workflow_runs(job: str) -> list[str]:
    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/images.yml").read_text())
    steps = workflow["jobs"][job]["steps"]
    return [line.strip() for step in steps for line in str(step.get("run", "")).splitlines()]


@pytest.mark.parametrize(("text", "evidence"), _entries(Workflow), ids=_ids(_entries(Workflow)))
def test_the_workflow_runs_it(text: str, evidence: Workflow) -> None:
    assert evidence.line in workflow_runs(evidence.job), (
        f"no step of the {evidence.job} job runs `{evidence.line}` (evidence for `{text}`)"
    )


@pytest.mark.parametrize(("text", "evidence"), _entries(Test), ids=_ids(_entries(Test)))
def test_the_named_test_exists(text: str, evidence: Test) -> None:
    path, _, function = evidence.node.partition("::")
    source = REPO_ROOT / path
    assert source.is_file(), f"{path} does not exist (evidence for `{text}`)"
    module = ast.parse(source.read_text(encoding="utf-8"))
    tests = {
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    assert (function in tests) if function else tests, f"no {evidence.node} (for `{text}`)"
    if evidence.mentions:
        strings = {
            node.value
            for node in ast.walk(module)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert text in strings, f"{path} holds no string `{text}`"


# --- running the cheap ones here ----------------------------------------------------

# Entries no doc shows fail test_every_evidence_entry_is_documented instead.
RUNS = [
    (first_showing(text), run)
    for text, run in _entries(Run)
    if any(command.text == text for command in COMMANDS)
]


def region_of(command: DocCommand) -> str:
    """Where the command acts: the region its block exports for CI's script, or config's."""
    for line in (*command.setup, command.text):
        found = re.search(r"\bBAKERY_AWS_REGION=([a-z0-9-]+)", line)
        if found:
            return found.group(1)
    return "us-east-1"


def filled(text: str, fill: Mapping[str, str], ids: Mapping[str, str]) -> str:
    for placeholder, value in fill.items():
        pattern = rf"(?<![\w-]){re.escape(placeholder)}(?![\w-])"
        text = re.sub(pattern, value.format_map(ids).replace("\\", "\\\\"), text)
    return text


@pytest.mark.parametrize(
    ("command", "run"), RUNS, ids=[f"{c.where} {c.text[:50]}" for c, _ in RUNS]
)
def test_documented_command_runs(
    command: DocCommand, run: Run, repo_copy: Path, request: pytest.FixtureRequest
) -> None:
    account = None
    env = command_env(repo_copy)
    if run.aws:
        endpoint = request.getfixturevalue("fake_aws_env")
        account = seed_account(endpoint, region_of(command))
        env = command_env(repo_copy, endpoint)
    ids = account.ids if account else {}
    for name, content in run.files.items():
        path = repo_copy / name.format_map(ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    text = filled(command.text, run.fill, ids) + run.extra
    script = "\n".join([*command.setup, text])
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=repo_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    run.check(Outcome(text, result.returncode, result.stdout + result.stderr, repo_copy, account))


def test_documented_bad_input_message_is_what_bakery_prints(repo_copy: Path) -> None:
    """README.md: a bad value stops with the option and key path, exit code 2."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    documented = re.search(r"`(--set service\.name: [^`]*) \(\.\.\.\)`, exit code 2", readme)
    assert documented, "README.md no longer shows the bad-input example this test checks"
    result = subprocess.run(
        ["invoke", "render", "--set", "service.name=my app"],
        cwd=repo_copy,
        env=command_env(repo_copy),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"bakery: bad input: {documented.group(1)} (" in result.stderr
