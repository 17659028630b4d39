"""Promotion through SSM parameters, its history, and rollback.

moto 5.2.5 accepts DataType 'aws:ec2:image' (it does not check that the AMI exists,
which AWS does asynchronously) and keeps versions and labels, so no Stubber is needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from bakery.aws import tags
from bakery.aws.release import parameter_history, release
from bakery.errors import BadInput

from .conftest import clock, days_ago, image_tags, make_config, make_image

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
