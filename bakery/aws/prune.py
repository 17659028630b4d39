"""Removing old AMIs: per role and region, keep the N newest verified images and every
image an environment uses or used; deregister the rest and delete their snapshots.

A dry run (the default) changes nothing and returns the same rows, so the table shows
exactly what `--apply` would do and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bakery.aws import tags
from bakery.aws.clients import ec2_client, ssm_client
from bakery.aws.images import delete_image, newest_first, role_images
from bakery.aws.progress import say
from bakery.aws.release import parameter_values
from bakery.config import BakeryConfig
from bakery.errors import BadInput

# A rejected image is kept this long, so someone can launch it and look.
REJECTED_GRACE = timedelta(days=1)

KEEP = "keep"
DELETE = "delete"


@dataclass(frozen=True)
class PruneRow:
    """One image and what prune does with it, and why."""

    ami_id: str
    role: str
    region: str
    created: str
    status: str
    decision: str
    reason: str
    deleted: bool = False


def _decide(
    state: str,
    values: dict[str, str],
    created: datetime | None,
    in_use_by: list[str],
    verified_rank: int | None,
    keep: int,
    now: datetime,
) -> tuple[str, str]:
    promoted = tags.promoted_environments(values)
    if promoted:
        return KEEP, f"promoted to {', '.join(promoted)}"
    if in_use_by:
        return KEEP, f"{', '.join(in_use_by)} points to it"
    if state == "failed":
        return DELETE, "AWS failed to create it (a failed build or copy)"
    status = values.get(tags.STATUS, "")
    if status == tags.VERIFIED and verified_rank is not None:
        if verified_rank < keep:
            return KEEP, f"one of the {keep} newest verified"
        return DELETE, f"older than the {keep} newest verified"
    if status == tags.REJECTED:
        if created is not None and now - created > REJECTED_GRACE:
            return DELETE, "rejected more than a day ago"
        return KEEP, "rejected less than a day ago (kept for inspection)"
    if status == tags.BUILT:
        return KEEP, "built, not yet verified"
    return KEEP, "no bakery status: not prune's to judge"


def prune(
    configs: Sequence[BakeryConfig],
    keep: int | None = None,
    apply: bool = False,
    *,
    clock: Callable[[], datetime] = tags.utc_now,
) -> list[PruneRow]:
    """Decide (and with `apply`, carry out) the fate of every bakery image of the roles."""
    if keep is not None and keep < 1:
        raise BadInput(f"--keep {keep}: keep at least 1 verified image per role and region")
    now = clock()
    rows: list[PruneRow] = []
    for cfg in configs:
        wanted = keep if keep is not None else cfg.aws.retention
        for region in dict.fromkeys([cfg.aws.region, *cfg.aws.copy_regions]):
            ec2 = ec2_client(region)
            pointers: dict[str, list[str]] = {}
            for name, value in parameter_values(ssm_client(region), cfg.aws.ssm_prefix).items():
                pointers.setdefault(value, []).append(name)
            images = newest_first(role_images(ec2, cfg.role))
            verified = [
                i["ImageId"]
                for i in images
                if tags.as_dict(i.get("Tags")).get(tags.STATUS) == tags.VERIFIED
            ]
            for image in images:
                values = tags.as_dict(image.get("Tags"))
                ami_id = image["ImageId"]
                created = tags.parse_timestamp(image.get("CreationDate", ""))
                rank = verified.index(ami_id) if ami_id in verified else None
                decision, reason = _decide(
                    image.get("State", ""),
                    values,
                    created,
                    pointers.get(ami_id, []),
                    rank,
                    wanted,
                    now,
                )
                deleted = False
                if decision == DELETE and apply:
                    delete_image(ec2, image)
                    deleted = True
                    say(f"deleted {ami_id} ({cfg.role}, {region}) and its snapshots: {reason}")
                rows.append(
                    PruneRow(
                        ami_id=ami_id,
                        role=cfg.role,
                        region=region,
                        created=image.get("CreationDate", ""),
                        status=values.get(tags.STATUS, ""),
                        decision=decision,
                        reason=reason,
                        deleted=deleted,
                    )
                )
    return rows
