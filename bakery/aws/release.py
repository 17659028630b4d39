"""Promoting a verified AMI to an environment, and rolling an environment back.

An environment's AMI is the SSM parameter `<aws.ssm_prefix>/<environment>/<role>/ami-id`
(DataType `aws:ec2:image`, so launch templates can resolve it); an arm64 image's is
`<aws.ssm_prefix>/<environment>/<role>/arm64/ami-id`, beside it, so both architectures of
a role are released, rolled back and launched each on its own. Every promotion is a
new parameter version: the history is the record of what ran where and when. The
labels `current` and `previous` move with each change (moving labels never pin old
versions, so SSM's 100-version limit is never blocked). The AMI is tagged
`bakery:promoted-<environment>`, one tag per environment, so `prune` keeps it.
Copies in `aws.copy_regions` get the same parameter and tags in their regions.

A release may be cut off at any step and run again: everything is checked before the
first write; the copy regions are done before the home region; in each region the
parameter is written before the promoted tag, and the `current` label on the new
version comes last, so a newest version without it is an unfinished release that the
next run finishes (rather than, for a rollback, rolling back a second time). A run
that finds everything done writes nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.clients import aws_errors, ec2_client, ssm_client
from bakery.aws.distribute import (
    check_not_public,
    check_share_targets,
    copy_regions,
    copy_to_regions,
    kms_key_for,
    share_image,
)
from bakery.aws.images import (
    describe_image,
    image_arch,
    newest_first,
    role_image,
    role_images,
    status,
)
from bakery.aws.progress import say
from bakery.config import BakeryConfig
from bakery.errors import BadInput, OperationFailed

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import ImageTypeDef
    from mypy_boto3_ssm import SSMClient

_ENVIRONMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
CURRENT = "current"
PREVIOUS = "previous"


@dataclass(frozen=True)
class ParameterVersion:
    version: int
    value: str
    labels: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class ReleaseResult:
    """What a release or rollback changed."""

    role: str
    environment: str
    ami_id: str
    previous_ami_id: str | None
    parameter: str
    version: int | None  # None: the environment already ran this AMI
    regions: dict[str, str]
    rollback: bool


def check_environment(environment: str) -> str:
    if not _ENVIRONMENT.match(environment):
        raise BadInput(
            f"--environment {environment!r}: use 1-32 lower-case letters, digits and '-', "
            "e.g. production, staging, dev"
        )
    return environment


def parameter_name(cfg: BakeryConfig, environment: str) -> str:
    """The SSM parameter holding the AMI id of the role (of its arch) in the environment.
    x86_64 keeps the name it had before arm64 existed, so the launch templates and other
    readers that name it keep resolving; arm64 has one of its own beside it."""
    arch = "" if cfg.arch == "x86_64" else f"/{cfg.arch}"
    return f"{cfg.aws.ssm_prefix}/{environment}/{cfg.role}{arch}/ami-id"


def parameter_history(ssm: SSMClient, name: str) -> list[ParameterVersion]:
    """Every version of the parameter, oldest first; empty when it does not exist."""
    history: list[ParameterVersion] = []
    with aws_errors(f"reading the history of {name}"):
        try:
            for page in ssm.get_paginator("get_parameter_history").paginate(Name=name):
                history += [
                    ParameterVersion(
                        int(item.get("Version", 0)),
                        item.get("Value", ""),
                        tuple(item.get("Labels", [])),
                        item.get("Description", ""),
                    )
                    for item in page.get("Parameters", [])
                ]
        except ssm.exceptions.ParameterNotFound:
            return []
    return sorted(history, key=lambda entry: entry.version)


def _rollback_target(
    ec2: EC2Client, cfg: BakeryConfig, environment: str, history: list[ParameterVersion]
) -> ImageTypeDef:
    """The newest earlier value of the parameter that is still a verified image of the
    role and was not itself rolled back from."""
    current = history[-1].value if history else None
    for entry in reversed(history):
        if entry.value == current:
            continue
        with aws_errors(f"looking up {entry.value}"):
            image = describe_image(ec2, entry.value)
        if image is None:
            continue
        values = tags.as_dict(image.get("Tags"))
        if (
            values.get(tags.ROLE) == cfg.role
            and image_arch(image) == cfg.arch
            and values.get(tags.STATUS) == tags.VERIFIED
            and tags.rolled_back_key(environment) not in values
        ):
            return image
    raise BadInput(
        f"nothing to roll back to: the history of {parameter_name(cfg, environment)} has no "
        f"earlier verified {cfg.arch} {cfg.role} AMI that still exists"
    )


def _image_to_promote(ec2: EC2Client, cfg: BakeryConfig, ami_id: str | None) -> ImageTypeDef:
    if ami_id is not None:
        image = role_image(ec2, ami_id, cfg.role, cfg.aws.region, cfg.arch)
    else:
        verified = [i for i in role_images(ec2, cfg.role, cfg.arch) if status(i) == tags.VERIFIED]
        if not verified:
            arch = "" if cfg.arch == "x86_64" else f" --set arch={cfg.arch}"
            raise BadInput(
                f"no verified {cfg.arch} {cfg.role} AMI in {cfg.aws.region}: run "
                f"`invoke verify --target aws --role {cfg.role}{arch}` first"
            )
        image = newest_first(verified)[0]
    found = status(image)
    if found != tags.VERIFIED:
        raise BadInput(
            f"{image['ImageId']} is {found or 'not tagged with a status'}: only verified AMIs "
            f"are promoted (run `invoke verify --target aws --role {cfg.role}`)"
        )
    return image


def _description(action: str, role: str, target: str, now: str, was: str | None) -> str:
    return f"bakery {action} of {role} to {target} at {now} (was {was or 'unset'})"[:1024]


def unfinished_version(history: list[ParameterVersion]) -> ParameterVersion | None:
    """The newest version when a bakery release wrote it but was cut off before labelling
    it `current`. A version written by hand is not one: its description (SSM keeps the
    previous one when none is given) does not name its value."""
    if not history or CURRENT in history[-1].labels:
        return None
    latest = history[-1]
    mine = latest.description.startswith("bakery ") and f" to {latest.value} " in (
        latest.description
    )
    return latest if mine else None


def _label(ssm: SSMClient, name: str, version: int, label: str) -> None:
    # The oldest versions fall out of SSM's 100-version window.
    with contextlib.suppress(ssm.exceptions.ParameterVersionNotFound):
        ssm.label_parameter_version(Name=name, ParameterVersion=version, Labels=[label])


@dataclass(frozen=True)
class _Step:
    """One region of a release: the image to point at, and the one rolled back from."""

    region: str
    ec2: EC2Client
    ssm: SSMClient
    image: ImageTypeDef
    rolled_back_from: str | None


def _promote_in_region(
    step: _Step,
    name: str,
    environment: str,
    description: str,
    now: str,
    before_done: Callable[[], None] = lambda: None,
) -> int | None:
    """Point the region's parameter at the step's image; the version this run wrote,
    or None when it already pointed there. Each write is skipped when already done;
    `before_done` runs just before the done marker."""
    ec2, ssm, image_id = step.ec2, step.ssm, step.image["ImageId"]
    present = tags.as_dict(step.image.get("Tags"))
    with aws_errors(f"promoting {image_id} to {environment} in {step.region}"):
        if step.rolled_back_from:
            # Before the write: a re-run must not pick the rolled-back image again.
            ec2.create_tags(
                Resources=[step.rolled_back_from],
                Tags=tags.as_list({tags.rolled_back_key(environment): now}),
            )
        if tags.rolled_back_key(environment) in present:
            ec2.delete_tags(Resources=[image_id], Tags=[{"Key": tags.rolled_back_key(environment)}])
    history = parameter_history(ssm, name)
    latest = history[-1] if history else None
    written: int | None = None
    with aws_errors(f"writing {name} in {step.region}"):
        if latest is not None and latest.value == image_id:
            version, labels = latest.version, latest.labels
        else:
            version = ssm.put_parameter(
                Name=name,
                Value=image_id,
                Type="String",
                DataType="aws:ec2:image",
                Overwrite=True,
                Description=description,
            )["Version"]
            written, labels = version, ()
        earlier = {entry.version: entry.labels for entry in history}
        if version > 1 and PREVIOUS not in earlier.get(version - 1, (PREVIOUS,)):
            _label(ssm, name, version - 1, PREVIOUS)
    with aws_errors(f"tagging {image_id} promoted to {environment}"):
        if present.get(tags.promoted_key(environment)) != now:
            ec2.create_tags(
                Resources=[image_id], Tags=tags.as_list({tags.promoted_key(environment): now})
            )
    before_done()
    if CURRENT not in labels:  # the "done" marker: last
        _mark_done(ssm, name, version, step.region)
    return written


def _mark_done(ssm: SSMClient, name: str, version: int, region: str) -> None:
    """Label the version `current`. When the reply is lost, the label is read back:
    a rollback re-run after a done marker that did land would roll back a second time."""
    try:
        with aws_errors(f"labelling {name} v{version} {CURRENT} in {region}"):
            _label(ssm, name, version, CURRENT)
    except OperationFailed:
        landed = [h for h in parameter_history(ssm, name) if h.version == version]
        if not landed or CURRENT not in landed[0].labels:
            raise


def _copy_of(ec2: EC2Client, ami_id: str) -> str | None:
    with aws_errors(f"looking for the copy of {ami_id}"):
        found = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{tags.COPIED_FROM}", "Values": [ami_id]}]
        )["Images"]
    return found[0]["ImageId"] if found else None


def _existing(ec2: EC2Client, ami_id: str | None) -> str | None:
    """The image id when it exists (a parameter set by hand may name a deleted one)."""
    if not ami_id:
        return None
    with aws_errors(f"looking up {ami_id}"):
        image = describe_image(ec2, ami_id)
    return ami_id if image is not None and image.get("State") != "deregistered" else None


def release(
    cfg: BakeryConfig,
    environment: str,
    ami_id: str | None = None,
    rollback: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> ReleaseResult:
    """Point the environment at a verified AMI of the role (default: the newest), or with
    `rollback` at the previous verified one from the parameter's history. Run again
    after a failure, it finishes what the failed run started."""
    check_environment(environment)
    if rollback and ami_id:
        raise BadInput("--rollback picks the previous AMI from the history: drop --ami-id")
    # Everything that can be wrong with the settings is found before the first write.
    check_share_targets(cfg, cfg.aws.share_accounts, cfg.aws.share_org_arns)
    for where in copy_regions(cfg):
        kms_key_for(cfg, where)
    region = cfg.aws.region
    ec2, ssm = ec2_client(region), ssm_client(region)
    name = parameter_name(cfg, environment)
    history = parameter_history(ssm, name)
    unfinished = unfinished_version(history)
    resume_rollback = (
        rollback and unfinished is not None and unfinished.description.startswith("bakery rollback")
    )
    if resume_rollback and unfinished is not None:
        image = role_image(ec2, unfinished.value, cfg.role, region, cfg.arch)
    elif rollback:  # back from what launches now, finished or not
        image = _rollback_target(ec2, cfg, environment, history)
    else:
        image = _image_to_promote(ec2, cfg, ami_id)
    target = image["ImageId"]
    resuming = unfinished is not None and unfinished.value == target
    settled = history[:-1] if resuming else history
    current = settled[-1].value if settled else None
    check_not_public(ec2, image, region)

    copies = copy_to_regions(cfg, target)
    share_image(cfg, target, copies)
    now = tags.timestamp(clock())
    action = "rollback" if rollback else "release"
    description = _description(action, cfg.role, target, now, current)
    home_bad = _existing(ec2, current) if rollback and current != target else None
    steps: list[_Step] = []
    for where, image_id in copies.items():
        where_ec2 = ec2_client(where)
        where_image = role_image(where_ec2, image_id, cfg.role, where)
        check_not_public(where_ec2, where_image, where)
        bad = _copy_of(where_ec2, home_bad) if home_bad else None
        steps.append(_Step(where, where_ec2, ssm_client(where), where_image, bad))
    home = _Step(region, ec2, ssm, image, home_bad)
    for step in steps:
        _promote_in_region(step, name, environment, description, now)

    def still_private() -> None:
        # The check after the release, before its done marker: a rollback re-run after
        # a failure past the marker would roll back a second time.
        for step in [*steps, home]:
            check_not_public(step.ec2, step.image, step.region)

    # Home last, so its done marker means done everywhere.
    version = _promote_in_region(home, name, environment, description, now, still_private)
    if resuming and unfinished is not None:
        version = unfinished.version
    if version is None:
        say(f"{environment} already runs {cfg.role} {target}")
    else:
        was = current or "(none)"
        say(f"[green]{action}[/] {environment}: {cfg.role} {was} → {target} ({name} v{version})")
    return ReleaseResult(
        cfg.role, environment, target, current, name, version, {region: target, **copies}, rollback
    )


def parameter_values(ssm: SSMClient, prefix: str) -> dict[str, str]:
    """{parameter name: AMI id} of every parameter under the prefix (for prune)."""
    values: dict[str, str] = {}
    with aws_errors(f"reading the parameters under {prefix}"):
        for page in ssm.get_paginator("get_parameters_by_path").paginate(
            Path=prefix, Recursive=True
        ):
            for item in page.get("Parameters", []):
                values[item.get("Name", "")] = item.get("Value", "")
    return values
