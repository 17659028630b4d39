"""The janitor removes expired test resources and killed builds' key pairs and groups,
and only those."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import boto3

from bakery.aws import tags
from bakery.aws.build_access import open_build_access
from bakery.aws.janitor import janitor

from .conftest import DEBIAN_SOURCE, NOW, OTHER_REGION, REGION, clock, make_config


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


def leave_build_access(region: str, run_id: str, began: datetime) -> dict[str, str]:
    """What a build killed before its clean-up leaves: bakery's own key pair and group,
    made by build_access.py as a build that began at `began` makes them."""
    cfg = make_config("backend", f"aws.region={region}")
    client = boto3.client("ec2", region_name=region)
    access = open_build_access(client, cfg, run_id, "198.51.100.4", began)
    assert access.private_key_file is not None
    access.private_key_file.unlink()  # the runner's side dies with the killed process
    return {"key-pair": access.key_name, "security-group": access.security_group_id}


def build_access_left(region: str) -> set[tuple[str, str]]:
    client = boto3.client("ec2", region_name=region)
    build: Any = [{"Name": f"tag:{tags.PURPOSE}", "Values": ["build"]}]
    return {
        ("key-pair", k["KeyName"]) for k in client.describe_key_pairs(Filters=build)["KeyPairs"]
    } | {
        ("security-group", g["GroupId"])
        for g in client.describe_security_groups(Filters=build)["SecurityGroups"]
    }


def test_janitor_removes_a_killed_builds_key_pair_and_group_in_every_region(aws: None) -> None:
    killed = {
        region: leave_build_access(region, f"{n}" * 32, NOW - timedelta(hours=7))
        for n, region in enumerate((REGION, OTHER_REGION))
    }
    running = leave_build_access(REGION, "a" * 32, NOW - timedelta(hours=1))
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")

    dry = janitor([cfg], clock=clock())
    expired = {(r.region, r.kind, r.resource_id) for r in dry if r.expired}
    assert expired == {(region, *item) for region, left in killed.items() for item in left.items()}
    assert all(r.purpose == "build" for r in dry)
    assert build_access_left(REGION) == {*killed[REGION].items(), *running.items()}

    rows = janitor([cfg], apply=True, clock=clock())
    assert {(r.region, r.kind, r.resource_id) for r in rows if r.removed} == expired
    assert build_access_left(REGION) == set(running.items())
    assert build_access_left(OTHER_REGION) == set()


def test_janitor_keeps_an_expired_build_access_a_live_instance_still_uses(ec2: Any) -> None:
    """A build running past its expiry (or its instance, stopped) keeps its access: an
    instance in any state but terminated holds its key pair and group."""
    left = leave_build_access(REGION, "b" * 32, NOW - timedelta(hours=7))
    instance = ec2.run_instances(
        ImageId=DEBIAN_SOURCE,
        MinCount=1,
        MaxCount=1,
        KeyName=left["key-pair"],
        SecurityGroupIds=[left["security-group"]],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": tags.PURPOSE, "Value": "build"}]}
        ],
    )["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance])

    rows = janitor([make_config("backend")], apply=True, clock=clock())
    assert {(r.kind, r.used_by) for r in rows} == {
        ("key-pair", (instance,)),
        ("security-group", (instance,)),
    }
    assert not any(r.removed for r in rows)
    assert build_access_left(REGION) == set(left.items())
    assert state(ec2, instance) == "stopped"  # a build instance is not the janitor's

    ec2.terminate_instances(InstanceIds=[instance])
    rows = janitor([make_config("backend")], apply=True, clock=clock())
    assert {(r.kind, r.resource_id) for r in rows if r.removed} == set(left.items())
    assert build_access_left(REGION) == set()


def test_janitor_leaves_untagged_key_pairs_and_groups_alone(ec2: Any) -> None:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    ec2.create_security_group(GroupName="packer_x", Description="not ours", VpcId=vpc)
    ec2.create_key_pair(KeyName="packer_x")
    assert janitor([make_config("backend")], apply=True, clock=clock()) == []
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"packer_x"}
