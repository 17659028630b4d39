"""Source-image look-up and bakery's own images."""

from __future__ import annotations

from typing import Any

import pytest

from bakery.aws import tags
from bakery.aws.clients import ec2_client
from bakery.aws.images import find_source_image, list_images, role_image
from bakery.errors import BadInput

from .conftest import REGION, days_ago, make_config, make_image


def test_source_lookup_picks_newest_by_creation_date(aws: None) -> None:
    image = find_source_image(ec2_client(REGION), make_config("backend"))
    # a3's name sorts before a2's, but it was created later; arm64, pending and
    # foreign-owner images are newer still and must not be chosen.
    assert image["ImageId"] == "ami-0deb12000000000a3"


def test_source_lookup_for_al2023_honours_the_name_pattern(aws: None) -> None:
    cfg = make_config("backend", "os=al2023")
    image = find_source_image(ec2_client(REGION), cfg)
    assert image["ImageId"] == "ami-0a1202300000000b2"  # not the newer "minimal" image


def test_no_matching_source_image_names_the_filter(aws: None) -> None:
    cfg = make_config("backend", "aws.source_images.debian12.name_pattern=debian-13-*")
    with pytest.raises(BadInput) as caught:
        find_source_image(ec2_client(REGION), cfg)
    message = str(caught.value)
    for part in ("aws.source_images.debian12", "debian-13-*", "136693071363", "x86_64", REGION):
        assert part in message


def test_role_image_rejects_unknown_and_foreign_images(ec2: Any) -> None:
    frontend = make_image("frontend")
    client = ec2_client(REGION)
    with pytest.raises(BadInput, match="does not exist"):
        role_image(client, "ami-0123456789abcdef0", "backend", REGION)
    with pytest.raises(BadInput, match="frontend role's image, not the backend"):
        role_image(client, frontend, "backend", REGION)
    with pytest.raises(BadInput, match="not an image bakery built"):
        role_image(client, "ami-0deb12000000000a3", "backend", REGION)


def test_listing_shows_status_promotions_and_size(ec2: Any) -> None:
    old = make_image(created=days_ago(3), extra_tags={tags.promoted_key("production"): "x"})
    new = make_image(status=tags.BUILT, created=days_ago(1))
    make_image("frontend")
    rows = list_images([make_config("backend")])
    assert [row.ami_id for row in rows] == [new, old]
    assert rows[0].status == "built" and rows[0].promoted == ()
    assert rows[1].promoted == ("production",)
    assert rows[1].size_gb > 0


def test_listing_names_each_image_once_when_copy_regions_holds_the_home_region(
    ec2: Any,
) -> None:
    ami = make_image()
    cfg = make_config("backend", f"aws.copy_regions=['{REGION}']")
    assert [(row.region, row.ami_id) for row in list_images([cfg])] == [(REGION, ami)]
