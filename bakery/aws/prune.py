"""Removing old AMIs: per role, architecture and region, keep the N newest verified
images (x86_64 and arm64 each keep their own N, whatever arch the config names) and every
image an environment uses or used, or that an instance (in any state but terminated),
a launch template version or an Auto Scaling launch configuration names; deregister the
rest and delete their snapshots. "Region" is every region prune manages: each config's
home region and its copy regions.
Snapshots an interrupted delete left behind (`images.orphaned_snapshots`) go too.

A dry run (the default) changes nothing and returns the same rows, so the table shows
exactly what `--apply` would do and why. An interrupted `--apply` is run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.clients import autoscaling_client, aws_errors, ec2_client, ssm_client
from bakery.aws.images import (
    delete_image,
    delete_orphaned_snapshots,
    image_arch,
    newest_first,
    orphaned_snapshots,
    regions_of,
    role_images,
)
from bakery.aws.progress import say
from bakery.aws.release import parameter_values
from bakery.config import BakeryConfig
from bakery.errors import BadInput

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

# A rejected image is kept this long, so someone can launch it and look.
REJECTED_GRACE = timedelta(days=1)

KEEP = "keep"
DELETE = "delete"

# Every instance state but terminated: a stopped instance starts again from its AMI.
_ALIVE = ["pending", "running", "shutting-down", "stopping", "stopped"]


@dataclass(frozen=True)
class PruneRow:
    """One image and what prune does with it, and why."""

    ami_id: str
    role: str
    region: str
    created: str
    status: str
    decision: str
    reason: str
    deleted: bool = False
    arch: str = ""


def _decide(
    state: str,
    values: dict[str, str],
    created: datetime | None,
    in_use_by: list[str],
    verified_rank: int | None,
    keep: int,
    now: datetime,
) -> tuple[str, str]:
    promoted = tags.promoted_environments(values)
    if promoted:
        return KEEP, f"promoted to {', '.join(promoted)}"
    if in_use_by:
        return KEEP, "; ".join(in_use_by)
    if state == "pending":
        return KEEP, "still being made"
    if state == "failed":
        return DELETE, "AWS failed to create it (a failed build or copy)"
    status = values.get(tags.STATUS, "")
    if status == tags.VERIFIED and verified_rank is not None:
        if verified_rank < keep:
            return KEEP, f"one of the {keep} newest verified (of its arch)"
        return DELETE, f"older than the {keep} newest verified (of its arch)"
    if status == tags.REJECTED:
        if created is not None and now - created > REJECTED_GRACE:
            return DELETE, "rejected more than a day ago"
        return KEEP, "rejected less than a day ago (kept for inspection)"
    if status == tags.BUILT:
        return KEEP, "built, not yet verified"
    return KEEP, "no bakery status: not prune's to judge"


def images_in_use(ec2: EC2Client, region: str) -> dict[str, list[str]]:
    """{AMI id: what uses it} in the region: instances in any state but terminated,
    every version of every launch template (any version can be launched by number) and
    every Auto Scaling launch configuration (a group may still scale out from one)."""
    users: dict[str, list[str]] = {}
    with aws_errors(
        f"looking for the instances, launch templates and launch configurations in {region}"
    ):
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": _ALIVE}]
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    users.setdefault(instance.get("ImageId", ""), []).append(
                        f"instance {instance['InstanceId']} runs from it"
                    )
        for listed in ec2.get_paginator("describe_launch_templates").paginate():
            for template in listed.get("LaunchTemplates", []):
                for versions in ec2.get_paginator("describe_launch_template_versions").paginate(
                    LaunchTemplateId=template["LaunchTemplateId"]
                ):
                    for version in versions.get("LaunchTemplateVersions", []):
                        image = version.get("LaunchTemplateData", {}).get("ImageId", "")
                        users.setdefault(image, []).append(
                            f"launch template {version.get('LaunchTemplateName', '')} "
                            f"v{version.get('VersionNumber', '?')} launches it"
                        )
        autoscaling = autoscaling_client(region)
        for page in autoscaling.get_paginator("describe_launch_configurations").paginate():
            for configuration in page.get("LaunchConfigurations", []):
                users.setdefault(configuration.get("ImageId", ""), []).append(
                    f"launch configuration {configuration.get('LaunchConfigurationName', '')} "
                    "launches it"
                )
    return users


def images_being_copied(ec2: EC2Client, region: str) -> dict[str, list[str]]:
    """{source AMI id: why it is in use} for every copy still being made in the region:
    deleting the source would fail the copy of a release under way (a release copies
    before it promotes at home, so the source may be neither promoted nor pointed to)."""
    sources: dict[str, list[str]] = {}
    for image in role_images(ec2):
        source = tags.as_dict(image.get("Tags")).get(tags.COPIED_FROM)
        if image.get("State") == "pending" and source:
            sources.setdefault(source, []).append(
                f"copy {image['ImageId']} in {region} is being made from it"
            )
    return sources


def _sweep_orphans(ec2: EC2Client, region: str, apply: bool) -> list[PruneRow]:
    orphans = orphaned_snapshots(ec2)
    if apply:
        delete_orphaned_snapshots(ec2, orphans)
    return [
        PruneRow(
            ami_id=ami_id,
            role="",
            region=region,
            created="",
            status="deregistered",
            decision=DELETE,
            reason=f"its snapshot {snapshot} outlived it (an interrupted delete)",
            deleted=apply,
        )
        for snapshot, ami_id in sorted(orphans.items())
    ]


def prune(
    configs: Sequence[BakeryConfig],
    keep: int | None = None,
    apply: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> list[PruneRow]:
    """Decide (and with `apply`, carry out) the fate of every bakery image of the roles."""
    if keep is not None and keep < 1:
        raise BadInput(f"--keep {keep}: keep at least 1 verified image per role and region")
    now = clock()
    rows: list[PruneRow] = []
    clients: dict[str, EC2Client] = {}
    users: dict[str, dict[str, list[str]]] = {}
    copying: dict[str, list[str]] = {}  # AMI ids are unique across regions
    for region in regions_of(configs):
        clients[region] = ec2 = ec2_client(region)
        rows += _sweep_orphans(ec2, region, apply)
        users[region] = images_in_use(ec2, region)
        for source, why in images_being_copied(ec2, region).items():
            copying.setdefault(source, []).extend(why)
    for cfg in configs:
        wanted = keep if keep is not None else cfg.aws.retention
        for region in dict.fromkeys([cfg.aws.region, *cfg.aws.copy_regions]):
            ec2 = clients[region]
            pointers: dict[str, list[str]] = {}
            for name, value in parameter_values(ssm_client(region), cfg.aws.ssm_prefix).items():
                pointers.setdefault(value, []).append(f"{name} points to it")
            images = newest_first(role_images(ec2, cfg.role))
            # Ranked per architecture: a new arm64 image never pushes out an x86_64 one.
            verified: dict[str, list[str]] = {}
            for image in images:
                if tags.as_dict(image.get("Tags")).get(tags.STATUS) == tags.VERIFIED:
                    verified.setdefault(image_arch(image), []).append(image["ImageId"])
            for image in images:
                values = tags.as_dict(image.get("Tags"))
                ami_id = image["ImageId"]
                arch = image_arch(image)
                created = tags.parse_timestamp(image.get("CreationDate", ""))
                ranked = verified.get(arch, [])
                rank = ranked.index(ami_id) if ami_id in ranked else None
                decision, reason = _decide(
                    image.get("State", ""),
                    values,
                    created,
                    pointers.get(ami_id, [])
                    + users[region].get(ami_id, [])
                    + copying.get(ami_id, []),
                    rank,
                    wanted,
                    now,
                )
                deleted = False
                if decision == DELETE and apply:
                    delete_image(ec2, image)
                    deleted = True
                    say(f"deleted {ami_id} ({cfg.role}, {region}) and its snapshots: {reason}")
                rows.append(
                    PruneRow(
                        ami_id=ami_id,
                        role=cfg.role,
                        region=region,
                        created=image.get("CreationDate", ""),
                        status=values.get(tags.STATUS, ""),
                        decision=decision,
                        reason=reason,
                        deleted=deleted,
                        arch=arch,
                    )
                )
    return rows
