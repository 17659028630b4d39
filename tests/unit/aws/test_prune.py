"""Prune: keep the newest verified and everything promoted or pointed to; dry run first."""

from __future__ import annotations

from typing import Any

import pytest

from bakery.aws import tags
from bakery.aws.prune import prune
from bakery.aws.release import release
from bakery.errors import BadInput

from .conftest import (
    clock,
    days_ago,
    existing_snapshots,
    image_of,
    make_config,
    make_image,
    snapshot_ids_of,
)


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
    assert reasons[amis[9]] == "one of the 2 newest verified"
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
