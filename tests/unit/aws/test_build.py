"""build_on_aws with Packer replaced by a stand-in that does what amazon-ebs does in
moto (launch, create the image, tag it, append to the manifest).

moto does not implement EnableImageDeprecation and ignores ImdsSupport, so the
post-build guarantees are checked with botocore's Stubber in their own tests.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bakery.aws import tags
from bakery.aws.build import (
    apply_post_build_guarantees,
    build_on_aws,
    this_run_artifact,
)
from bakery.aws.images import delete_image
from bakery.errors import BadInput, OperationFailed
from bakery.inputs import RunInputs, inputs_hash
from bakery.packer import PackerVersion
from bakery.render import DEPRECATION, IMDSV2_ON_AMI, ORG_SHARING, RenderedRole

from .conftest import (
    DEBIAN_SOURCE,
    REGION,
    existing_snapshots,
    image_tags,
    make_config,
    snapshot_ids_of,
)

INPUTS = RunInputs("feedfacecafebeef", "abc123def456")
NAME_TIME = "20300115120000"  # Packer's build time, in the AMI name
RUNNER_ADDRESS = "198.51.100.4"
PACKER = PackerVersion(1, 6, 6)


def rendered(
    tmp_path: Path, role: str = "backend", post_build: tuple[str, ...] = ()
) -> RenderedRole:
    directory = tmp_path / "aws" / role
    (directory / "stage").mkdir(parents=True)
    (directory / "render.json").write_text(json.dumps({"role": role}) + "\n")
    return RenderedRole(role, "aws", directory, PACKER, post_build)


def run_id_in(var_file: Path) -> str:
    """The run id bakery passed to Packer, read as Packer would from the var file."""
    found = re.search(r'^run_id\s*=\s*"([0-9a-f]{32})"$', var_file.read_text(), re.M)
    assert found, f"no run_id in {var_file}"
    return found.group(1)


def packer_variable(var_file: Path, name: str) -> str:
    """A string variable bakery passed to Packer, read as Packer would from the var file."""
    found = re.search(rf'^{name}\s*=\s*"([^"]*)"$', var_file.read_text(), re.M)
    assert found, f"no {name} in {var_file}"
    return found.group(1)


def launch_build_instance(ec2: Any, run_id: str, var_file: Path | None = None) -> str:
    """A build instance as Packer's run_tags leave it, with the key pair and group
    bakery handed Packer in the var file (if given)."""
    build_tags = {tags.ROLE: "backend", tags.PURPOSE: "build", tags.RUN_ID: run_id}
    access: dict[str, Any] = {}
    if var_file is not None:
        access = {
            "KeyName": packer_variable(var_file, "ssh_keypair_name"),
            "SecurityGroupIds": [packer_variable(var_file, "security_group_id")],
        }
    return str(
        ec2.run_instances(
            ImageId=DEBIAN_SOURCE,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags.as_list(build_tags)}],
            **access,
        )["Instances"][0]["InstanceId"]
    )


def make_build_image(
    ec2: Any, instance: str, run_id: str | None, name_time: str = NAME_TIME
) -> str:
    """The AMI of a build, tagged as Packer tags it once available (not yet: None)."""
    ami = ec2.create_image(InstanceId=instance, Name=f"bakery-backend-debian12-x86_64-{name_time}")
    if run_id is not None:
        # Packer tags the AMI but (here) not its snapshot: bakery must re-tag both.
        ec2.create_tags(
            Resources=[ami["ImageId"]],
            Tags=tags.as_list(
                {
                    tags.ROLE: "backend",
                    tags.INPUTS_HASH: INPUTS.inputs_hash,
                    tags.SOURCE_AMI: DEBIAN_SOURCE,
                    tags.BUILD_TIME: name_time,
                    tags.RUN_ID: run_id,
                }
            ),
        )
    return str(ami["ImageId"])


class FakePacker:
    """Does in moto what `packer build` with amazon-ebs does, optionally failing.

    `meanwhile` runs while the build instance is up: what a concurrent build does.
    `tag_image=False` fails as a Packer stopped before the AMI was available would,
    leaving it without tags.
    """

    def __init__(
        self,
        fail: BaseException | None = None,
        write_manifest: bool = True,
        meanwhile: Callable[[Any], None] | None = None,
        tag_image: bool = True,
    ) -> None:
        self.fail = fail
        self.write_manifest = write_manifest
        self.meanwhile = meanwhile
        self.tag_image = tag_image
        self.calls: list[list[str]] = []
        self.run_ids: list[str] = []
        self.instances: list[str] = []
        self.images: list[str] = []
        self.key_files: list[Path] = []

    def __call__(self, args: list[str], cwd: Path, log_path: Path) -> None:
        self.calls.append(args)
        log_path.write_text("fake packer\n")
        var_file = cwd / args[2].removeprefix("-var-file=")
        run_id = run_id_in(var_file)
        self.run_ids.append(run_id)
        ec2 = boto3.client("ec2", region_name=REGION)
        self.key_files.append(Path(packer_variable(var_file, "ssh_private_key_file")))
        instance = launch_build_instance(ec2, run_id, var_file)
        self.instances.append(instance)
        if self.meanwhile is not None:
            self.meanwhile(ec2)
        ami = make_build_image(ec2, instance, run_id if self.tag_image else None)
        self.images.append(ami)
        if self.fail is not None:
            raise self.fail  # the instance stays running: cleanup must take it too
        ec2.terminate_instances(InstanceIds=[instance])
        # What Packer downloads after the record-manifest step, on every target.
        downloaded = cwd / "manifest"
        downloaded.mkdir(exist_ok=True)
        (downloaded / "manifest.json").write_text(json.dumps({"role": "backend"}))
        (downloaded / "inventory.json").write_text(json.dumps(BAKED_INVENTORY))
        if self.write_manifest:
            manifest = cwd / "packer-manifest.json"
            data = json.loads(manifest.read_text()) if manifest.exists() else {"builds": []}
            run = str(uuid.uuid4())
            data["builds"].append(
                {
                    "name": "image",
                    "builder_type": "amazon-ebs",
                    "artifact_id": f"{REGION}:{ami}",
                    "packer_run_uuid": run,
                    "custom_data": {"role": "backend"},
                }
            )
            data["last_run_uuid"] = run
            manifest.write_text(json.dumps(data))


BAKED_INVENTORY = {"enabled_units": ["fastapi-otel.service"], "files": {}, "users": []}


class ConcurrentRun:
    """Another build of the same role and inputs, started by someone else meanwhile.

    `tagged=False`: its Packer has not tagged its AMI yet."""

    run_id = "0123456789abcdef0123456789abcdef"
    instance = ""
    image = ""

    def __init__(self, tagged: bool = True) -> None:
        self.tagged = tagged

    def __call__(self, ec2: Any) -> None:
        self.instance = launch_build_instance(ec2, self.run_id)
        # A second later: EC2 refuses two AMIs of one name.
        tag = self.run_id if self.tagged else None
        self.image = make_build_image(ec2, self.instance, tag, "20300115120001")


def copy_encrypted(ec2: Any, ami: str, name_time: str = NAME_TIME) -> str:
    """What Packer 1.6 does with encrypt_boot: copy the AMI into the run's AMI name."""
    name = f"bakery-backend-debian12-x86_64-{name_time}"
    copy = ec2.copy_image(SourceImageId=ami, SourceRegion=REGION, Name=name, Encrypted=True)
    return str(copy["ImageId"])


