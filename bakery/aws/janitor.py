"""Removing what killed runs left: bakery's test instances, and the key pairs and
security groups of test instances and of builds (`bakery:purpose` = `test-instance` or
`build`), once their `bakery:expires-at` has passed, in every region the configs use.

Verification and the build remove their own resources; the janitor is for what a
killed process or a lost network connection left behind. A key pair or group is removed
only when no live instance (any state but terminated) uses it, after the expired test
instances are gone: a build still running past its expiry keeps its access. Build
instances themselves are Packer's and the failed-build clean-up's, not the janitor's.
A dry run (the default) only lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.build_access import BUILD
from bakery.aws.clients import aws_errors, ec2_client
from bakery.aws.images import regions_of
from bakery.aws.network import KEY_PAIR, SECURITY_GROUP, delete_while_it_exists
from bakery.aws.progress import INSTANCE_WAIT, say, waiting
from bakery.config import BakeryConfig

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, TagTypeDef

INSTANCE = "instance"


@dataclass(frozen=True)
class JanitorRow:
    """One left-over resource, whether it has expired, and what still uses it."""

    kind: str
    resource_id: str
    region: str
    expires_at: str
    expired: bool
    removed: bool = False
    purpose: str = tags.TEST_INSTANCE
    used_by: tuple[str, ...] = ()


# Every state but terminated: a stopped instance still holds its group and key pair.
_ALIVE = ["pending", "running", "shutting-down", "stopping", "stopped"]
_TEST_INSTANCES: list[FilterTypeDef] = [
    {"Name": f"tag:{tags.PURPOSE}", "Values": [tags.TEST_INSTANCE]}
]
_ACCESS: list[FilterTypeDef] = [
    {"Name": f"tag:{tags.PURPOSE}", "Values": [tags.TEST_INSTANCE, BUILD]}
]


def _expired(resource_tags: list[TagTypeDef] | None, now: datetime) -> tuple[str, bool]:
    text = tags.as_dict(resource_tags).get(tags.EXPIRES_AT, "")
    moment = tags.parse_timestamp(text)
    # An unreadable expiry is treated as expired: a left-over must never live forever.
    return text, moment is None or moment <= now


def _purpose(resource_tags: list[TagTypeDef] | None) -> str:
    return tags.as_dict(resource_tags).get(tags.PURPOSE, "")


def _find(ec2: EC2Client, region: str, now: datetime) -> list[JanitorRow]:
    rows: list[JanitorRow] = []
    with aws_errors(f"listing left-over test and build resources in {region}"):
        users: dict[str, list[str]] = {}
        # shutting-down too: a re-run after a cut-off terminate waits for it to go
        # before deleting the group it holds.
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": _ALIVE}]
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    instance_id = instance["InstanceId"]
                    held = [g.get("GroupId", "") for g in instance.get("SecurityGroups", [])]
                    for used in [instance.get("KeyName", ""), *held]:
                        users.setdefault(used, []).append(instance_id)
                    if _purpose(instance.get("Tags")) == tags.TEST_INSTANCE:
                        text, gone = _expired(instance.get("Tags"), now)
                        rows.append(JanitorRow(INSTANCE, instance_id, region, text, gone))
        found = [
            (KEY_PAIR, pair.get("KeyName", ""), pair.get("Tags"))
            for pair in ec2.describe_key_pairs(Filters=_ACCESS).get("KeyPairs", [])
        ] + [
            (SECURITY_GROUP, group["GroupId"], group.get("Tags"))
            for group in ec2.describe_security_groups(Filters=_ACCESS).get("SecurityGroups", [])
        ]
    for kind, resource_id, resource_tags in found:
        text, gone = _expired(resource_tags, now)
        rows.append(
            JanitorRow(
                kind,
                resource_id,
                region,
                text,
                gone,
                purpose=_purpose(resource_tags),
                used_by=tuple(users.get(resource_id, [])),
            )
        )
    return rows


def _still_used(row: JanitorRow, terminated: set[str]) -> tuple[str, ...]:
    return tuple(i for i in row.used_by if i not in terminated)


def _remove(ec2: EC2Client, region: str, rows: list[JanitorRow]) -> list[JanitorRow]:
    instances = [r.resource_id for r in rows if r.kind == INSTANCE and r.expired]
    done: list[JanitorRow] = []
    with aws_errors(f"removing left-over test and build resources in {region}"):
        if instances:
            ec2.terminate_instances(InstanceIds=instances)
            # Groups in use by an instance cannot be deleted until it is gone.
            with waiting(f"{len(instances)} expired test instance(s) to terminate"):
                ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=instances, WaiterConfig=INSTANCE_WAIT
                )
        for row in rows:
            left = replace(row, used_by=_still_used(row, set(instances)))
            if not row.expired or left.used_by:
                done.append(left)
                continue
            if row.kind == KEY_PAIR:
                delete_while_it_exists(ec2, KEY_PAIR, row.resource_id)
            elif row.kind == SECURITY_GROUP:
                delete_while_it_exists(ec2, SECURITY_GROUP, row.resource_id)
            say(f"removed {row.kind} {row.resource_id} in {region} (expired {row.expires_at})")
            done.append(replace(left, removed=True))
    return done


def janitor(
    configs: Sequence[BakeryConfig],
    apply: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> list[JanitorRow]:
    """List bakery's left-over test and build resources in the configs' regions; with
    `apply`, remove the expired ones no live instance uses."""
    now = clock()
    rows: list[JanitorRow] = []
    for region in regions_of(configs):
        ec2 = ec2_client(region)
        found = _find(ec2, region, now)
        rows += _remove(ec2, region, found) if apply else found
    return rows
