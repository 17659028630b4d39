"""The AWS-only invoke tasks; tasks.py imports them. Each is a thin edge: options in,
a bakery.aws call, a table or a line out, and exit codes from `exits_cleanly`."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from invoke.context import Context
from rich.markup import escape
from rich.table import Table

from bakery.aws import sampling as samplings
from bakery.aws import slo as slos
from bakery.aws.appsignals import enable_application_signals as start_discovery
from bakery.aws.canary import DEFAULT_TIMEOUT, run_canary
from bakery.aws.clients import ec2_client
from bakery.aws.iam import (
    DEFAULT_SECRET_PATH,
    iam_documents,
    instance_role_name,
    write_iam_documents,
)
from bakery.aws.images import list_images
from bakery.aws.janitor import janitor as find_expired
from bakery.aws.launch import (
    AGENT_PORTS,
    check_security_groups,
    ensure_security_group,
    example_user_data,
    launch_template_data,
    promoted_image,
    read_user_data,
    template_json,
    template_name,
    user_data_warnings,
    write_template_data,
)
from bakery.aws.prune import prune as decide_prune
from bakery.aws.release import release as promote
from bakery.aws.tags import utc_now
from bakery.cli import (
    COMMON_HELP,
    console,
    exits_cleanly,
    load_configs,
    output_path,
    results,
    task,
)
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.errors import BadInput, MissingTool
from bakery.packer import PackerVersion, detect_version
from bakery.records import LISTING_COLUMNS, listing_row

ROLE_HELP = {key: COMMON_HELP[key] for key in ("role", "config", "set")}
# An SSM parameter path the instance role may read below: no wildcards, no empty segments.
SSM_SECRET_PATH = re.compile(r"(/[A-Za-z0-9_.-]+)+/?")
PACKER_VERSION = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+")
# What EC2 and IAM accept, checked before any AWS call so a typo is bad input, not a failure.
AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
INSTANCE_PROFILE_NAME = re.compile(r"[\w+=,.@-]{1,128}")
ITERABLE = ["role", "set"]


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


@task(
    iterable=ITERABLE,
    help={
        **ROLE_HELP,
        "environment": "environment to point at the AMI, e.g. production, staging, dev",
        "ami_id": "the verified AMI to promote (default: the role's newest verified AMI)",
        "rollback": "point the environment back at its previous verified AMI instead",
        "slo": "then apply the role's slo.objectives in the environment (as `invoke slo --apply`)",
        "sampling": "then apply the environment's X-Ray sampling rule (as `invoke sampling "
        "--apply`)",
    },
)
@exits_cleanly
def release(
    c: Context,
    environment: str,
    role: list[str] | None = None,
    ami_id: str | None = None,
    rollback: bool = False,
    slo: bool = False,
    sampling: bool = False,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Promote a verified AMI to an environment (SSM parameter, tags, copies, sharing)."""
    configs = load_configs(role, "aws", config, set)
    if ami_id and not AMI_ID.fullmatch(ami_id):
        raise BadInput(f"--ami-id {ami_id}: not an AMI id (ami- and 8 or 17 hex digits)")
    if ami_id and len(configs) != 1:
        raise BadInput("--ami-id names one image: give exactly one --role with it")
    for cfg in configs:
        promote(cfg, environment, ami_id=ami_id, rollback=rollback)
    # After every promotion: the release itself stands even when one of these fails,
    # and each is idempotent, so the same command (or `invoke slo`) finishes it.
    if sampling:
        traced = samplings.traced(configs)
        changes = [samplings.apply_sampling(cfg, environment, apply=True) for cfg in traced]
        show_sampling_changes(changes, environment, apply=True)
    for cfg in configs if slo else ():
        made = slos.apply_slos(cfg, environment, apply=True)
        if made:
            show_slo_changes(made, environment, apply=True)