class StoppedEncryptingPacker:
    """Packer 1.6 with encrypt_boot, stopped before it tagged any AMI.

    It made a randomly named AMI from the build instance and, when `copying`, had begun
    to copy it, encrypted, into one with the run's name. `graceful` is Ctrl-C: Packer's
    own clean-up terminated the instance and deleted the AMI a copy was made from, but
    not the AMI it was still waiting for. Otherwise it was killed and cleaned up nothing.
    """

    def __init__(self, copying: bool, graceful: bool) -> None:
        self.copying = copying
        self.graceful = graceful

    def __call__(self, args: list[str], cwd: Path, log_path: Path) -> None:
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_build_instance(ec2, run_id_in(cwd / args[2].removeprefix("-var-file=")))
        first = str(ec2.create_image(InstanceId=instance, Name="x7Kq2Pz")["ImageId"])
        if self.copying:
            copy_encrypted(ec2, first)
        if self.graceful:
            ec2.terminate_instances(InstanceIds=[instance])
            if self.copying:
                delete_image(ec2, ec2.describe_images(ImageIds=[first])["Images"][0])
        raise OperationFailed("packer build stopped")


def earlier_run(directory: Path) -> None:
    """A manifest from an earlier run, whose AMI must not be mistaken for this one."""
    (directory / "packer-manifest.json").write_text(
        json.dumps(
            {
                "builds": [
                    {
                        "artifact_id": f"{REGION}:ami-0000000000000000e",
                        "packer_run_uuid": "earlier-run",
                    }
                ],
                "last_run_uuid": "earlier-run",
            }
        )
    )


