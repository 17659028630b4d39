"""AMIs as bakery sees them: the source image look-up, bakery's own images by role,
their snapshots and tags, and the listing of what exists where."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from bakery.aws import tags
from bakery.aws.clients import aws_errors, ec2_client, error_code
from bakery.aws.progress import AMI_WAIT, waiting
from bakery.aws.records import RECORDS_DIR, record_path
from bakery.config import BakeryConfig
from bakery.errors import BadInput
from bakery.records import ImageRecord

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, ImageTypeDef


def source_image_filter(cfg: BakeryConfig) -> list[FilterTypeDef]:
    """The EC2 filters that select candidate source images (the same as Packer's)."""
    wanted = cfg.source_image
    return [
        {"Name": "name", "Values": [wanted.name_pattern]},
        {"Name": "architecture", "Values": [cfg.arch]},
        {"Name": "state", "Values": ["available"]},
        {"Name": "virtualization-type", "Values": ["hvm"]},
        {"Name": "root-device-type", "Values": ["ebs"]},
    ]


def find_source_image(ec2: EC2Client, cfg: BakeryConfig) -> ImageTypeDef:
    """The newest available image matching `aws.source_images.<os>.<arch>`, by CreationDate."""
    wanted = cfg.source_image
    with aws_errors(f"looking up the source AMI for {cfg.role}"):
        found = ec2.describe_images(Owners=list(wanted.owners), Filters=source_image_filter(cfg))
    images = found.get("Images", [])
    if not images:
        raise BadInput(
            f"no source AMI in {cfg.aws.region} matches aws.source_images.{cfg.os}.{cfg.arch}: "
            f"owners={list(wanted.owners)}, name={wanted.name_pattern!r}, "
            f"architecture={cfg.arch}, state=available, hvm, ebs root; "
            "check name_pattern and owners (and that the region is right)"
        )
    return max(images, key=lambda image: image.get("CreationDate", ""))


def role_images(
    ec2: EC2Client, role: str | None = None, arch: str | None = None
) -> list[ImageTypeDef]:
    """bakery's images in this account and region, of one role or of all roles, of one
    architecture or of both."""
    wanted: list[FilterTypeDef] = [
        {"Name": f"tag:{tags.ROLE}", "Values": [role]}
        if role
        else {"Name": "tag-key", "Values": [tags.ROLE]}
    ]
    if arch:
        # The image's own attribute: images tagged before bakery:arch existed have it too.
        wanted.append({"Name": "architecture", "Values": [arch]})
    with aws_errors("listing bakery's images"):
        pages = ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=wanted)
        return [image for page in pages for image in page.get("Images", [])]


def image_arch(image: ImageTypeDef) -> str:
    """The image's CPU architecture: EC2's attribute, else bakery's tag, else x86_64
    (the only one before arm64)."""
    values = tags.as_dict(image.get("Tags"))
    return str(image.get("Architecture") or values.get(tags.ARCH) or "x86_64")


def check_instance_type(ec2: EC2Client, cfg: BakeryConfig) -> None:
    """Refuse, before anything is launched, an instance type that cannot run the image's
    architecture (a t3 for arm64, a t4g for x86_64), or that the region does not offer."""
    wanted = cfg.instance_type
    key = f"aws.instance_types.{cfg.arch}"
    with aws_errors(f"looking up the instance type {wanted}"):
        try:
            found = ec2.describe_instance_types(InstanceTypes=[wanted])  # type: ignore[list-item]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidInstanceType":
                raise
            found = {"InstanceTypes": []}  # type: ignore[typeddict-item]
    offered = found.get("InstanceTypes", [])
    if not offered:
        raise BadInput(f"{key}: {wanted} is not an instance type in {cfg.aws.region}")
    supported = offered[0].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    if cfg.arch not in supported:
        raise BadInput(
            f"{key}: {wanted} runs {', '.join(supported) or 'no known architecture'}, not "
            f"{cfg.arch}: choose a type of that architecture"
            + (" (Graviton: t4g, m7g, c7g)" if cfg.arch == "arm64" else " (e.g. t3, m7i)")
        )


