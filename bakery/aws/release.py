"""Promoting a verified AMI to an environment, and rolling an environment back.

An environment's AMI is the SSM parameter `<aws.ssm_prefix>/<environment>/<role>/ami-id`
(DataType `aws:ec2:image`, so launch templates can resolve it). Every promotion is a
new parameter version: the history is the record of what ran where and when. The
labels `current` and `previous` move with each change (moving labels never pin old
versions, so SSM's 100-version limit is never blocked). The AMI is tagged
`bakery:promoted-<environment>`, one tag per environment, so `prune` keeps it.
Copies in `aws.copy_regions` get the same parameter and tags in their regions.
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
from bakery.aws.distribute import copy_to_regions, share_image
from bakery.aws.images import describe_image, newest_first, role_image, role_images, status
from bakery.aws.progress import say
from bakery.config import BakeryConfig
from bakery.errors import BadInput

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
    """The SSM parameter holding the AMI id of the role in the environment."""
    return f"{cfg.aws.ssm_prefix}/{environment}/{cfg.role}/ami-id"


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
            and values.get(tags.STATUS) == tags.VERIFIED
            and tags.rolled_back_key(environment) not in values
        ):
            return image
    raise BadInput(
        f"nothing to roll back to: the history of {parameter_name(cfg, environment)} has no "
        f"earlier verified {cfg.role} AMI that still exists"
    )


def _image_to_promote(ec2: EC2Client, cfg: BakeryConfig, ami_id: str | None) -> ImageTypeDef:
    if ami_id is not None:
        image = role_image(ec2, ami_id, cfg.role, cfg.aws.region)
    else:
        verified = [i for i in role_images(ec2, cfg.role) if status(i) == tags.VERIFIED]
        if not verified:
            raise BadInput(
                f"no verified {cfg.role} AMI in {cfg.aws.region}: run "
                f"`invoke verify --target aws --role {cfg.role}` first"
            )
        image = newest_first(verified)[0]
    found = status(image)
    if found != tags.VERIFIED:
        raise BadInput(
            f"{image['ImageId']} is {found or 'not tagged with a status'}: only verified AMIs "
            f"are promoted (run `invoke verify --target aws --role {cfg.role}`)"
        )
    return image


def _point(ssm: SSMClient, name: str, ami_id: str, description: str) -> int:
    """Write a new version of the parameter and move the labels; its version number."""
    with aws_errors(f"writing {name}"):
        version = ssm.put_parameter(
            Name=name,
            Value=ami_id,
            Type="String",
            DataType="aws:ec2:image",
            Overwrite=True,
            Description=description[:1024],
        )["Version"]
        ssm.label_parameter_version(Name=name, ParameterVersion=version, Labels=[CURRENT])
        # The oldest versions fall out of SSM's 100-version window.
        if version > 1:
            with contextlib.suppress(ssm.exceptions.ParameterVersionNotFound):
                ssm.label_parameter_version(
                    Name=name, ParameterVersion=version - 1, Labels=[PREVIOUS]
                )
    return version


def _copy_of(ec2: EC2Client, ami_id: str) -> str | None:
    with aws_errors(f"looking for the copy of {ami_id}"):
        found = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{tags.COPIED_FROM}", "Values": [ami_id]}]
        )["Images"]
    return found[0]["ImageId"] if found else None


def release(
    cfg: BakeryConfig,
    environment: str,
    ami_id: str | None = None,
    rollback: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> ReleaseResult:
    """Point the environment at a verified AMI of the role (default: the newest), or with
    `rollback` at the previous verified one from the parameter's history."""
    check_environment(environment)
    if rollback and ami_id:
        raise BadInput("--rollback picks the previous AMI from the history: drop --ami-id")
    region = cfg.aws.region
    ec2, ssm = ec2_client(region), ssm_client(region)
    name = parameter_name(cfg, environment)
    history = parameter_history(ssm, name)
    current = history[-1].value if history else None
    if rollback:
        image = _rollback_target(ec2, cfg, environment, history)
    else:
        image = _image_to_promote(ec2, cfg, ami_id)
    target = image["ImageId"]
    if target == current:
        say(f"{environment} already runs {cfg.role} {target}")
        return ReleaseResult(cfg.role, environment, target, current, name, None, {}, rollback)

    copies = copy_to_regions(cfg, target)
    share_image(cfg, target, copies)
    now = tags.timestamp(clock())
    action = "rollback" if rollback else "release"
    description = f"bakery {action} of {cfg.role} to {target} at {now} (was {current or 'unset'})"
    version: int | None = None
    for where, image_id in {region: target, **copies}.items():
        where_ec2 = ec2 if where == region else ec2_client(where)
        where_ssm = ssm if where == region else ssm_client(where)
        with aws_errors(f"tagging {image_id} promoted to {environment}"):
            where_ec2.create_tags(
                Resources=[image_id], Tags=tags.as_list({tags.promoted_key(environment): now})
            )
            where_ec2.delete_tags(
                Resources=[image_id], Tags=[{"Key": tags.rolled_back_key(environment)}]
            )
            if rollback and current:
                bad = current if where == region else _copy_of(where_ec2, current)
                if bad:
                    where_ec2.create_tags(
                        Resources=[bad],
                        Tags=tags.as_list({tags.rolled_back_key(environment): now}),
                    )
        written = _point(where_ssm, name, image_id, description)
        version = written if where == region else version
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