def own_images(ec2: Any) -> list[dict[str, Any]]:
    return list(ec2.describe_images(Owners=["self"])["Images"])


def test_build_tags_image_and_snapshots_and_writes_record(ec2: Any, tmp_path: Path) -> None:
    role = rendered(tmp_path, post_build=(IMDSV2_ON_AMI,))
    earlier_run(role.directory)
    packer = FakePacker()
    record = build_on_aws(
        role,
        make_config("backend"),
        inputs=INPUTS,
        ingress_cidr=RUNNER_ADDRESS,
        packer=packer,
        records_dir=tmp_path / "records",
    )
    assert packer.calls == [["build", "-color=false", "-var-file=run.pkrvars.hcl", "."]]
    var_file = role.directory / "run.pkrvars.hcl"
    passed = {
        name: packer_variable(var_file, name)
        for name in re.findall(r"^(\w+)\s*=", var_file.read_text(), re.M)
    }
    assert passed == {
        "git_commit": "abc123def456",
        "inputs_hash": "feedfacecafebeef",
        "run_id": record.details["run_id"],
        # bakery's own key pair and group (test_build_access.py), gone by now.
        "security_group_id": passed["security_group_id"],
        "ssh_keypair_name": f"bakery-build-backend-{record.details['run_id'][:12]}",
        "ssh_private_key_file": str(packer.key_files[0]),
    }
    assert passed["security_group_id"].startswith("sg-")
    assert packer.run_ids == [record.details["run_id"]] and len(record.details["run_id"]) == 32
    [image] = own_images(ec2)
    assert record.image == image["ImageId"] != "ami-0000000000000000e"
    expected = {
        tags.ROLE: "backend",
        tags.OS: "debian12",
        tags.ARCH: "x86_64",
        tags.INPUTS_HASH: INPUTS.inputs_hash,
        tags.GIT_COMMIT: INPUTS.git_commit,
        tags.PACKER_VERSION: "1.6.6",
        tags.SOURCE_AMI: DEBIAN_SOURCE,
        tags.BUILD_TIME: "20300115120000",
        tags.STATUS: "built",
        tags.RUN_ID: record.details["run_id"],
        "project": "bakery",
    }
    assert image_tags(ec2, record.image) == expected
    [snapshot] = record.details["snapshot_ids"]
    found = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]
    assert tags.as_dict(found["Tags"]) == expected
    saved = json.loads(record.path.read_text())
    assert record.path.name == f"backend-{record.image}.json"
    assert saved["source_ami"] == DEBIAN_SOURCE
    assert saved["status"] == "built"
    assert saved["post_build"] == [IMDSV2_ON_AMI]
    assert saved["packer_run_uuid"] != "earlier-run"
    assert saved["run_id"] == record.details["run_id"]
    # Read by the same code as a local record's, so `invoke diff` compares AMIs too.
    assert saved["manifest"]["inventory"] == BAKED_INVENTORY
    assert (record.path.parent / saved["sbom"]).is_file()


