"""Building an AMI with Packer's amazon-ebs builder, then making it what bakery promises.

`packer build` runs in the rendered folder with this run's inputs in a var file. The
AMI of *this* run is read from `packer-manifest.json` (appended across runs) by its
`packer_run_uuid`. Then bakery re-applies the full tag set to the AMI and each snapshot
(Packer 1.6 does not tag every snapshot reliably), applies the post-build guarantees
the rendered template could not express (IMDSv2-only, deprecation, organisation
sharing) and writes the build record. Any failure, Ctrl-C included, removes whatever
AMI, snapshot and build instance this run left behind: an image is either complete or
absent. Each run has its own id, which Packer tags on the build instance, its volumes,
the AMI and its snapshots; an AMI Packer had not tagged yet is the run's if it was made
from the run's build instance. The clean-up goes by these, so it never touches a
concurrent build's, with one exception: the encrypted copy Packer makes (see
`_untagged_copies`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bakery.aws import tags
from bakery.aws.build_access import open_build_access
from bakery.aws.clients import aws_errors, ec2_client
from bakery.aws.images import (
    check_instance_type,
    delete_image,
    delete_orphaned_snapshots,
    delete_snapshot,
    describe_image,
    find_source_image,
    orphaned_snapshots,
    snapshot_ids,
    tag_image,
    wait_available,
)
from bakery.aws.progress import say
from bakery.aws.records import RECORDS_DIR, record_path
from bakery.config import BakeryConfig
from bakery.errors import BadInput, BakeryError, OperationFailed
from bakery.hcl import write_var_file
from bakery.inputs import RunInputs, run_inputs
from bakery.packer import (
    manifest_run_uuids,
    read_image_manifest,
    run_packer,
    this_run_artifacts,
)
from bakery.progress import installed_progress
from bakery.records import ImageRecord, write_record
from bakery.render import DEPRECATION, IMDSV2_ON_AMI, ORG_SHARING, RenderedRole
from bakery.sbom import write_sbom

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, ImageTypeDef

MANIFEST = "packer-manifest.json"
VAR_FILE = "run.pkrvars.hcl"
PACKER_LOG = "packer.log"

# Runs `packer ARGS` in a folder, logging to a file; raises OperationFailed on failure.
PackerRunner = Callable[[list[str], Path, Path], None]


def stream_packer(args: list[str], cwd: Path, log_path: Path) -> None:
    """The shared Packer runner, its output shown as it comes (an AWS build is long and
    Packer says what it waits for)."""
    progress = installed_progress()
    run_packer(
        args,
        cwd,
        log_path,
        on_line=progress.output,
        on_interrupt=lambda: progress.line(
            "interrupted: waiting for Packer to remove what it created…"
        ),
    )


def this_run_artifact(manifest: Path, earlier: set[str], region: str) -> tuple[str, str]:
    """(Packer's run uuid, AMI id) of the run that just finished, from the manifest."""
    run_uuid, artifacts = this_run_artifacts(manifest, earlier)
    amis = [a.split(":", 1)[1] for a in artifacts if a.startswith(f"{region}:")]
    if len(amis) != 1:
        raise OperationFailed(
            f"expected one AMI in {region} from Packer run {run_uuid}, found {amis} in {manifest}"
        )
    return run_uuid, amis[0]


def apply_post_build_guarantees(
    ec2: EC2Client,
    ami_id: str,
    guarantees: tuple[str, ...],
    cfg: BakeryConfig,
    now: datetime,
) -> list[str]:
    """Apply what the template could not express for this Packer; returns what was done."""
    done: list[str] = []
    for guarantee in guarantees:
        with aws_errors(f"applying {guarantee} to {ami_id}"):
            if guarantee == IMDSV2_ON_AMI:
                # Instances launched from the AMI default to IMDSv2 only (tokens required).
                ec2.modify_image_attribute(ImageId=ami_id, ImdsSupport={"Value": "v2.0"})
            elif guarantee == DEPRECATION and cfg.aws.deprecate_after_days:
                deprecate_at = now + timedelta(days=cfg.aws.deprecate_after_days)
                ec2.enable_image_deprecation(ImageId=ami_id, DeprecateAt=deprecate_at)
            elif guarantee == ORG_SHARING:
                ec2.modify_image_attribute(
                    ImageId=ami_id,
                    LaunchPermission={
                        "Add": [{"OrganizationArn": arn} for arn in cfg.aws.share_org_arns]
                    },
                )
            else:
                raise OperationFailed(f"bakery does not know how to apply {guarantee!r}")
        done.append(guarantee)
    return done


def new_run_id() -> str:
    """A fresh id for one build run, tagged on everything the run creates."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunResources:
    """The AMIs, snapshots and build instances one build run created."""

    images: dict[str, ImageTypeDef]
    snapshots: frozenset[str]
    instances: frozenset[str]

    def ids(self) -> set[str]:
        return {*self.images, *self.snapshots, *self.instances}


# A build instance in one of these states is terminated by a failed run's clean-up.
_LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped"})


def _images_named_like_run(
    ec2: EC2Client, cfg: BakeryConfig, run_hash: str
) -> dict[str, ImageTypeDef]:
    name = cfg.aws.ami_name_pattern.format(
        role=cfg.role, os=cfg.os, arch=cfg.arch, timestamp="*", inputs_hash=run_hash
    )
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    return {image["ImageId"]: image for image in found["Images"]}


def images_named_like_run(ec2: EC2Client, cfg: BakeryConfig, run_hash: str) -> frozenset[str]:
    """The AMIs whose name matches the one a run of this role and inputs would give."""
    with aws_errors(f"listing the {cfg.role} AMIs"):
        return frozenset(_images_named_like_run(ec2, cfg, run_hash))


def _images_made_from(ec2: EC2Client, instance_ids: list[str]) -> dict[str, ImageTypeDef]:
    """The AMIs CreateImage made from these instances, whatever their name or tags."""
    if not instance_ids:
        return {}
    made: list[FilterTypeDef] = [{"Name": "source-instance-id", "Values": instance_ids}]
    found = ec2.describe_images(Owners=["self"], Filters=made)
    return {image["ImageId"]: image for image in found["Images"]}


def _untagged_copies(
    ec2: EC2Client, cfg: BakeryConfig, run_hash: str, named_before: frozenset[str]
) -> dict[str, ImageTypeDef]:
    """The AMIs with the run's name, new since `named_before`, with no run id and not
    made from an instance: with encrypt_boot, Packer 1.6 copies the AMI it made into one
    with the run's name, and tags the copy only once it is available.

    Kept because only the name ties such a copy to the run: CopyImage records no
    source instance, and Packer's own clean-up deletes the AMI it copied from. So a
    concurrent encrypted run's copy, made meanwhile and still untagged, is taken too.
    """
    return {
        ami_id: image
        for ami_id, image in _images_named_like_run(ec2, cfg, run_hash).items()
        if ami_id not in named_before
        and "SourceInstanceId" not in image
        and tags.RUN_ID not in tags.as_dict(image.get("Tags"))
    }


def run_resources(
    ec2: EC2Client, cfg: BakeryConfig, run_id: str, run_hash: str, named_before: frozenset[str]
) -> RunResources:
    """What carries this run's id, plus the AMIs Packer had not tagged yet (it tags an
    AMI once it is available): those made from the run's build instances and, with
    encryption, Packer's copy of one (see `_untagged_copies`).
    """
    by_run: list[FilterTypeDef] = [{"Name": f"tag:{tags.RUN_ID}", "Values": [run_id]}]
    with aws_errors(f"listing what the {cfg.role} build run {run_id} created"):
        images = {
            image["ImageId"]: image
            for image in ec2.describe_images(Owners=["self"], Filters=by_run)["Images"]
        }
        snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=by_run)["Snapshots"]
        # Terminated ones too: on Ctrl-C Packer terminates its build instance but leaves
        # the AMI it was waiting for.
        instances = [
            instance
            for reservation in ec2.describe_instances(Filters=by_run)["Reservations"]
            for instance in reservation.get("Instances", [])
        ]
        images.update(_images_made_from(ec2, [i["InstanceId"] for i in instances]))
        if cfg.aws.encrypt:
            images.update(_untagged_copies(ec2, cfg, run_hash, named_before))
    return RunResources(
        images=images,
        snapshots=frozenset(snapshot["SnapshotId"] for snapshot in snapshots),
        instances=frozenset(
            instance["InstanceId"]
            for instance in instances
            if instance.get("State", {}).get("Name") in _LIVE_STATES
        ),
    )


def remove_run_leftovers(
    ec2: EC2Client, cfg: BakeryConfig, run_id: str, run_hash: str, named_before: frozenset[str]
) -> list[str]:
    """Delete the AMIs (with their snapshots), snapshots and build instances of one run
    (see `run_resources`); returns the ids removed. Safe to run again after a failure:
    the snapshots of an AMI deregistered before it are found by `orphaned_snapshots`."""
    found = run_resources(ec2, cfg, run_id, run_hash, named_before)
    orphans = orphaned_snapshots(ec2)
    delete_orphaned_snapshots(ec2, orphans)
    removed: list[str] = sorted(orphans)
    with aws_errors(f"removing what the failed {cfg.role} build left behind"):
        for ami_id, image in found.images.items():
            delete_image(ec2, image)
            removed += [ami_id, *snapshot_ids(image)]
        for snapshot in sorted(found.snapshots - set(removed)):
            delete_snapshot(ec2, snapshot)
            removed.append(snapshot)
        if found.instances:
            ec2.terminate_instances(InstanceIds=sorted(found.instances))
            removed += sorted(found.instances)
    return removed


def _clean_up_after_failure(
    ec2: EC2Client, cfg: BakeryConfig, run_id: str, run_hash: str, named_before: frozenset[str]
) -> None:
    try:
        removed = remove_run_leftovers(ec2, cfg, run_id, run_hash, named_before)
    except BakeryError as exc:
        say(
            f"[red]could not remove what the failed build left[/]: {exc}; it carries "
            f"{tags.RUN_ID}={run_id} (AMIs, snapshots, the build instance): remove those by hand"
        )
        return
    if removed:
        say(f"removed what the failed {cfg.role} build left: {', '.join(removed)}")


def image_tags(
    cfg: BakeryConfig,
    rendered: RenderedRole,
    inputs: RunInputs,
    run_id: str,
    image: ImageTypeDef,
    looked_up_source: str,
) -> dict[str, str]:
    """The full tag set of a freshly built image; Packer's own values win where it set them."""
    packer_set = tags.as_dict(image.get("Tags"))
    source = packer_set.get(tags.SOURCE_AMI, "")
    created = tags.parse_timestamp(image.get("CreationDate", "")) or tags.utc_now()
    return {
        **cfg.aws.tags,
        tags.ROLE: cfg.role,
        tags.OS: cfg.os,
        tags.ARCH: cfg.arch,
        tags.INPUTS_HASH: inputs.inputs_hash,
        tags.GIT_COMMIT: inputs.git_commit,
        tags.PACKER_VERSION: str(rendered.packer_version),
        # {{ .SourceAMI }} is what Packer really launched; the look-up is a fallback.
        tags.SOURCE_AMI: source if source.startswith("ami-") else looked_up_source,
        tags.BUILD_TIME: packer_set.get(tags.BUILD_TIME) or created.strftime("%Y%m%d%H%M%S"),
        tags.STATUS: tags.BUILT,
        tags.RUN_ID: run_id,
    }


