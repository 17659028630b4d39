"""Promotion through SSM parameters, its history, and rollback.

moto 5.2.5 accepts DataType 'aws:ec2:image' (it does not check that the AMI exists,
which AWS does asynchronously) and keeps versions and labels, so no Stubber is needed.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from bakery.aws import tags
from bakery.aws.release import parameter_history, release
from bakery.errors import BadInput, OperationFailed

from .conftest import (
    OTHER_REGION,
    clock,
    days_ago,
    image_tags,
    make_config,
    make_image,
    snapshot_ids_of,
)
from .failure_double import fail_calls_double

PARAMETER = "/bakery/images/production/backend/ami-id"


def test_release_writes_an_image_parameter_and_tags_the_image(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    result = release(make_config("backend"), "production", clock=clock())
    assert (result.ami_id, result.version, result.parameter) == (ami, 1, PARAMETER)
    parameter = ssm.get_parameter(Name=PARAMETER)["Parameter"]
    assert parameter["Value"] == ami
    assert parameter["DataType"] == "aws:ec2:image"
    assert image_tags(ec2, ami)[tags.promoted_key("production")] == "2030-01-15T12:00:00Z"


def test_release_defaults_to_the_newest_verified_image(ec2: Any, ssm: Any) -> None:
    make_image(created=days_ago(3))
    newest = make_image(created=days_ago(1))
    make_image(status=tags.BUILT, created=days_ago(0.5))
    assert release(make_config("backend"), "production").ami_id == newest


@pytest.mark.parametrize("status", [tags.BUILT, tags.REJECTED, None])
def test_only_verified_images_are_promoted(ec2: Any, ssm: Any, status: str | None) -> None:
    ami = make_image(status=status)
    with pytest.raises(BadInput, match="only verified AMIs are promoted"):
        release(make_config("backend"), "production", ami)
    assert parameter_history(ssm, PARAMETER) == []


def test_promoting_another_roles_or_a_missing_image_is_bad_input(ec2: Any, ssm: Any) -> None:
    frontend = make_image("frontend")
    with pytest.raises(BadInput, match="frontend role's image"):
        release(make_config("backend"), "production", frontend)
    with pytest.raises(BadInput, match="does not exist"):
        release(make_config("backend"), "production", "ami-0123456789abcdef0")


def test_history_is_kept_and_labels_move(ec2: Any, ssm: Any) -> None:
    first, second = make_image(created=days_ago(2)), make_image(created=days_ago(1))
    cfg = make_config("backend")
    release(cfg, "production", first)
    release(cfg, "production", second)
    history = parameter_history(ssm, PARAMETER)
    assert [(h.version, h.value, h.labels) for h in history] == [
        (1, first, ("previous",)),
        (2, second, ("current",)),
    ]
    described = ssm.get_parameter_history(Name=PARAMETER)["Parameters"]
    assert "release of backend to " + second in described[-1]["Description"]


def test_promotions_to_several_environments_coexist(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend")
    release(cfg, "staging", ami)
    release(cfg, "production", ami)
    assert tags.promoted_environments(image_tags(ec2, ami)) == ["production", "staging"]
    assert (
        ssm.get_parameter(Name="/bakery/images/staging/backend/ami-id")["Parameter"]["Value"] == ami
    )


def test_releasing_the_current_image_again_changes_nothing(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend")
    release(cfg, "production", ami)
    assert release(cfg, "production", ami).version is None
    assert len(parameter_history(ssm, PARAMETER)) == 1


def test_rollback_points_back_to_the_previous_verified_image(ec2: Any, ssm: Any) -> None:
    old, good, bad = (make_image(created=days_ago(d)) for d in (3, 2, 1))
    cfg = make_config("backend")
    for ami in (old, good, bad):
        release(cfg, "production", ami)
    result = release(cfg, "production", rollback=True)
    assert (result.ami_id, result.previous_ami_id, result.version) == (good, bad, 4)
    assert ssm.get_parameter(Name=PARAMETER)["Parameter"]["Value"] == good
    assert tags.rolled_back_key("production") in image_tags(ec2, bad)
    # A second rollback goes further back, not forward to the image rolled back from.
    assert release(cfg, "production", rollback=True).ami_id == old


def test_rollback_skips_images_that_are_gone_or_no_longer_verified(ec2: Any, ssm: Any) -> None:
    old, rejected_later, current = (make_image(created=days_ago(d)) for d in (3, 2, 1))
    cfg = make_config("backend")
    for ami in (old, rejected_later, current):
        release(cfg, "production", ami)
    ec2.create_tags(Resources=[rejected_later], Tags=[{"Key": tags.STATUS, "Value": "rejected"}])
    assert release(cfg, "production", rollback=True).ami_id == old


def test_rollback_without_history_is_bad_input(ec2: Any, ssm: Any) -> None:
    with pytest.raises(BadInput, match="nothing to roll back to"):
        release(make_config("backend"), "production", rollback=True)
    with pytest.raises(BadInput, match="drop --ami-id"):
        release(make_config("backend"), "production", "ami-0123456789abcdef0", rollback=True)


@pytest.mark.parametrize("environment", ["Production", "prod/eu", "", "-x"])
def test_environment_names_are_checked(aws: None, environment: str) -> None:
    with pytest.raises(BadInput, match="environment"):
        release(make_config("backend"), environment)


COPYING = f"aws.copy_regions=['{OTHER_REGION}']"


def test_a_failed_parameter_write_leaves_the_image_unpromoted(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend")
    with fail_calls_double(fail_at={"PutParameter"}), pytest.raises(OperationFailed):
        release(cfg, "production", ami, clock=clock())
    # Promoted-but-not-pointed-to would be kept by prune for ever.
    assert tags.promoted_key("production") not in image_tags(ec2, ami)
    assert parameter_history(ssm, PARAMETER) == []
    release(cfg, "production", ami, clock=clock())
    assert tags.promoted_key("production") in image_tags(ec2, ami)


def test_a_rerun_repairs_a_copy_region_whose_parameter_write_failed(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend", COPYING)
    with (
        fail_calls_double(fail_at={f"PutParameter@{OTHER_REGION}"}),
        pytest.raises(OperationFailed),
    ):
        release(cfg, "production", ami, clock=clock())
    result = release(cfg, "production", ami, clock=clock())
    other = boto3.client("ssm", region_name=OTHER_REGION)
    copy = result.regions[OTHER_REGION]
    assert [(h.value, h.labels) for h in parameter_history(other, PARAMETER)] == [
        (copy, ("current",))
    ]
    copy_tags = image_tags(boto3.client("ec2", region_name=OTHER_REGION), copy)
    assert tags.promoted_key("production") in copy_tags
    assert [(h.value, h.labels) for h in parameter_history(ssm, PARAMETER)] == [(ami, ("current",))]


def test_a_rerun_of_an_interrupted_rollback_finishes_it_instead_of_rolling_back_twice(
    ec2: Any, ssm: Any
) -> None:
    old, good, bad = (make_image(created=days_ago(d)) for d in (3, 2, 1))
    cfg = make_config("backend")
    for ami in (old, good, bad):
        release(cfg, "production", ami, clock=clock())
    # The write went through; the label that says "done" did not.
    with (
        fail_calls_double(fail_at={"LabelParameterVersion"}),
        pytest.raises(OperationFailed),
    ):
        release(cfg, "production", rollback=True, clock=clock())
    result = release(cfg, "production", rollback=True, clock=clock())
    assert (result.ami_id, result.previous_ami_id, result.version) == (good, bad, 4)
    assert [(h.value, h.labels) for h in parameter_history(ssm, PARAMETER)][-2:] == [
        (bad, ("previous",)),
        (good, ("current",)),
    ]


def test_rollback_from_a_hand_set_parameter_naming_a_deleted_image(ec2: Any, ssm: Any) -> None:
    good, gone = make_image(created=days_ago(2)), make_image(created=days_ago(1))
    cfg = make_config("backend")
    release(cfg, "production", good, clock=clock())
    ec2.deregister_image(ImageId=gone)
    ssm.put_parameter(
        Name=PARAMETER, Value=gone, Type="String", DataType="aws:ec2:image", Overwrite=True
    )
    # AWS refuses tags on a deregistered image (InvalidAMIID.NotFound); moto takes them,
    # so the check is that no call names it.
    with fail_calls_double() as calls:
        result = release(cfg, "production", rollback=True, clock=clock())
    assert (result.ami_id, result.previous_ami_id) == (good, gone)
    assert not [
        c for c in calls.calls if c.service == "ec2" and c.writes and gone in str(c.request)
    ]
    assert ssm.get_parameter(Name=PARAMETER)["Parameter"]["Value"] == good


def test_share_settings_are_checked_before_anything_is_copied(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    # Sharing an image encrypted with the AWS-managed key cannot work: no kms_key_id.
    cfg = make_config("backend", COPYING, "aws.share_accounts=['210987654321']")
    with pytest.raises(BadInput, match="kms_key_id"):
        release(cfg, "production", ami, clock=clock())
    other = boto3.client("ec2", region_name=OTHER_REGION)
    assert other.describe_images(Owners=["self"])["Images"] == []


def open_snapshot_to_everyone(client: Any, ami: str) -> str:
    """What someone else did: the snapshot behind the image, public; its id."""
    [snapshot] = snapshot_ids_of(client, ami)
    client.modify_snapshot_attribute(
        SnapshotId=snapshot,
        Attribute="createVolumePermission",
        OperationType="add",
        GroupNames=["all"],
    )
    return str(snapshot)


@pytest.mark.parametrize("public", ["image", "snapshot"])
def test_a_public_image_or_snapshot_is_never_released(ec2: Any, ssm: Any, public: str) -> None:
    ami = make_image()
    if public == "image":
        ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
        opened = ami
    else:
        opened = open_snapshot_to_everyone(ec2, ami)
    with pytest.raises(OperationFailed, match=f"{opened} .*public"):
        release(make_config("backend"), "production", ami, clock=clock())
    assert parameter_history(ssm, PARAMETER) == []
    assert tags.promoted_key("production") not in image_tags(ec2, ami)


def test_a_public_snapshot_behind_a_copy_is_found_in_its_region(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend", COPYING)
    first = release(cfg, "staging", ami, clock=clock())
    other = boto3.client("ec2", region_name=OTHER_REGION)
    opened = open_snapshot_to_everyone(other, first.regions[OTHER_REGION])
    with pytest.raises(OperationFailed, match=f"{opened} .*{OTHER_REGION}"):
        release(cfg, "production", ami, clock=clock())
    assert parameter_history(ssm, PARAMETER) == []


def test_a_rerun_after_the_copy_was_deregistered_makes_a_new_copy_and_repoints(
    ec2: Any, ssm: Any
) -> None:
    """Adversarial: someone deregisters the copy in the copy region after a release. The
    same release run again must not leave that region's parameter naming a deregistered
    AMI: it copies again, tags and shares the new copy, and writes the parameter there."""
    ami = make_image()
    cfg = make_config("backend", COPYING)
    first = release(cfg, "production", ami, clock=clock())
    other = boto3.client("ec2", region_name=OTHER_REGION)
    other.deregister_image(ImageId=first.regions[OTHER_REGION])

    second = release(cfg, "production", ami, clock=clock())
    copy = second.regions[OTHER_REGION]
    assert copy != first.regions[OTHER_REGION]
    other_ssm = boto3.client("ssm", region_name=OTHER_REGION)
    history = parameter_history(other_ssm, PARAMETER)
    assert history[-1].value == copy and history[-1].labels == ("current",)
    assert tags.promoted_key("production") in image_tags(other, copy)
    # The home region was done: nothing written there again.
    assert [(h.value, h.labels) for h in parameter_history(ssm, PARAMETER)] == [(ami, ("current",))]
