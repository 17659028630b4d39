"""Removing expired test resources: instances, key pairs and security groups that bakery
tagged `bakery:purpose=test-instance` and whose `bakery:expires-at` has passed.

Verification removes its own resources; the janitor is for what a killed process or a
lost network connection left behind. A dry run (the default) only lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.clients import aws_errors, ec2_client
from bakery.aws.images import regions_of
from bakery.aws.network import delete_security_group
from bakery.aws.progress import INSTANCE_WAIT, say, waiting
from bakery.config import BakeryConfig

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, TagTypeDef


@dataclass(frozen=True)
class JanitorRow:
    """One test resource and whether it has expired."""

    kind: str
    resource_id: str
    region: str
    expires_at: str
    expired: bool
    removed: bool = False


_TEST_RESOURCES: list[FilterTypeDef] = [
    {"Name": f"tag:{tags.PURPOSE}", "Values": [tags.TEST_INSTANCE]}
]


def _expired(resource_tags: list[TagTypeDef] | None, now: datetime) -> tuple[str, bool]:
    text = tags.as_dict(resource_tags).get(tags.EXPIRES_AT, "")
    moment = tags.parse_timestamp(text)
    # An unreadable expiry is treated as expired: a test resource must never live forever.
    return text, moment is None or moment <= now


def _find(ec2: EC2Client, region: str, now: datetime) -> list[JanitorRow]:
    rows: list[JanitorRow] = []
    with aws_errors(f"listing test resources in {region}"):
        states: FilterTypeDef = {
            "Name": "instance-state-name",
            # shutting-down too: a re-run after a cut-off terminate waits for it to go
            # before deleting the group it holds.
            "Values": ["pending", "running", "shutting-down", "stopping", "stopped"],
        }
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[*_TEST_RESOURCES, states]
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    text, gone = _expired(instance.get("Tags"), now)
                    rows.append(JanitorRow("instance", instance["InstanceId"], region, text, gone))
        for pair in ec2.describe_key_pairs(Filters=_TEST_RESOURCES).get("KeyPairs", []):
            text, gone = _expired(pair.get("Tags"), now)
            rows.append(JanitorRow("key-pair", pair.get("KeyName", ""), region, text, gone))
        for group in ec2.describe_security_groups(Filters=_TEST_RESOURCES).get(
            "SecurityGroups", []
        ):
            text, gone = _expired(group.get("Tags"), now)
            rows.append(JanitorRow("security-group", group["GroupId"], region, text, gone))
    return rows


def _remove(ec2: EC2Client, region: str, rows: list[JanitorRow]) -> list[JanitorRow]:
    expired = [row for row in rows if row.expired]
    instances = [row.resource_id for row in expired if row.kind == "instance"]
    with aws_errors(f"removing expired test resources in {region}"):
        if instances:
            ec2.terminate_instances(InstanceIds=instances)
            # Groups in use by an instance cannot be deleted until it is gone.
            with waiting(f"{len(instances)} expired test instance(s) to terminate"):
                ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=instances, WaiterConfig=INSTANCE_WAIT
                )
        for row in expired:
            if row.kind == "key-pair":
                ec2.delete_key_pair(KeyName=row.resource_id)
            elif row.kind == "security-group":
                delete_security_group(ec2, row.resource_id)
            say(f"removed {row.kind} {row.resource_id} in {region} (expired {row.expires_at})")
    return [
        JanitorRow(r.kind, r.resource_id, r.region, r.expires_at, r.expired, removed=r.expired)
        for r in rows
    ]


def janitor(
    configs: Sequence[BakeryConfig],
    apply: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> list[JanitorRow]:
    """List bakery's test resources in the configs' regions; with `apply`, remove the
    expired ones."""
    now = clock()
    rows: list[JanitorRow] = []
    for region in regions_of(configs):
        ec2 = ec2_client(region)
        found = _find(ec2, region, now)
        rows += _remove(ec2, region, found) if apply else found
    return rows
