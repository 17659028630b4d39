"""Source-image look-up and bakery's own images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from image_records import local_record

from bakery.aws import tags
from bakery.aws.clients import ec2_client
from bakery.aws.images import find_source_image, list_images, role_image
from bakery.errors import BadInput
from bakery.records import LISTING_COLUMNS, ImageRecord, listing_row, read_record, write_record

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
    cfg = make_config("backend", "aws.source_images.debian12.x86_64.name_pattern=debian-13-*")
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
    assert [row.image for row in rows] == [new, old]
    assert rows[0].status == "built" and rows[0].details["promoted"] == []
    assert rows[1].details["promoted"] == ["production"]
    assert rows[1].details["size_bytes"] > 0


def test_listing_names_each_image_once_when_copy_regions_holds_the_home_region(
    ec2: Any,
) -> None:
    ami = make_image()
    cfg = make_config("backend", f"aws.copy_regions=['{REGION}']")
    listed = [(row.details["region"], row.image) for row in list_images([cfg])]
    assert listed == [(REGION, ami)]


def test_an_ami_is_listed_as_the_record_its_build_wrote(ec2: Any, tmp_path: Path) -> None:
    # The same ImageRecord, the same columns: read back from the AMI's tags, it says
    # what the build's record says about the fields both targets list.
    ami = make_image(
        extra_tags={
            tags.GIT_COMMIT: "abc1234",
            tags.PACKER_VERSION: "1.6.6",
            tags.HARDENING_INDEX: "83",
        }
    )
    [listed] = list_images([make_config("backend")])
    assert isinstance(listed, ImageRecord)
    assert (listed.role, listed.os, listed.target, listed.image) == (
        "backend",
        "debian12",
        "aws",
        ami,
    )
    assert (listed.inputs_hash, listed.git_commit, listed.packer_version, listed.status) == (
        "0123456789abcdef",
        "abc1234",
        "1.6.6",
        "verified",
    )
    assert listed.built_at

    local = local_record(
        tmp_path / "record.json",
        inputs_hash="0123456789abcdef",
        git_commit="abc1234",
        status="verified",
        details={"size_bytes": 900_000_000},
        verification={"hardening": {"index": 83}},
    )
    write_record(local)
    local_read = read_record(local.path)
    assert local_read is not None
    aws_row, local_row = listing_row(listed), listing_row(local_read)
    assert len(aws_row) == len(local_row) == len(LISTING_COLUMNS)
    by_column = {
        column: (a, b) for column, a, b in zip(LISTING_COLUMNS, aws_row, local_row, strict=True)
    }
    for column in ("role", "status", "inputs hash", "hardening"):
        assert by_column[column][0] == by_column[column][1], column
    for column in LISTING_COLUMNS:
        assert "-" not in by_column[column], f"{column} is missing on a target: {by_column}"