@task(
    iterable=ITERABLE,
    help={
        **ROLE_HELP,
        "keep": "verified AMIs to keep per role and region (default: aws.retention)",
        "apply": "really deregister and delete; without it, only show what would go",
    },
)
@exits_cleanly
def prune(
    c: Context,
    role: list[str] | None = None,
    keep: str | None = None,
    apply: bool = False,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Show (or --apply) which old AMIs go; promoted and in-use AMIs always stay."""
    configs = load_configs(role, "aws", config, set)
    if keep is not None and not str(keep).lstrip("-").isdigit():
        raise BadInput(f"--keep {keep}: give a whole number of images, e.g. --keep 3")
    rows = decide_prune(configs, keep=None if keep is None else int(keep), apply=apply)
    verb = "deleted" if apply else "would delete"
    results.print(
        _table(
            f"prune ({'applied' if apply else 'dry run: nothing changed'})",
            ["ami", "role", "arch", "region", "created", "status", "decision", "reason"],
            [
                (
                    r.ami_id,
                    r.role,
                    r.arch or "-",
                    r.region,
                    r.created,
                    r.status,
                    verb if r.decision == "delete" else "keep",
                    r.reason,
                )
                for r in rows
            ],
        )
    )


@task(
    iterable=ITERABLE,
    help={**ROLE_HELP, "apply": "really remove expired test resources; without it, only list"},
)
@exits_cleanly
def janitor(
    c: Context,
    role: list[str] | None = None,
    apply: bool = False,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """List (or --apply: remove) expired test instances and test and build key pairs and groups."""
    rows = find_expired(load_configs(role, "aws", config, set), apply=apply)
    results.print(
        _table(
            f"left-over resources ({'applied' if apply else 'dry run: nothing changed'})",
            ["kind", "purpose", "id", "region", "expires at", "expired", "in use by", "removed"],
            [
                (
                    r.kind,
                    r.purpose,
                    r.resource_id,
                    r.region,
                    r.expires_at,
                    r.expired,
                    ", ".join(r.used_by) or "-",
                    r.removed,
                )
                for r in rows
            ],
        )
    )


def show_images(configs: Sequence[BakeryConfig]) -> None:
    """Print bakery's AMIs per role and region: the local listing's columns (from each
    AMI's record, read from its tags), then region and where it is promoted."""
    results.print(
        _table(
            "aws images",
            [*LISTING_COLUMNS, "region", "promoted"],
            [
                (
                    *listing_row(record),
                    record.details["region"],
                    ", ".join(record.details["promoted"]) or "-",
                )
                for record in list_images(configs)
            ],
        )
    )


@task(name="enable-application-signals", iterable=ITERABLE, help=ROLE_HELP)
@exits_cleanly
def enable_application_signals(
    c: Context,
    role: list[str] | None = None,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Turn on Application Signals (StartDiscovery) once per account and region."""
    start_discovery(load_configs(role, "aws", config, set))


@task(
    iterable=ITERABLE,
    help={
        **ROLE_HELP,
        "output": "folder for the policy JSON files (default: iam/ in the repo)",
        "secret_path": f"SSM path of launch-time secrets (default: {DEFAULT_SECRET_PATH})",
        "packer_version": "the Packer that builds, e.g. 1.6.6 or 1.10.0 (default: the "
        "installed one's; `any` for a policy every supported Packer works with)",
    },
)
@exits_cleanly
def iam(
    c: Context,
    role: list[str] | None = None,
    output: str | None = None,
    secret_path: str = DEFAULT_SECRET_PATH,
    packer_version: str | None = None,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Write the instance-role and pipeline IAM policies bakery needs as JSON."""
    if not SSM_SECRET_PATH.fullmatch(secret_path):
        raise BadInput(
            f"--secret-path {secret_path}: give an SSM path like /bakery/secrets/ (letters, "
            "digits, _ . - between slashes; no wildcards: the policy would grant every secret)"
        )
    packer = _packer_for_iam(packer_version)
    documents = iam_documents(load_configs(role, "aws", config, set), secret_path, packer)
    folder = Path(output) if output else REPO_ROOT / "iam"
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--output {output}: is a file; give a folder for the policy files")
    for path in write_iam_documents(documents, folder):
        shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        console.print(f"wrote {escape(str(shown))}")
    console.print(f"the pipeline policy is for Packer {packer or 'of any supported version'}")


def _packer_for_iam(option: str | None) -> PackerVersion | None:
    """--packer-version: a version, `any`, or (absent) the installed Packer's, else any."""
    if option is not None and option.strip().lower() == "any":
        return None
    if option is not None:
        if not PACKER_VERSION.fullmatch(option.strip()):
            raise BadInput(
                f"--packer-version {option}: give a version such as 1.6.6 or 1.10.0, or `any`"
            )
        return PackerVersion.parse(option)
    try:
        return detect_version()
    except MissingTool:
        console.print(
            "packer is not installed: writing a pipeline policy for any supported Packer "
            "(pass --packer-version to narrow it)"
        )
        return None


@task(
    name="launch-template",
    iterable=["set", "security_group"],
    help={
        "role": "the role the instances run: backend, frontend or database",
        "environment": "the environment whose released AMI they launch, e.g. staging",
        "user_data": "cloud-init user data file (default: docs/examples/user-data/ROLE.yaml, "
        "an example to copy and edit)",
        "instance_profile": f"instance profile to attach (default: {instance_role_name('ROLE')}, "
        "whose role has the policy iam/instance-ROLE.json)",
        "output": "write the JSON to this file instead of printing it",
        "security_group": "attach this security group (repeatable); refused if any rule "
        f"reaches the agent's ports {', '.join(map(str, AGENT_PORTS))}",
        "create_security_group": "attach bakery-ROLE-ENV-instances, made (once) with no "
        "ingress rule, so the agent's ports stay closed",
        "vpc_id": "the VPC for --create-security-group (default: the default VPC)",
        "config": COMMON_HELP["config"],
        "set": COMMON_HELP["set"],
    },
)
@exits_cleanly
def launch_template(
    c: Context,
    role: str,
    environment: str,
    user_data: str | None = None,
    instance_profile: str | None = None,
    output: str | None = None,
    security_group: list[str] | None = None,
    create_security_group: bool = False,
    vpc_id: str | None = None,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Print the launch template data that launches the role's released AMI (resolve:ssm)."""
    (cfg,) = load_configs([role], "aws", config, set)
    if instance_profile is not None and not INSTANCE_PROFILE_NAME.fullmatch(instance_profile):
        raise BadInput(
            f"--instance-profile {instance_profile}: not an instance profile name "
            "(1-128 letters, digits and +=,.@_-)"
        )
    if output is not None:
        output_path("--output", output, Path(output))  # a folder is refused before AWS
    if vpc_id and not create_security_group:
        raise BadInput("--vpc-id is where --create-security-group makes the group: add it")
    path = Path(user_data) if user_data else example_user_data(cfg.role)
    content = read_user_data(path)
    groups = list(security_group or [])
    launch_template_data(cfg, environment, content, instance_profile)  # checks the input
    ami_id = promoted_image(cfg, environment)
    check_security_groups(ec2_client(cfg.aws.region), groups)
    if create_security_group:
        group_id, made = ensure_security_group(cfg, environment, vpc_id)
        groups.append(group_id)
        console.print(
            f"{'made' if made else 'found'} security group {group_id}: no ingress rule; add "
            f"the app's own port for its clients, never {', '.join(map(str, AGENT_PORTS))}"
        )
    data = launch_template_data(cfg, environment, content, instance_profile, groups)
    console.print(f"{data['ImageId']} now resolves to {ami_id}")
    if not user_data:
        console.print(
            f"user data: the example {path.relative_to(REPO_ROOT)}; for real instances copy "
            "it, put in your addresses and pass --user-data FILE"
        )
    for warning in user_data_warnings(cfg, environment, content):
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    if not output:
        sys.stdout.write(template_json(data))
        return
    write_template_data(data, Path(output))
    name = template_name(cfg, environment)
    console.print(
        f"wrote {escape(output)}; create the template with:\n  aws ec2 create-launch-template "
        f"--region {cfg.aws.region} --launch-template-name {name} "
        f"--launch-template-data file://{escape(output)}"
    )


@task(
    iterable=["set"],
    help={
        "role": "the role to prove: backend (the only one with an instrumented app)",
        "environment": "the environment whose released AMI to prove, e.g. staging",
        "user_data": "the role's launch-time user data (default: docs/examples/user-data/"
        "ROLE.yaml); its DEPLOYMENT_ENVIRONMENT must be the environment",
        "instance_id": "reuse this running instance of the released AMI (it sends its own "
        "traffic; nothing is launched or terminated)",
        "timeout": f"minutes to wait for the telemetry (default: "
        f"{int(DEFAULT_TIMEOUT.total_seconds() // 60)})",
        "config": COMMON_HELP["config"],
        "set": COMMON_HELP["set"],
    },
)
@exits_cleanly
def canary(
    c: Context,
    role: str,
    environment: str,
    user_data: str | None = None,
    instance_id: str | None = None,
    timeout: str | None = None,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Prove a release: telemetry from its AMI reaches Application Signals, CloudWatch, X-Ray."""
    (cfg,) = load_configs([role], "aws", config, set)
    if timeout is not None and not str(timeout).isdigit():
        raise BadInput(f"--timeout {timeout}: give whole minutes, e.g. --timeout 20")
    wait = timedelta(minutes=int(timeout)) if timeout is not None else DEFAULT_TIMEOUT
    path = Path(user_data) if user_data else example_user_data(cfg.role)
    content = b"" if instance_id else read_user_data(path)
    result = run_canary(
        cfg,
        environment,
        content,
        instance_id=instance_id,
        timeout=wait,
        progress=lambda message: console.print(message, soft_wrap=True),
    )
    found = result.found
    how = "launched, terminated" if result.launched else "reused"
    console.print(
        _table(
            f"canary: {result.role} {result.environment} ({result.region})",
            ["check", "found"],
            [
                ("AMI (released)", result.ami_id),
                (
                    "instance",
                    f"{result.instance_id} ({how})",
                ),
                (
                    "Application Signals service",
                    f"{result.service} in {result.deployment_environment}",
                ),
                *(
                    (f"ApplicationSignals {name}", f"{n} datapoints")
                    for name, n in found.datapoints.items()
                ),
                ("X-Ray traces", str(found.traces)),
                ("polls", str(result.polls)),
            ],
        )
    )
    console.print(
        f"[green]telemetry arrived[/] for {result.service} in {result.deployment_environment}"
    )


SLO_VERBS = {"create": "would create", "update": "would update", "unchanged": "unchanged",
             "delete": "would delete"}  # fmt: skip
APPLIED_VERBS = {"create": "created", "update": "updated", "unchanged": "unchanged",
                 "delete": "deleted"}  # fmt: skip


def show_slo_changes(changes: Sequence[slos.SloChange], environment: str, apply: bool) -> None:
    """Print what an SLO run did (or, without apply, would do), one row per SLO or alarm."""
    verbs = APPLIED_VERBS if apply else SLO_VERBS
    results.print(
        _table(
            f"SLOs in {environment} ({'applied' if apply else 'dry run: nothing changed'})",
            ["kind", "name", "decision", "detail"],
            [(c.kind, c.name, verbs[c.action], c.detail) for c in changes],
        )
    )


def _slo_row(status: slos.SloStatus) -> tuple[str, ...]:
    attainment = "-" if status.attainment is None else f"{status.attainment:g}"
    mine = "yes" if status.from_config else "no"
    return (status.name, status.operation, mine, status.budget_status, attainment)


@task(
    iterable=ITERABLE,
    help={
        **ROLE_HELP,
        "environment": "the environment whose service the SLOs watch, e.g. staging",
        "apply": "really create or update; without it, only show what would change",
        "status": "list the service's SLOs in the environment and their error budget status",
    },
)
@exits_cleanly
def slo(
    c: Context,
    environment: str,
    role: list[str] | None = None,
    apply: bool = False,
    status: bool = False,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Show (or --apply) the SLOs and burn-rate alarms of config's slo.objectives."""
    configs = load_configs(role, "aws", config, set)
    if status and apply:
        raise BadInput("--status only reads: drop --apply (or --status)")
    for cfg in configs:
        if status:
            found = slos.list_slos(cfg, environment, utc_now())
            results.print(
                _table(
                    f"SLOs of {cfg.service.name} in {environment} ({cfg.aws.region})",
                    ["slo", "operation", "from config", "budget", "attainment %"],
                    [_slo_row(s) for s in found],
                )
            )
            for name in slos.missing_from_account(cfg, environment, found):
                console.print(f"[yellow]not created yet:[/] {name} (run with --apply)")
            continue
        changes = slos.apply_slos(
            cfg, environment, apply=apply, progress=lambda line: console.print(line)
        )
        if not changes:
            console.print(f"{cfg.role}: no slo.objectives in config")
            continue
        show_slo_changes(changes, environment, apply)


@task(
    iterable=ITERABLE,
    help={
        **ROLE_HELP,
        "environment": "the environment whose sampling rate to apply, e.g. staging",
        "apply": "really create or update the rule; without it, only show what would change",
    },
)
@exits_cleanly
def sampling(
    c: Context,
    environment: str,
    role: list[str] | None = None,
    apply: bool = False,
    config: str | None = None,
    set: list[str] | None = None,
) -> None:
    """Show (or --apply) the X-Ray sampling rule config gives the service in an environment."""
    configs = load_configs(role, "aws", config, set)
    changes = [
        samplings.apply_sampling(cfg, environment, apply=apply) for cfg in samplings.traced(configs)
    ]
    for cfg in configs:
        if cfg not in samplings.traced(configs):
            console.print(f"{cfg.role}: sends no traces, so it needs no sampling rule")
    show_sampling_changes(changes, environment, apply)


def show_sampling_changes(
    changes: Sequence[samplings.SamplingChange], environment: str, apply: bool
) -> None:
    """Print the sampling rules a run decided on, and the rules that win over them."""
    verbs = APPLIED_VERBS if apply else SLO_VERBS
    how = "applied" if apply else "dry run: nothing changed"
    results.print(
        _table(
            f"X-Ray sampling in {environment} ({how})",
            ["rule", "decision", "per second", "then %", "detail"],
            [
                (
                    c.rule,
                    verbs[c.action],
                    c.reservoir_per_second,
                    f"{c.fixed_rate_percent:g}",
                    c.detail,
                )
                for c in changes
            ],
        )
    )
    for change in changes:
        if change.overridden_by:
            console.print(
                f"[yellow]warning:[/] {', '.join(change.overridden_by)} also match "
                f"{change.rule}'s service and win (lower priority number): its rate applies "
                "only when they do not match",
                soft_wrap=True,
            )
