"""Copies to other regions and sharing; public sharing is refused."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from bakery.aws import tags
from bakery.aws.distribute import check_share_targets, copy_to_regions, kms_key_for, share_image
from bakery.aws.release import release
from bakery.errors import BadInput, OperationFailed

from .conftest import OTHER_REGION, clock, image_tags, make_config, make_image, snapshot_ids_of
from .failure_double import fail_calls_double

ACCOUNT_B = "210987654321"
SHARING = (
    f"aws.share_accounts=['{ACCOUNT_B}']",
    "aws.kms_key_id=alias/bakery-images",
)


def test_copy_reapplies_tags_to_copy_and_snapshots(ec2: Any) -> None:
    ami = make_image(extra_tags={tags.GIT_COMMIT: "abc123"})
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    copies = copy_to_regions(cfg, ami)
    other = boto3.client("ec2", region_name=OTHER_REGION)
    copy = copies[OTHER_REGION]
    values = image_tags(other, copy)
    assert values[tags.GIT_COMMIT] == "abc123"
    assert values[tags.STATUS] == "verified"
    assert values[tags.COPIED_FROM] == ami
    assert values[tags.COPIED_FROM_REGION] == "us-east-1"
    [snapshot] = snapshot_ids_of(other, copy)
    snapshot_tags = tags.as_dict(
        other.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["Tags"]
    )
    assert snapshot_tags[tags.COPIED_FROM] == ami
    # Copying again finds the copy instead of making another.
    assert copy_to_regions(cfg, ami) == copies
    assert len(other.describe_images(Owners=["self"])["Images"]) == 1


def test_only_verified_images_are_copied(ec2: Any) -> None:
    ami = make_image(status=tags.BUILT)
    with pytest.raises(BadInput, match="only verified AMIs are copied"):
        copy_to_regions(make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']"), ami)


def test_kms_key_for_each_region() -> None:
    cfg = make_config("backend", "aws.kms_key_id=alias/bakery")
    assert kms_key_for(cfg, OTHER_REGION) == "alias/bakery"
    mrk = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd"
    assert kms_key_for(
        make_config("backend", f"aws.kms_key_id={mrk}"), OTHER_REGION
    ) == mrk.replace("us-east-1", OTHER_REGION)
    single = "arn:aws:kms:us-east-1:123456789012:key/1234abcd"
    with pytest.raises(BadInput, match="multi-region key"):
        kms_key_for(make_config("backend", f"aws.kms_key_id={single}"), OTHER_REGION)


def test_share_grants_launch_and_volume_permissions(ec2: Any) -> None:
    ami = make_image()
    cfg = make_config("backend", *SHARING)
    assert share_image(cfg, ami) == [ami]
    launch = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    assert launch["LaunchPermissions"] == [{"UserId": ACCOUNT_B}]
    [snapshot] = snapshot_ids_of(ec2, ami)
    volume = ec2.describe_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission"
    )
    assert volume["CreateVolumePermissions"] == [{"UserId": ACCOUNT_B}]


@pytest.mark.parametrize("target", ["all", "ALL", "*"])
def test_share_refuses_public(aws: None, target: str) -> None:
    cfg = make_config("backend", *SHARING)
    with pytest.raises(BadInput, match="never makes an image public"):
        check_share_targets(cfg, [target], [])


def test_share_refuses_an_image_that_is_already_public(ec2: Any) -> None:
    ami = make_image()
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
    with pytest.raises(OperationFailed, match="is public"):
        share_image(make_config("backend", *SHARING), ami)


def test_sharing_needs_a_customer_managed_key(aws: None) -> None:
    cfg = make_config("backend", f"aws.share_accounts=['{ACCOUNT_B}']")
    with pytest.raises(BadInput, match="AWS-managed EBS key cannot be shared"):
        check_share_targets(cfg, [ACCOUNT_B], [])


def test_release_copies_shares_and_points_every_region(ec2: Any) -> None:
    ami = make_image()
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']", *SHARING)
    result = release(cfg, "production", ami)
    copy = result.regions[OTHER_REGION]
    other = boto3.client("ec2", region_name=OTHER_REGION)
    assert tags.promoted_key("production") in image_tags(other, copy)
    other_ssm = boto3.client("ssm", region_name=OTHER_REGION)
    assert other_ssm.get_parameter(Name=result.parameter)["Parameter"]["Value"] == copy
    launch = other.describe_image_attribute(ImageId=copy, Attribute="launchPermission")
    assert launch["LaunchPermissions"] == [{"UserId": ACCOUNT_B}]


def test_a_copy_does_not_inherit_the_sources_promotions(ec2: Any) -> None:
    """Promotions are per region: a copy tagged promoted-staging with no staging parameter
    pointing at it would be kept by prune for ever."""
    ami = make_image(
        extra_tags={tags.promoted_key("staging"): "x", tags.rolled_back_key("dev"): "y"}
    )
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    copy = copy_to_regions(cfg, ami)[OTHER_REGION]
    values = image_tags(boto3.client("ec2", region_name=OTHER_REGION), copy)
    assert tags.promoted_environments(values) == []
    assert tags.rolled_back_key("dev") not in values
    assert values[tags.STATUS] == tags.VERIFIED


ACCOUNT_C = "345678901234"
ORG_UNIT = "arn:aws:organizations::123456789012:ou/o-a1b2c3d4e5/ou-ab12-cd34ef56"


def _launchers(client: Any, ami: str) -> list[dict[str, str]]:
    found = client.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    return sorted(found["LaunchPermissions"], key=repr)


def _volume_users(client: Any, ami: str) -> list[list[dict[str, str]]]:
    return [
        client.describe_snapshot_attribute(SnapshotId=s, Attribute="createVolumePermission")[
            "CreateVolumePermissions"
        ]
        for s in snapshot_ids_of(client, ami)
    ]


def test_a_rerun_with_a_changed_account_list_shares_with_exactly_the_new_list(ec2: Any) -> None:
    """Adversarial: the share list changes between two runs of the same release. The
    account dropped from config loses launch and volume permission, in every region;
    the new one gets them; a third run changes nothing."""
    ami = make_image()
    copying = f"aws.copy_regions=['{OTHER_REGION}']"
    before = make_config("backend", copying, *SHARING)
    first = release(before, "production", ami, clock=clock())
    after = make_config(
        "backend",
        copying,
        f"aws.share_accounts=['{ACCOUNT_C}']",
        f"aws.share_org_arns=['{ORG_UNIT}']",
        "aws.kms_key_id=alias/bakery-images",
    )
    second = release(after, "production", ami, clock=clock())
    assert second.regions == first.regions
    other = boto3.client("ec2", region_name=OTHER_REGION)
    for client, image in [(ec2, ami), (other, second.regions[OTHER_REGION])]:
        assert _launchers(client, image) == [
            {"OrganizationalUnitArn": ORG_UNIT},
            {"UserId": ACCOUNT_C},
        ]
        assert _volume_users(client, image) == [[{"UserId": ACCOUNT_C}]]
    with fail_calls_double() as double:
        release(after, "production", ami, clock=clock())
    # (moto reports no ImdsSupport, so the copy's IMDSv2 attribute is set again.)
    sharing = [
        (str(call), call.region)
        for call in double.calls
        if call.operation == "ModifySnapshotAttribute"
        or (
            call.operation == "ModifyImageAttribute"
            and any(str(key).startswith("LaunchPermission") for key in call.request["body"])
        )
    ]
    assert sharing == []


def test_sharing_with_nobody_any_more_revokes_every_share(ec2: Any) -> None:
    ami = make_image()
    share_image(make_config("backend", *SHARING), ami)
    assert share_image(make_config("backend", "aws.kms_key_id=alias/bakery-images"), ami) == []
    assert _launchers(ec2, ami) == []
    assert _volume_users(ec2, ami) == [[]]