def describe_image(ec2: EC2Client, ami_id: str) -> ImageTypeDef | None:
    """One image by id, or None when it does not exist (or is not visible)."""
    try:
        found = ec2.describe_images(ImageIds=[ami_id])
    except botocore.exceptions.ClientError as exc:
        if error_code(exc).startswith("InvalidAMIID"):
            return None
        raise
    images = found.get("Images", [])
    return images[0] if images else None


def role_image(
    ec2: EC2Client, ami_id: str, role: str, region: str, arch: str | None = None
) -> ImageTypeDef:
    """The image `ami_id`, which must exist and be bakery's image of `role` (and of
    `arch`, when given)."""
    with aws_errors(f"looking up {ami_id}"):
        image = describe_image(ec2, ami_id)
    if image is None:
        raise BadInput(f"{ami_id} does not exist in {region} (or this account cannot see it)")
    owner = tags.as_dict(image.get("Tags")).get(tags.ROLE)
    if owner != role:
        what = f"the {owner} role's image" if owner else "not an image bakery built"
        raise BadInput(f"{ami_id} is {what}, not the {role} role's")
    found = image_arch(image)
    if arch is not None and found != arch:
        raise BadInput(f"{ami_id} is a {found} image, not {arch}: add --set arch={found}")
    return image


def status(image: ImageTypeDef) -> str:
    """bakery's status of the image: built, verified, rejected, or '' when untagged."""
    return tags.as_dict(image.get("Tags")).get(tags.STATUS, "")


def newest_first(images: Iterable[ImageTypeDef]) -> list[ImageTypeDef]:
    return sorted(images, key=lambda image: image.get("CreationDate", ""), reverse=True)


def snapshot_ids(image: ImageTypeDef) -> list[str]:
    """The EBS snapshots behind an image, from its block device mappings."""
    return [
        mapping["Ebs"]["SnapshotId"]
        for mapping in image.get("BlockDeviceMappings", [])
        if "Ebs" in mapping and "SnapshotId" in mapping["Ebs"]
    ]


def size_gb(image: ImageTypeDef) -> int:
    """The image's total EBS size in GiB."""
    return sum(
        int(mapping["Ebs"].get("VolumeSize", 0))
        for mapping in image.get("BlockDeviceMappings", [])
        if "Ebs" in mapping
    )


def tag_image(ec2: EC2Client, image: ImageTypeDef, values: dict[str, str]) -> None:
    """Put tags on the image and on every snapshot behind it."""
    resources = [image["ImageId"], *snapshot_ids(image)]
    with aws_errors(f"tagging {image['ImageId']}"):
        ec2.create_tags(Resources=resources, Tags=tags.as_list(values))


def delete_image(ec2: EC2Client, image: ImageTypeDef) -> None:
    """Deregister the image, then delete its snapshots (deregistering keeps them).

    The snapshots are tagged with the image's id first: once the image is gone nothing
    else ties them to it, so a delete interrupted after the deregister leaves snapshots
    that `orphaned_snapshots` finds again. Safe to repeat: what is gone stays gone.
    The marker is the only tag put there: the pipeline policy lets bakery tag a
    snapshot without bakery's role tag (an AMI a failed build left untagged) with the
    deletion marker and nothing else, so the marker can claim nothing.
    """
    ami_id = image["ImageId"]
    snapshots = snapshot_ids(image)
    marker = {tags.DELETING_WITH: ami_id}
    with aws_errors(f"deleting {ami_id}"):
        if snapshots:
            ec2.create_tags(Resources=snapshots, Tags=tags.as_list(marker))
        try:
            ec2.deregister_image(ImageId=ami_id)
        except botocore.exceptions.ClientError as exc:
            if not error_code(exc).startswith("InvalidAMIID"):
                raise
        for snapshot in snapshots:
            delete_snapshot(ec2, snapshot)


def delete_snapshot(ec2: EC2Client, snapshot_id: str) -> None:
    """Delete a snapshot; one already gone is no error (a re-run after a lost reply)."""
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "InvalidSnapshot.NotFound":
            raise


