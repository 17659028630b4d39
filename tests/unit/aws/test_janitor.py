"""The janitor removes expired test resources, and only those."""

from __future__ import annotations

from typing import Any

from bakery.aws import tags
from bakery.aws.janitor import janitor

from .conftest import DEBIAN_SOURCE, clock, make_config


def make_test_resources(ec2: Any, name: str, expires: str | None) -> dict[str, str]:
    values = [{"Key": tags.PURPOSE, "Value": tags.TEST_INSTANCE}]
    if expires is not None:
        values.append({"Key": tags.EXPIRES_AT, "Value": expires})
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(
        GroupName=name,
        Description="test",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": values}],
    )["GroupId"]
    ec2.create_key_pair(
        KeyName=name, TagSpecifications=[{"ResourceType": "key-pair", "Tags": values}]
    )
    instance = ec2.run_instances(
        ImageId=DEBIAN_SOURCE,
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[group],
        TagSpecifications=[{"ResourceType": "instance", "Tags": values}],
    )["Instances"][0]["InstanceId"]
    return {"security-group": group, "key-pair": name, "instance": instance}


def state(ec2: Any, instance: str) -> str:
    return str(
        ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"][
            "Name"
        ]
    )


def test_janitor_removes_expired_resources_only(ec2: Any) -> None:
    expired = make_test_resources(ec2, "bakery-verify-old", "2030-01-15T11:00:00Z")
    unreadable = make_test_resources(ec2, "bakery-verify-odd", None)
    live = make_test_resources(ec2, "bakery-verify-new", "2030-01-15T13:00:00Z")
    unrelated = ec2.run_instances(ImageId=DEBIAN_SOURCE, MinCount=1, MaxCount=1)["Instances"][0]

    dry = janitor([make_config("backend")], clock=clock())
    assert {(row.kind, row.resource_id) for row in dry if row.expired} == {
        *expired.items(),
        *unreadable.items(),
    }
    assert state(ec2, expired["instance"]) == "running"

    rows = janitor([make_config("backend")], apply=True, clock=clock())
    assert {(row.kind, row.resource_id) for row in rows if row.removed} == {
        *expired.items(),
        *unreadable.items(),
    }
    assert state(ec2, expired["instance"]) == "terminated"
    assert state(ec2, live["instance"]) == "running"
    assert state(ec2, unrelated["InstanceId"]) == "running"
    keys = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert keys == {"bakery-verify-new"}
    groups = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert groups == {"default", "bakery-verify-new"}
