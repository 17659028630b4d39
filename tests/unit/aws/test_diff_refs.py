"""`invoke diff released:ENV newest --target aws --role ROLE`: the AMIs those names mean,
found in moto's account the way release and images find them."""

from __future__ import annotations

from typing import Any

import pytest

from bakery.aws import tags
from bakery.aws.release import release
from bakery.diff import aws_ami
from bakery.errors import BadInput

from .conftest import clock, days_ago, make_config, make_image


def test_released_names_the_promoted_ami_and_newest_the_newest_verified(ec2: Any) -> None:
    promoted = make_image(created=days_ago(3))
    newer = make_image(created=days_ago(2))
    make_image(status=tags.REJECTED, created=days_ago(1))  # newer, but not verified
    make_image("frontend", created=days_ago(0))  # another role
    cfg = make_config("backend")
    release(cfg, "production", promoted, clock=clock())

    assert aws_ami("released:production", cfg) == promoted
    assert aws_ami("newest", cfg) == newer
    assert aws_ami("ami-0123", cfg) is None  # resolved from its record file instead


def test_nothing_released_or_no_target_is_refused_by_name(ec2: Any) -> None:
    cfg = make_config("backend")
    with pytest.raises(BadInput, match="nothing released to staging for backend"):
        aws_ami("released:staging", cfg)
    with pytest.raises(BadInput, match="no verified backend AMI"):
        aws_ami("newest", cfg)
    with pytest.raises(BadInput, match="needs --target aws"):
        aws_ami("newest", None)
    with pytest.raises(BadInput, match="--environment"):
        aws_ami("released:Prod!", cfg)