def orphaned_snapshots(ec2: EC2Client) -> dict[str, str]:
    """{snapshot id: AMI id} of the snapshots an interrupted `delete_image` left: tagged
    for deletion with an AMI that no longer exists."""
    with aws_errors("looking for snapshots of deleted AMIs"):
        marked: dict[str, str] = {}
        for page in ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": "tag-key", "Values": [tags.DELETING_WITH]}]
        ):
            for snapshot in page.get("Snapshots", []):
                marked[snapshot["SnapshotId"]] = tags.as_dict(snapshot.get("Tags"))[
                    tags.DELETING_WITH
                ]
        if not marked:
            return {}
        # A filter, not ImageIds: naming an image that is gone is an error there.
        alive = {
            image["ImageId"]
            for image in ec2.describe_images(
                Owners=["self"],
                Filters=[{"Name": "image-id", "Values": sorted(set(marked.values()))}],
            ).get("Images", [])
            if image.get("State") != "deregistered"
        }
    return {snapshot: ami_id for snapshot, ami_id in marked.items() if ami_id not in alive}


def delete_orphaned_snapshots(ec2: EC2Client, orphans: dict[str, str]) -> None:
    """Delete the snapshots `orphaned_snapshots` found."""
    for snapshot, ami_id in sorted(orphans.items()):
        with aws_errors(f"deleting {snapshot}, left by the deletion of {ami_id}"):
            delete_snapshot(ec2, snapshot)


def wait_available(ec2: EC2Client, ami_ids: Sequence[str], region: str) -> None:
    """Wait until the images are available, showing what is awaited."""
    if not ami_ids:
        return
    with (
        waiting(f"{', '.join(ami_ids)} to become available in {region}"),
        aws_errors(f"waiting for {', '.join(ami_ids)}"),
    ):
        ec2.get_waiter("image_available").wait(ImageIds=list(ami_ids), WaiterConfig=AMI_WAIT)


def regions_of(configs: Iterable[BakeryConfig]) -> list[str]:
    """Every region the configs build in or copy to, home regions first, no repeats."""
    seen: dict[str, None] = {}
    for cfg in configs:
        seen.setdefault(cfg.aws.region)
    for cfg in configs:
        for region in cfg.aws.copy_regions:
            seen.setdefault(region)
    return list(seen)


def image_record(image: ImageTypeDef, role: str, region: str) -> ImageRecord:
    """An AMI as an ImageRecord, read from its tags: what `invoke images` lists, as it
    lists a local image's record."""
    values = tags.as_dict(image.get("Tags"))
    ami_id = image["ImageId"]
    return ImageRecord(
        role=role,
        os=values.get(tags.OS, ""),
        # Images built before arm64 existed carry no arch tag: they are x86_64.
        arch=image_arch(image),
        target="aws",
        image=ami_id,
        inputs_hash=values.get(tags.INPUTS_HASH, ""),
        git_commit=values.get(tags.GIT_COMMIT, ""),
        packer_version=values.get(tags.PACKER_VERSION, ""),
        built_at=image.get("CreationDate", ""),
        path=record_path(RECORDS_DIR, role, ami_id),
        status=values.get(tags.STATUS, ""),
        verification=_tagged_verification(values),
        details={
            "region": region,
            "ami_id": ami_id,
            "ami_name": image.get("Name", ""),
            "promoted": tags.promoted_environments(values),
            "size_bytes": size_gb(image) * 2**30,
            "tags": values,
        },
    )


def _tagged_verification(values: dict[str, str]) -> dict[str, Any] | None:
    """What the gate's tags say of its run: the hardening index, when it measured one."""
    index = values.get(tags.HARDENING_INDEX, "")
    return {"hardening": {"index": int(index)}} if index.isdigit() else None


def list_images(configs: Sequence[BakeryConfig]) -> list[ImageRecord]:
    """bakery's images of the configs' roles in their regions, newest first per role;
    both architectures (the listing's arch column tells them apart)."""
    records: list[ImageRecord] = []
    for cfg in configs:
        # copy_regions may name the home region too: list each region once.
        for region in dict.fromkeys([cfg.aws.region, *cfg.aws.copy_regions]):
            ec2 = ec2_client(region)
            for image in newest_first(role_images(ec2, cfg.role)):
                records.append(image_record(image, cfg.role, region))
    return records