def build_on_aws(
    rendered: RenderedRole,
    cfg: BakeryConfig,
    *,
    inputs: RunInputs | None = None,
    packer: PackerRunner = stream_packer,
    records_dir: Path = RECORDS_DIR,
    clock: Callable[[], datetime] = tags.utc_now,
    ingress_cidr: str | None = None,
) -> ImageRecord:
    """Build one role's AMI with Packer and make it complete, or leave nothing behind."""
    if rendered.target != "aws" or rendered.role != cfg.role:
        raise BadInput(
            f"build_on_aws needs the aws rendering of {cfg.role}, got {rendered.target}/"
            f"{rendered.role}: run `invoke render --target aws --role {cfg.role}`"
        )
    region = cfg.aws.region
    ec2 = ec2_client(region)
    # Fail in seconds, naming the filter, rather than after Packer has started.
    source = find_source_image(ec2, cfg)
    check_instance_type(ec2, cfg)
    inputs = inputs or run_inputs(rendered, source["ImageId"])
    run_id = new_run_id()
    directory = rendered.directory
    manifest = directory / MANIFEST
    earlier = manifest_run_uuids(manifest)
    log_path = directory / PACKER_LOG
    named_before = images_named_like_run(ec2, cfg, inputs.inputs_hash)
    # Last before the try below, whose `finally` removes it.
    access = open_build_access(ec2, cfg, run_id, ingress_cidr, clock())
    var_file = write_var_file(
        directory / VAR_FILE,
        {"inputs_hash": inputs.inputs_hash, "git_commit": inputs.git_commit, "run_id": run_id}
        | access.packer_variables(),
    )
    say(f"building {cfg.role} in {region} from {source['ImageId']} ({source.get('Name', '')})")
    say(f"run id {run_id}: tagged {tags.RUN_ID} on what this run creates")
    try:
        packer(["build", "-color=false", f"-var-file={var_file.name}", "."], directory, log_path)
        run_uuid, ami_id = this_run_artifact(manifest, earlier, region)
        wait_available(ec2, [ami_id], region)
        with aws_errors(f"reading {ami_id}"):
            image = describe_image(ec2, ami_id)
        if image is None:
            raise OperationFailed(f"Packer reported {ami_id} but it does not exist in {region}")
        values = image_tags(cfg, rendered, inputs, run_id, image, source["ImageId"])
        tag_image(ec2, image, values)
        applied = apply_post_build_guarantees(ec2, ami_id, rendered.post_build, cfg, clock())
    except BaseException:
        _clean_up_after_failure(ec2, cfg, run_id, inputs.inputs_hash, named_before)
        raise
    finally:
        access.remove()
    record = ImageRecord(
        role=cfg.role,
        os=cfg.os,
        arch=cfg.arch,
        target="aws",
        image=ami_id,
        inputs_hash=inputs.inputs_hash,
        git_commit=inputs.git_commit,
        packer_version=str(rendered.packer_version),
        built_at=image.get("CreationDate", tags.timestamp(clock())),
        path=record_path(records_dir, cfg.role, ami_id),
        packer_log=str(log_path),
        details={
            "region": region,
            "ami_id": ami_id,
            "ami_name": image.get("Name", ""),
            "source_ami": values[tags.SOURCE_AMI],
            "packer_run_uuid": run_uuid,
            "run_id": run_id,
            "snapshot_ids": snapshot_ids(image),
            "post_build": list(applied),
            "tags": values,
            # The same collector's output as a local record's: `invoke diff` reads both.
            "manifest": read_image_manifest(directory),
        },
    )
    write_sbom(record)
    write_record(record)
    say(f"[green]built[/] {cfg.role}: {ami_id} in {region} (record {record.path})")
    return record