@pytest.mark.parametrize(
    "failure", [OperationFailed("packer build failed"), KeyboardInterrupt()], ids=["fail", "ctrl-c"]
)
def test_failed_build_leaves_no_image_snapshot_or_instance(
    ec2: Any, tmp_path: Path, failure: BaseException
) -> None:
    snapshots_before = existing_snapshots(ec2)
    with pytest.raises(type(failure)):
        build_on_aws(
            rendered(tmp_path),
            make_config("backend"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=FakePacker(fail=failure),
            records_dir=tmp_path / "records",
        )
    assert own_images(ec2) == []
    assert existing_snapshots(ec2) == snapshots_before
    states = {
        i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states == {"terminated"}
    assert not (tmp_path / "records").exists()


def test_success_without_a_manifest_entry_fails_and_cleans_up(ec2: Any, tmp_path: Path) -> None:
    role = rendered(tmp_path)
    earlier_run(role.directory)
    with pytest.raises(OperationFailed, match="recorded no artifact of this run"):
        build_on_aws(
            role,
            make_config("backend"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=FakePacker(write_manifest=False),
            records_dir=tmp_path,
        )
    assert own_images(ec2) == []


def test_cleanup_spares_images_of_earlier_runs(ec2: Any, tmp_path: Path) -> None:
    """Same role, same inputs, same name pattern, same second: only this run's image goes."""
    first = build_on_aws(
        rendered(tmp_path),
        make_config("backend"),
        inputs=INPUTS,
        ingress_cidr=RUNNER_ADDRESS,
        packer=FakePacker(),
        records_dir=tmp_path / "records",
    )
    with pytest.raises(OperationFailed):
        build_on_aws(
            rendered(tmp_path / "again"),
            make_config("backend"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=FakePacker(fail=OperationFailed("boom")),
            records_dir=tmp_path,
        )
    assert [image["ImageId"] for image in own_images(ec2)] == [first.image]
    assert set(first.details["snapshot_ids"]) <= existing_snapshots(ec2)


def instance_states(ec2: Any) -> dict[str, str]:
    return {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }


def failed_build(tmp_path: Path, packer: FakePacker) -> None:
    with pytest.raises(OperationFailed):
        build_on_aws(
            rendered(tmp_path),
            make_config("backend"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=packer,
            records_dir=tmp_path / "records",
        )


def test_failed_build_spares_a_concurrent_runs_build_instance(ec2: Any, tmp_path: Path) -> None:
    """Same role, purpose=build, launched during our run: only its run id differs."""
    other = ConcurrentRun()
    ours = FakePacker(fail=OperationFailed("boom"), meanwhile=other)
    failed_build(tmp_path, ours)
    states = instance_states(ec2)
    assert states[other.instance] == "running"
    assert states[ours.instances[0]] == "terminated"


def test_failed_build_spares_a_concurrent_runs_image_of_the_same_inputs(
    ec2: Any, tmp_path: Path
) -> None:
    """Same role, inputs hash and name pattern, created during our run, tagged its run id."""
    other = ConcurrentRun()
    ours = FakePacker(fail=OperationFailed("boom"), meanwhile=other)
    failed_build(tmp_path, ours)
    assert [image["ImageId"] for image in own_images(ec2)] == [other.image]
    assert set(snapshot_ids_of(ec2, other.image)) <= existing_snapshots(ec2)
    assert image_tags(ec2, other.image)[tags.RUN_ID] == other.run_id


def test_untagged_image_goes_by_the_build_instance_it_was_made_from(
    ec2: Any, tmp_path: Path
) -> None:
    """Packer stopped before tagging: our new AMI goes. The other run's, as new, as named
    and as untagged, was made from its own instance; so was one older than our run. Both
    stay."""
    older = make_build_image(ec2, launch_build_instance(ec2, "f" * 32), None, "20300101000000")
    other = ConcurrentRun(tagged=False)
    ours = FakePacker(fail=OperationFailed("killed"), meanwhile=other, tag_image=False)
    failed_build(tmp_path, ours)
    assert {image["ImageId"] for image in own_images(ec2)} == {older, other.image}
    assert tags.RUN_ID not in image_tags(ec2, other.image)


@pytest.mark.parametrize(
    ("copying", "graceful"),
    [(False, True), (True, False), (True, True)],
    ids=["ctrl-c-making-the-first-ami", "killed-while-copying", "ctrl-c-while-copying"],
)
def test_stopped_encrypted_build_leaves_none_of_its_untagged_images(
    ec2: Any, tmp_path: Path, copying: bool, graceful: bool
) -> None:
    """The first AMI has a random name and goes by its build instance, terminated or
    not; the copy has the run's name and no source instance, and goes by that name."""
    snapshots_before = existing_snapshots(ec2)
    failed_build(tmp_path, StoppedEncryptingPacker(copying, graceful))
    assert own_images(ec2) == []
    assert existing_snapshots(ec2) == snapshots_before
    assert set(instance_states(ec2).values()) == {"terminated"}


def test_unencrypted_build_spares_an_untagged_copy_named_like_its_images(
    ec2: Any, tmp_path: Path
) -> None:
    """Without encrypt_boot Packer makes no copy: an untagged copy named like our AMIs
    and new during our run is a concurrent encrypted run's."""
    theirs: list[str] = []

    def concurrent_encrypted_run(client: Any) -> None:
        instance = launch_build_instance(client, ConcurrentRun.run_id)
        first = str(client.create_image(InstanceId=instance, Name="Zr4m9Qa")["ImageId"])
        theirs.extend([first, copy_encrypted(client, first, "20300115120001")])

    with pytest.raises(OperationFailed):
        build_on_aws(
            rendered(tmp_path),
            make_config("backend", "aws.encrypt=false"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=FakePacker(fail=OperationFailed("boom"), meanwhile=concurrent_encrypted_run),
            records_dir=tmp_path / "records",
        )
    assert {image["ImageId"] for image in own_images(ec2)} == set(theirs)


def test_no_source_image_fails_before_packer_runs(aws: None, tmp_path: Path) -> None:
    packer = FakePacker()
    cfg = make_config("backend", "aws.source_images.debian12.x86_64.owners=['444455556666']")
    with pytest.raises(BadInput, match="no source AMI"):
        build_on_aws(
            rendered(tmp_path),
            cfg,
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=packer,
            records_dir=tmp_path,
        )
    assert packer.calls == []


def test_wrong_rendering_is_bad_input(aws: None, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="aws rendering of frontend"):
        build_on_aws(rendered(tmp_path), make_config("frontend"), inputs=INPUTS)


def test_manifest_selects_this_runs_artifact(tmp_path: Path) -> None:
    manifest = tmp_path / "packer-manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "builds": [
                    {"artifact_id": f"{REGION}:ami-0aaaaaaaaaaaaaaaa", "packer_run_uuid": "one"},
                    {
                        "artifact_id": (
                            f"{REGION}:ami-0bbbbbbbbbbbbbbbb,eu-west-1:ami-0cccccccccccccccc"
                        ),
                        "packer_run_uuid": "two",
                    },
                ],
                "last_run_uuid": "two",
            }
        )
    )
    assert this_run_artifact(manifest, {"one"}, REGION) == ("two", "ami-0bbbbbbbbbbbbbbbb")
    with pytest.raises(OperationFailed, match="no artifact of this run"):
        this_run_artifact(manifest, {"one", "two"}, REGION)


def test_inputs_hash_follows_content_not_run_outputs(tmp_path: Path) -> None:
    role = rendered(tmp_path)
    first = inputs_hash(role)
    (role.directory / "packer-manifest.json").write_text("{}")
    (role.directory / "packer.log").write_text("log")
    assert inputs_hash(role) == first
    (role.directory / "stage" / "bake.json").write_text("{}")
    assert inputs_hash(role) != first


def stubbed_ec2() -> tuple[Any, Stubber]:
    client = boto3.client("ec2", region_name=REGION)
    return client, Stubber(client)


def test_post_build_guarantees_are_applied_with_boto3() -> None:
    """Stubber: moto has no EnableImageDeprecation and does not keep ImdsSupport."""
    cfg = make_config(
        "backend",
        "aws.deprecate_after_days=30",
        "aws.share_org_arns=['arn:aws:organizations::111122223333:organization/o-abc123']",
    )
    now = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)
    ec2, stub = stubbed_ec2()
    ami = "ami-0123456789abcdef0"
    stub.add_response(
        "modify_image_attribute", {}, {"ImageId": ami, "ImdsSupport": {"Value": "v2.0"}}
    )
    stub.add_response(
        "enable_image_deprecation",
        {"Return": True},
        {"ImageId": ami, "DeprecateAt": now + timedelta(days=30)},
    )
    stub.add_response(
        "modify_image_attribute",
        {},
        {
            "ImageId": ami,
            "LaunchPermission": {
                "Add": [
                    {"OrganizationArn": "arn:aws:organizations::111122223333:organization/o-abc123"}
                ]
            },
        },
    )
    with stub:
        done = apply_post_build_guarantees(
            ec2, ami, (IMDSV2_ON_AMI, DEPRECATION, ORG_SHARING), cfg, now
        )
    stub.assert_no_pending_responses()
    assert done == [IMDSV2_ON_AMI, DEPRECATION, ORG_SHARING]


def test_failing_guarantee_is_an_operation_failure() -> None:
    ec2, stub = stubbed_ec2()
    stub.add_client_error("modify_image_attribute", "UnauthorizedOperation", "not allowed")
    with stub, pytest.raises(OperationFailed, match=r"imds_support.*UnauthorizedOperation"):
        apply_post_build_guarantees(
            ec2,
            "ami-0123456789abcdef0",
            (IMDSV2_ON_AMI,),
            make_config(),
            datetime.now(timezone.utc),
        )


def test_unknown_guarantee_is_not_silently_skipped() -> None:
    ec2, _ = stubbed_ec2()
    with pytest.raises(OperationFailed, match="does not know how to apply 'tpm_support'"):
        apply_post_build_guarantees(
            ec2,
            "ami-0123456789abcdef0",
            ("tpm_support",),
            make_config(),
            datetime.now(timezone.utc),
        )


def test_failed_guarantee_removes_the_image(
    ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guarantee that fails after the AMI exists (moto cannot deprecate) removes it."""
    role = rendered(tmp_path, post_build=(DEPRECATION,))

    def refuse(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        raise OperationFailed("applying deprecate_at: denied")

    monkeypatch.setattr("bakery.aws.build.apply_post_build_guarantees", refuse)
    with pytest.raises(OperationFailed, match="denied"):
        build_on_aws(
            role,
            make_config("backend"),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=FakePacker(),
            records_dir=tmp_path,
        )
    assert own_images(ec2) == []
