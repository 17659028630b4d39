"""Copies of a verified AMI in other regions, and sharing it with accounts and
organisations, never with everyone.

Each copy and its snapshots are tagged as they are made (`CopyImage` with
`TagSpecifications`: `bakery:role` and `bakery:copied-from`), so no copy is ever
untagged; the source's other tags and bakery's guarantees (IMDSv2, deprecation), which
`CopyImage` does not carry over, are re-applied once the copy is available. Copies are
always encrypted; a copy is found again by its `bakery:copied-from` tag (or, cut off
before that, by its name and description), which makes copying idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.clients import aws_errors, ec2_client
from bakery.aws.images import (
    describe_image,
    role_image,
    snapshot_ids,
    status,
    tag_image,
    wait_available,
)
from bakery.aws.progress import say
from bakery.config import BakeryConfig
from bakery.errors import BadInput, OperationFailed

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        CopyImageRequestTypeDef,
        ImageTypeDef,
        LaunchPermissionTypeDef,
    )

_ACCOUNT = re.compile(r"^[0-9]{12}$")
_ORG_ARN = re.compile(r"^arn:aws[a-z-]*:organizations::[0-9]{12}:(organization|ou)/")


def check_share_targets(
    cfg: BakeryConfig, accounts: Sequence[str], org_arns: Sequence[str]
) -> None:
    """Refuse public sharing and anything that is not an account id or organisation ARN."""
    for target in [*accounts, *org_arns]:
        if target.strip().lower() in ("all", "*", "public"):
            raise BadInput(
                f"refusing to share {cfg.role} images with {target!r}: bakery never makes an "
                "image public; list account ids (aws.share_accounts) or organisation ARNs "
                "(aws.share_org_arns)"
            )
    bad = [a for a in accounts if not _ACCOUNT.match(a)] + [
        arn for arn in org_arns if not _ORG_ARN.match(arn)
    ]
    if bad:
        raise BadInput(f"cannot share with {bad}: expected 12-digit account ids or org/OU ARNs")
    if (accounts or org_arns) and cfg.aws.encrypt and not cfg.aws.kms_key_id:
        raise BadInput(
            "images encrypted with the AWS-managed EBS key cannot be shared with other "
            "accounts: set aws.kms_key_id to a customer-managed key whose policy lets them "
            "use it"
        )


def kms_key_for(cfg: BakeryConfig, region: str) -> str | None:
    """The KMS key to encrypt a copy with in `region` (a key ARN is regional)."""
    key = cfg.aws.kms_key_id
    if not key or not key.startswith("arn:"):
        return key  # an alias or id, resolved in the destination region
    parts = key.split(":")
    if parts[3] == region:
        return key
    if ":key/mrk-" in key:  # a multi-region key: its replica has the same id
        parts[3] = region
        return ":".join(parts)
    raise BadInput(
        f"aws.kms_key_id {key} is a key in {parts[3]}, unusable for the copy in {region}: "
        "use an alias that exists in every region, or a multi-region key (mrk-)"
    )


def _copy_description(cfg: BakeryConfig, ami_id: str) -> str:
    return f"bakery {cfg.role} image, copy of {ami_id} in {cfg.aws.region}"


def _existing_copy(ec2: EC2Client, cfg: BakeryConfig, source: ImageTypeDef) -> ImageTypeDef | None:
    """An earlier copy of the source: by its tag, or, when the run that started it was
    cut off before tagging it, by the name and description it was started with."""
    ami_id = source["ImageId"]
    with aws_errors(f"looking for an earlier copy of {ami_id}"):
        found = ec2.describe_images(
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [source.get("Name", ami_id)]}],
        )["Images"]
    usable = [
        image
        for image in found
        if image.get("State") in ("available", "pending")
        and (
            tags.as_dict(image.get("Tags")).get(tags.COPIED_FROM) == ami_id
            or image.get("Description") == _copy_description(cfg, ami_id)
        )
    ]
    return usable[0] if usable else None


def _start_copy(ec2: EC2Client, cfg: BakeryConfig, image: ImageTypeDef, region: str) -> str:
    request: CopyImageRequestTypeDef = {
        "SourceImageId": image["ImageId"],
        "SourceRegion": cfg.aws.region,
        "Name": image.get("Name", image["ImageId"]),
        "Description": _copy_description(cfg, image["ImageId"]),
        "Encrypted": True,
        # Tagged as it is made (ec2:CreateAction=CopyImage): never an untagged AMI.
        "TagSpecifications": [
            {
                "ResourceType": kind,
                "Tags": tags.as_list({tags.COPIED_FROM: image["ImageId"], tags.ROLE: cfg.role}),
            }
            for kind in ("image", "snapshot")
        ],
        # The same token for the same copy: AWS returns the first copy when a retry
        # repeats a request whose reply was lost, instead of making a second one.
        "ClientToken": f"bakery-copy-{image['ImageId']}",
    }
    key = kms_key_for(cfg, region)
    if key:
        request["KmsKeyId"] = key
    with aws_errors(f"copying {image['ImageId']} to {region}"):
        copy_id = ec2.copy_image(**request)["ImageId"]
    # Tag the copy at once so a crash before it is available still finds it again.
    with aws_errors(f"tagging copy {copy_id}"):
        ec2.create_tags(
            Resources=[copy_id],
            Tags=tags.as_list({tags.COPIED_FROM: image["ImageId"], tags.ROLE: cfg.role}),
        )
    return copy_id


def _finish_copy(ec2: EC2Client, cfg: BakeryConfig, source: ImageTypeDef, copy_id: str) -> None:
    """Re-apply the source's tags and bakery's guarantees to an available copy."""
    with aws_errors(f"reading copy {copy_id}"):
        copy = describe_image(ec2, copy_id)
    if copy is None:
        raise OperationFailed(f"copy {copy_id} disappeared while it was being made")
    # Promotions and rollbacks are facts of one region: the release writes them per copy.
    values = {
        key: value
        for key, value in tags.as_dict(source.get("Tags")).items()
        if not key.startswith((tags.PROMOTED_PREFIX, tags.ROLLED_BACK_PREFIX))
    }
    values |= {tags.COPIED_FROM: source["ImageId"], tags.COPIED_FROM_REGION: cfg.aws.region}
    if not values.items() <= tags.as_dict(copy.get("Tags")).items():
        tag_image(ec2, copy, values)  # one call: the copy's snapshots get them with it
    with aws_errors(f"applying bakery's guarantees to copy {copy_id}"):
        if cfg.aws.imdsv2_required and copy.get("ImdsSupport") != "v2.0":
            ec2.modify_image_attribute(ImageId=copy_id, ImdsSupport={"Value": "v2.0"})
        deprecation = source.get("DeprecationTime")
        if deprecation and not copy.get("DeprecationTime"):
            ec2.enable_image_deprecation(
                ImageId=copy_id, DeprecateAt=tags.parse_timestamp(deprecation) or deprecation
            )


def copy_regions(cfg: BakeryConfig) -> list[str]:
    """The regions a release copies to: `aws.copy_regions` without the home region."""
    return [r for r in dict.fromkeys(cfg.aws.copy_regions) if r != cfg.aws.region]


def copy_to_regions(cfg: BakeryConfig, ami_id: str) -> dict[str, str]:
    """Copy a verified AMI to every `aws.copy_regions`; {region: copy id}, idempotent."""
    home = ec2_client(cfg.aws.region)
    source = role_image(home, ami_id, cfg.role, cfg.aws.region)
    if status(source) != tags.VERIFIED:
        raise BadInput(f"{ami_id} is {status(source) or 'untagged'}: only verified AMIs are copied")
    regions = copy_regions(cfg)
    for region in regions:  # every key is checked before the first copy starts
        kms_key_for(cfg, region)
    copies: dict[str, str] = {}
    started: list[tuple[EC2Client, str, str]] = []
    for region in regions:
        ec2 = ec2_client(region)
        existing = _existing_copy(ec2, cfg, source)
        copy_id = existing["ImageId"] if existing else _start_copy(ec2, cfg, source, region)
        say(f"{'found' if existing else 'copying to'} {region}: {copy_id}")
        copies[region] = copy_id
        started.append((ec2, region, copy_id))
    for ec2, region, copy_id in started:  # copies run in parallel on AWS's side
        wait_available(ec2, [copy_id], region)
        _finish_copy(ec2, cfg, source, copy_id)
    return copies


def _launch_permissions(
    accounts: Sequence[str], org_arns: Sequence[str]
) -> list[LaunchPermissionTypeDef]:
    permissions: list[LaunchPermissionTypeDef] = [{"UserId": account} for account in accounts]
    for arn in org_arns:
        if ":organization/" in arn:
            permissions.append({"OrganizationArn": arn})
        else:
            permissions.append({"OrganizationalUnitArn": arn})
    return permissions


def public_parts(ec2: EC2Client, image: ImageTypeDef) -> list[str]:
    """The ids of what anyone may use: the image when it is public, and each snapshot
    behind it that anyone may create a volume from (a public snapshot exposes the disk
    even when the image is private)."""
    ami_id = image["ImageId"]
    public: list[str] = []
    with aws_errors(f"reading who may use {ami_id} and its snapshots"):
        granted = ec2.describe_image_attribute(ImageId=ami_id, Attribute="launchPermission")
        if any(item.get("Group") == "all" for item in granted.get("LaunchPermissions", [])):
            public.append(ami_id)
        for snapshot in snapshot_ids(image):
            allowed = ec2.describe_snapshot_attribute(
                SnapshotId=snapshot, Attribute="createVolumePermission"
            )
            if any(p.get("Group") == "all" for p in allowed.get("CreateVolumePermissions", [])):
                public.append(snapshot)
    return public


def check_not_public(ec2: EC2Client, image: ImageTypeDef, region: str) -> None:
    """OperationFailed naming each public part of the image and how to close it."""
    public = public_parts(ec2, image)
    if not public:
        return
    fixes = [
        f"aws ec2 modify-image-attribute --region {region} --image-id {found} "
        "--launch-permission 'Remove=[{Group=all}]'"
        if found.startswith("ami-")
        else f"aws ec2 modify-snapshot-attribute --region {region} --snapshot-id {found} "
        "--attribute createVolumePermission --operation-type remove --group-names all"
        for found in public
    ]
    raise OperationFailed(
        f"{', '.join(public)} ({image['ImageId']} in {region}) "
        f"{'is' if len(public) == 1 else 'are'} public, which bakery never does: close "
        f"{'it' if len(public) == 1 else 'them'} ({'; '.join(fixes)}) and find out who opened "
        f"{'it' if len(public) == 1 else 'them'}; nothing was released"
    )


def _granted(
    ec2: EC2Client, image: ImageTypeDef
) -> tuple[list[LaunchPermissionTypeDef], dict[str, set[str]]]:
    """Who may launch the image now (accounts and organisations; `all` is never
    bakery's and is refused before this), and which accounts may make a volume of each
    snapshot behind it."""
    launch = ec2.describe_image_attribute(ImageId=image["ImageId"], Attribute="launchPermission")
    permissions: list[LaunchPermissionTypeDef] = []
    for item in launch.get("LaunchPermissions", []):
        if "UserId" in item:
            permissions.append({"UserId": item["UserId"]})
        elif "OrganizationArn" in item:
            permissions.append({"OrganizationArn": item["OrganizationArn"]})
        elif "OrganizationalUnitArn" in item:
            permissions.append({"OrganizationalUnitArn": item["OrganizationalUnitArn"]})
    volumes = {
        snapshot: {
            item["UserId"]
            for item in ec2.describe_snapshot_attribute(
                SnapshotId=snapshot, Attribute="createVolumePermission"
            ).get("CreateVolumePermissions", [])
            if "UserId" in item
        }
        for snapshot in snapshot_ids(image)
    }
    return permissions, volumes


def _converge_sharing(
    ec2: EC2Client,
    image: ImageTypeDef,
    wanted: list[LaunchPermissionTypeDef],
    accounts: Sequence[str],
) -> None:
    """Make the image's launch permissions and its snapshots' volume permissions exactly
    the configured ones: grant what is missing, then revoke what config no longer names."""
    image_id = image["ImageId"]
    current, volumes = _granted(ec2, image)
    missing = [p for p in wanted if p not in current]
    stale = [p for p in current if p not in wanted]
    if missing:
        ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": missing})
    # Organisations cannot be given createVolumePermission; launching needs none.
    for snapshot, users in volumes.items():
        add = sorted(set(accounts) - users)
        if add:
            ec2.modify_snapshot_attribute(
                SnapshotId=snapshot,
                Attribute="createVolumePermission",
                OperationType="add",
                UserIds=add,
            )
    if stale:
        ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Remove": stale})
    for snapshot, users in volumes.items():
        remove = sorted(users - set(accounts))
        if remove:
            ec2.modify_snapshot_attribute(
                SnapshotId=snapshot,
                Attribute="createVolumePermission",
                OperationType="remove",
                UserIds=remove,
            )


def share_image(
    cfg: BakeryConfig,
    ami_id: str,
    copies: dict[str, str] | None = None,
    *,
    accounts: Sequence[str] | None = None,
    org_arns: Sequence[str] | None = None,
) -> list[str]:
    """Make the launch permission (and createVolumePermission on the snapshots) of the
    image and its copies exactly the configured accounts and organisations: missing
    ones are granted, ones config no longer names are revoked (instances they run keep
    running); returns the image ids shared. Public sharing is refused, and every image
    is checked (verified, not public) before the first change. A re-run changes nothing."""
    accounts = list(cfg.aws.share_accounts if accounts is None else accounts)
    org_arns = list(cfg.aws.share_org_arns if org_arns is None else org_arns)
    check_share_targets(cfg, accounts, org_arns)
    checked: list[tuple[EC2Client, str, ImageTypeDef]] = []
    for region, image_id in {cfg.aws.region: ami_id, **(copies or {})}.items():
        ec2 = ec2_client(region)
        image = role_image(ec2, image_id, cfg.role, region)
        if status(image) != tags.VERIFIED:
            raise BadInput(
                f"{image_id} is {status(image) or 'untagged'}: only verified AMIs are shared"
            )
        check_not_public(ec2, image, region)
        checked.append((ec2, region, image))
    wanted = _launch_permissions(accounts, org_arns)
    for ec2, region, image in checked:
        with aws_errors(f"sharing {image['ImageId']} in {region}"):
            _converge_sharing(ec2, image, wanted, accounts)
    if not accounts and not org_arns:
        return []
    shared = [image["ImageId"] for _, _, image in checked]
    if cfg.aws.kms_key_id:
        key = cfg.aws.kms_key_id
        say(f"shared {', '.join(shared)}: the key policy of {key} must let them use it")
    return shared
