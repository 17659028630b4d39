"""Prune: keep the newest verified and everything promoted or pointed to; dry run first."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from bakery.aws import tags
from bakery.aws.distribute import copy_to_regions
from bakery.aws.prune import prune
from bakery.aws.release import release
from bakery.errors import BadInput, OperationFailed

from .conftest import (
    OTHER_REGION,
    REGION,
    clock,
    days_ago,
    existing_snapshots,
    image_of,
    make_config,
    make_image,
    snapshot_ids_of,
)
from .failure_double import fail_calls_double


@pytest.fixture
def ten_images(ec2: Any, ssm: Any) -> dict[str, Any]:
    """Ten backend images over ten days; two promoted to production, one to staging."""
    amis = [make_image(created=days_ago(10 - n)) for n in range(10)]  # amis[9] is the newest
    cfg = make_config("backend")
    release(cfg, "production", amis[1])
    release(cfg, "production", amis[4])
    release(cfg, "staging", amis[2])
    return {"amis": amis, "cfg": cfg}


def decisions(rows: list[Any]) -> dict[str, str]:
    return {row.ami_id: row.decision for row in rows}


def test_prune_keeps_newest_verified_and_every_promoted_image(
    ec2: Any, ten_images: dict[str, Any]
) -> None:
    amis = ten_images["amis"]
    snapshots = {ami: snapshot_ids_of(ec2, ami) for ami in amis}
    rows = prune([ten_images["cfg"]], keep=2, apply=True, clock=clock())
    kept = {amis[9], amis[8], amis[1], amis[2], amis[4]}
    assert {ami for ami, d in decisions(rows).items() if d == "keep"} == kept
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[1]] == "promoted to production"
    assert reasons[amis[2]] == "promoted to staging"
    assert reasons[amis[9]] == "one of the 2 newest verified (of its arch)"
    left = existing_snapshots(ec2)
    for ami in amis:
        if ami in kept:
            assert image_of(ec2, ami) is not None
            assert set(snapshots[ami]) <= left
        else:
            assert image_of(ec2, ami) is None
            assert not set(snapshots[ami]) & left, f"snapshots of pruned {ami} remain"


def test_dry_run_changes_nothing(ec2: Any, ten_images: dict[str, Any]) -> None:
    before = (
        existing_snapshots(ec2),
        {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
    )
    rows = prune([ten_images["cfg"]], keep=1, clock=clock())
    assert list(decisions(rows).values()).count("delete") == 6
    assert not any(row.deleted for row in rows)
    after = (
        existing_snapshots(ec2),
        {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]},
    )
    assert after == before
    assert {"ami_id", "role", "region", "created", "status", "decision", "reason"} <= set(
        rows[0].__dataclass_fields__
    )


def test_image_a_parameter_points_to_is_kept_even_untagged(ec2: Any, ssm: Any) -> None:
    amis = [make_image(created=days_ago(5 - n)) for n in range(3)]
    ssm.put_parameter(
        Name="/bakery/images/legacy/backend/ami-id",
        Value=amis[0],
        Type="String",
        DataType="aws:ec2:image",
    )
    rows = prune([make_config("backend")], keep=1, clock=clock())
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[0]] == "/bakery/images/legacy/backend/ami-id points to it"
    assert decisions(rows) == {amis[0]: "keep", amis[1]: "delete", amis[2]: "keep"}


def test_rejected_images_go_after_a_day_and_built_ones_stay(ec2: Any, ssm: Any) -> None:
    old_rejected = make_image(status=tags.REJECTED, created=days_ago(2))
    new_rejected = make_image(status=tags.REJECTED, created=days_ago(0.5))
    built = make_image(status=tags.BUILT, created=days_ago(5))
    other_role = make_image("frontend", status=tags.REJECTED, created=days_ago(5))
    rows = prune([make_config("backend")], keep=3, clock=clock())
    assert decisions(rows) == {old_rejected: "delete", new_rejected: "keep", built: "keep"}
    assert other_role not in decisions(rows)


def test_keep_below_one_is_bad_input(aws: None) -> None:
    with pytest.raises(BadInput, match="--keep 0"):
        prune([make_config("backend")], keep=0)


def test_keep_defaults_to_configured_retention(ec2: Any, ssm: Any) -> None:
    amis = [make_image(created=days_ago(9 - n)) for n in range(5)]
    rows = prune([make_config("backend", "aws.retention=4")], clock=clock())
    assert [ami for ami, d in decisions(rows).items() if d == "delete"] == [amis[0]]


def test_failed_images_go(ec2: Any, ssm: Any) -> None:
    from moto.ec2.models import ec2_backends

    from .conftest import ACCOUNT, REGION

    failed = make_image(status=None, created=days_ago(0.1))
    ec2_backends[ACCOUNT][REGION].amis[failed].state = "failed"
    rows = prune([make_config("backend")], keep=1, clock=clock())
    assert [(row.ami_id, row.decision) for row in rows] == [(failed, "delete")]


@pytest.mark.parametrize("stop", [False, True], ids=["running", "stopped"])
@pytest.mark.parametrize("region", [REGION, OTHER_REGION])
def test_prune_keeps_an_image_an_instance_runs_from_in_every_region(
    aws: None, region: str, stop: bool
) -> None:
    client = boto3.client("ec2", region_name=region)
    amis = [make_image(region=region, created=days_ago(5 - n)) for n in range(3)]
    instance = client.run_instances(ImageId=amis[0], MinCount=1, MaxCount=1)["Instances"][0]
    if stop:
        client.stop_instances(InstanceIds=[instance["InstanceId"]])
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    rows = prune([cfg], keep=1, apply=True, clock=clock())
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[0]] == f"instance {instance['InstanceId']} runs from it"
    assert image_of(client, amis[0]) is not None
    assert image_of(client, amis[1]) is None  # not in use, not among the newest: gone


@pytest.mark.parametrize("region", [REGION, OTHER_REGION])
def test_prune_keeps_an_image_any_launch_template_version_names(aws: None, region: str) -> None:
    client = boto3.client("ec2", region_name=region)
    amis = [make_image(region=region, created=days_ago(5 - n)) for n in range(3)]
    client.create_launch_template(
        LaunchTemplateName="old-web", LaunchTemplateData={"ImageId": amis[0]}
    )
    # A newer version names another image; version 1 can still be launched by number.
    client.create_launch_template_version(
        LaunchTemplateName="old-web", LaunchTemplateData={"ImageId": amis[2]}
    )
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    rows = prune([cfg], keep=1, apply=True, clock=clock())
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[0]] == "launch template old-web v1 launches it"
    assert image_of(client, amis[0]) is not None
    assert image_of(client, amis[1]) is None


@pytest.mark.parametrize("region", [REGION, OTHER_REGION])
def test_prune_keeps_an_image_an_auto_scaling_launch_configuration_names(
    aws: None, region: str
) -> None:
    """A launch configuration cannot be changed, only replaced: while it exists, its
    group can scale out from its image."""
    client = boto3.client("ec2", region_name=region)
    amis = [make_image(region=region, created=days_ago(5 - n)) for n in range(3)]
    boto3.client("autoscaling", region_name=region).create_launch_configuration(
        LaunchConfigurationName="web-2029", ImageId=amis[0], InstanceType="t3.micro"
    )
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    dry = prune([cfg], keep=1, clock=clock())
    assert {row.ami_id: row.decision for row in dry if row.region == region} == {
        amis[0]: "keep",
        amis[1]: "delete",
        amis[2]: "keep",
    }
    rows = prune([cfg], keep=1, apply=True, clock=clock())
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[0]] == "launch configuration web-2029 launches it"
    assert image_of(client, amis[0]) is not None
    assert image_of(client, amis[1]) is None


def test_prune_keeps_an_image_in_use_in_a_copy_region_it_is_not_in_use_at_home(
    aws: None,
) -> None:
    """In use is a fact of one region: the copy kept, the home image of the same name
    (used by nothing) pruned like any other."""
    home = boto3.client("ec2", region_name=REGION)
    there = boto3.client("ec2", region_name=OTHER_REGION)
    home_amis = [make_image(created=days_ago(5 - n), name=f"b-{n}") for n in range(3)]
    copies = [
        make_image(region=OTHER_REGION, created=days_ago(5 - n), name=f"b-{n}") for n in range(3)
    ]
    there.run_instances(ImageId=copies[0], MinCount=1, MaxCount=1)
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    prune([cfg], keep=1, apply=True, clock=clock())
    assert image_of(there, copies[0]) is not None
    assert image_of(home, home_amis[0]) is None


def test_a_snapshot_left_by_an_interrupted_delete_goes_on_the_next_prune(ec2: Any) -> None:
    amis = [make_image(created=days_ago(5 - n)) for n in range(2)]
    snapshots = snapshot_ids_of(ec2, amis[0])
    cfg = make_config("backend")
    with (
        fail_calls_double(fail_at={"DeleteSnapshot"}),
        pytest.raises(OperationFailed, match="deleting"),
    ):
        prune([cfg], keep=1, apply=True, clock=clock())
    assert image_of(ec2, amis[0]) is None and set(snapshots) <= existing_snapshots(ec2)
    dry = prune([cfg], keep=1, clock=clock())
    assert [(row.ami_id, row.decision) for row in dry if row.status == "deregistered"] == [
        (amis[0], "delete")
    ]
    prune([cfg], keep=1, apply=True, clock=clock())
    assert not set(snapshots) & existing_snapshots(ec2)
    assert image_of(ec2, amis[1]) is not None


def test_prune_keeps_the_source_of_a_copy_still_being_made_and_the_pending_copy(
    aws: None,
) -> None:
    """Adversarial: prune runs while a release copies an older verified image (releases
    copy before they promote at home, so the source is neither promoted nor pointed to
    yet). Deleting it would fail the copy: it is in use until the copy is done."""
    from moto.ec2.models import ec2_backends

    from .conftest import ACCOUNT

    home = boto3.client("ec2", region_name=REGION)
    amis = [make_image(created=days_ago(5 - n)) for n in range(3)]
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    copy = copy_to_regions(cfg, amis[0])[OTHER_REGION]
    ec2_backends[ACCOUNT][OTHER_REGION].amis[copy].state = "pending"

    rows = prune([cfg], keep=1, apply=True, clock=clock())
    reasons = {row.ami_id: row.reason for row in rows}
    assert reasons[amis[0]] == f"copy {copy} in {OTHER_REGION} is being made from it"
    assert reasons[copy] == "still being made"
    assert image_of(home, amis[0]) is not None
    assert image_of(boto3.client("ec2", region_name=OTHER_REGION), copy) is not None
    assert image_of(home, amis[1]) is None  # the rest is pruned as before
