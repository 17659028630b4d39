"""arm64 (Graviton) beside x86_64 on the AWS side, on moto (issue #16): the source AMI
look-up, the instance type check, a build of every role from the rendered arm64
template, and one release, listing and retention per role and architecture."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from packer_hcl import variable_defaults

from bakery.aws import tags
from bakery.aws.build import build_on_aws
from bakery.aws.images import check_instance_type, find_source_image, list_images
from bakery.aws.launch import image_reference, template_name
from bakery.aws.prune import DELETE, KEEP, prune
from bakery.aws.release import parameter_name, release
from bakery.errors import BadInput
from bakery.inputs import RunInputs
from bakery.packer import PackerVersion
from bakery.records import LISTING_COLUMNS, listing_row
from bakery.render import RenderedRole, render_role

from .conftest import DEBIAN_SOURCE, REGION, clock, days_ago, image_tags, make_config, make_image

ARM64_SOURCE = "ami-0deb12000000000a4"  # the arm64 Debian image in tests/fixtures/aws/amis.json
INPUTS = RunInputs("feedfacecafebeef", "abc123def456")
RUNNER_ADDRESS = "198.51.100.4"


def _var_file_value(var_file: Path, name: str) -> str:
    for line in var_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return str(json.loads(value.strip()))
    raise AssertionError(f"no {name} in {var_file}")


class AmazonEbsDouble:
    """A test double of `packer build` with amazon-ebs, driven by the rendered template:
    it picks the newest image its source_ami_filter variables match and launches the
    template's instance type from it, makes the AMI and writes Packer's manifest."""

    def __init__(self) -> None:
        self.launched: list[dict[str, Any]] = []

    def __call__(self, args: list[str], cwd: Path, log_path: Path) -> None:
        log_path.write_text("amazon-ebs double\n")
        defaults = variable_defaults(cwd)
        var_file = cwd / args[2].removeprefix("-var-file=")
        ec2 = boto3.client("ec2", region_name=REGION)
        candidates = ec2.describe_images(
            Owners=defaults["source_ami_owners"],
            Filters=[
                {"Name": "name", "Values": [defaults["source_ami_name"]]},
                {"Name": "architecture", "Values": [defaults["source_ami_architecture"]]},
            ],
        )["Images"]
        source = max(candidates, key=lambda image: image["CreationDate"])
        run_id = _var_file_value(var_file, "run_id")
        instance = ec2.run_instances(
            ImageId=source["ImageId"],
            InstanceType=defaults["instance_type"],
            MinCount=1,
            MaxCount=1,
            KeyName=_var_file_value(var_file, "ssh_keypair_name"),
            SecurityGroupIds=[_var_file_value(var_file, "security_group_id")],
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": tags.as_list(
                        {tags.ROLE: defaults["role"], tags.PURPOSE: "build", tags.RUN_ID: run_id}
                    ),
                }
            ],
        )["Instances"][0]
        self.launched.append(instance)
        name = f"bakery-{defaults['role']}-debian12-{defaults['arch']}-20300115120000"
        ami = ec2.create_image(InstanceId=instance["InstanceId"], Name=name)["ImageId"]
        ec2.create_tags(
            Resources=[ami],
            Tags=tags.as_list(
                {tags.ROLE: defaults["role"], tags.RUN_ID: run_id, tags.ARCH: defaults["arch"]}
            ),
        )
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        (cwd / "manifest").mkdir(exist_ok=True)
        (cwd / "manifest" / "inventory.json").write_text(json.dumps({"files": {}}))
        run = str(uuid.uuid4())
        build = {"name": "image", "builder_type": "amazon-ebs", "packer_run_uuid": run}
        build["artifact_id"] = f"{REGION}:{ami}"
        (cwd / "packer-manifest.json").write_text(
            json.dumps({"builds": [build], "last_run_uuid": run})
        )


def _render(tmp_path: Path, role: str, *sets: str) -> RenderedRole:
    """The role's real aws rendering, without the post-build guarantees moto cannot
    apply (test_build.py checks those with botocore's Stubber)."""
    rendered = render_role(make_config(role, *sets), PackerVersion(1, 6, 6), tmp_path)
    return dataclasses.replace(rendered, post_build=())


def _arm64_image(role: str = "backend", **kwargs: Any) -> str:
    """A bakery image of `role` made from the arm64 source (make_image's are x86_64)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    instance = ec2.run_instances(
        ImageId=ARM64_SOURCE, InstanceType="t4g.small", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=instance, Name=f"bakery-{role}-arm64-{uuid.uuid4().hex[:8]}")
    ec2.terminate_instances(InstanceIds=[instance])
    values = {
        tags.ROLE: role,
        tags.OS: "debian12",
        tags.ARCH: "arm64",
        tags.STATUS: kwargs.get("status", tags.VERIFIED),
    }
    ec2.create_tags(Resources=[ami["ImageId"]], Tags=tags.as_list(values))
    if "created" in kwargs:
        from .conftest import set_creation_date

        set_creation_date(REGION, ami["ImageId"], kwargs["created"])
    return str(ami["ImageId"])


def test_source_ami_look_up_filters_on_the_configured_architecture(ec2: Any) -> None:
    assert find_source_image(ec2, make_config("backend"))["ImageId"] == DEBIAN_SOURCE
    arm64 = find_source_image(ec2, make_config("backend", "arch=arm64"))
    assert arm64["ImageId"] == ARM64_SOURCE
    assert arm64["Architecture"] == "arm64"


def test_instance_types_of_the_configured_architecture_pass(ec2: Any) -> None:
    for role in ("backend", "frontend", "database"):
        check_instance_type(ec2, make_config(role))
        check_instance_type(ec2, make_config(role, "arch=arm64"))


@pytest.mark.parametrize(
    ("arch", "wrong", "runs"), [("arm64", "t3.small", "x86_64"), ("x86_64", "t4g.small", "arm64")]
)
def test_an_instance_type_of_the_other_architecture_is_refused_naming_the_key(
    ec2: Any, arch: str, wrong: str, runs: str
) -> None:
    cfg = make_config("backend", f"arch={arch}", f"aws.instance_types.{arch}={wrong}")
    with pytest.raises(BadInput) as caught:
        check_instance_type(ec2, cfg)
    message = str(caught.value)
    assert f"aws.instance_types.{arch}" in message
    assert f"{wrong} runs {runs}, not {arch}" in message


def test_an_instance_type_ec2_does_not_have_is_refused(ec2: Any) -> None:
    cfg = make_config("backend", "arch=arm64", "aws.instance_types.arm64=t9g.nothing")
    with pytest.raises(BadInput, match=r"t9g\.nothing is not an instance type in us-east-1"):
        check_instance_type(ec2, cfg)


def test_a_mismatched_instance_type_stops_the_build_before_packer_runs(
    ec2: Any, tmp_path: Path
) -> None:
    sets = ("arch=arm64", "aws.instance_types.arm64=t3.small")
    packer = AmazonEbsDouble()
    with pytest.raises(BadInput, match=r"aws\.instance_types\.arm64"):
        build_on_aws(
            _render(tmp_path, "backend", *sets),
            make_config("backend", *sets),
            inputs=INPUTS,
            ingress_cidr=RUNNER_ADDRESS,
            packer=packer,
            records_dir=tmp_path / "records",
        )
    assert packer.launched == []
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": [tags.RUN_ID]}])[
            "SecurityGroups"
        ]
        == []
    )


@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_arm64_build_runs_graviton_from_the_arm64_source_and_records_arm64(
    ec2: Any, tmp_path: Path, role: str
) -> None:
    packer = AmazonEbsDouble()
    record = build_on_aws(
        _render(tmp_path, role, "arch=arm64"),
        make_config(role, "arch=arm64"),
        inputs=INPUTS,
        ingress_cidr=RUNNER_ADDRESS,
        packer=packer,
        records_dir=tmp_path / "records",
    )
    (instance,) = packer.launched
    assert instance["ImageId"] == ARM64_SOURCE
    assert instance["InstanceType"] == ("t4g.medium" if role == "database" else "t4g.small")
    (image,) = ec2.describe_images(ImageIds=[record.image])["Images"]
    assert image["Architecture"] == "arm64"
    assert image_tags(ec2, record.image)[tags.ARCH] == "arm64"
    assert record.arch == "arm64"
    saved = json.loads(record.path.read_text())
    assert saved["arch"] == "arm64" and saved["source_ami"] == ARM64_SOURCE


def test_each_architecture_is_released_to_its_own_parameter(ssm: Any) -> None:
    x86 = make_image("backend", created=days_ago(1))
    arm = _arm64_image("backend", created=days_ago(2))
    x86_cfg, arm_cfg = make_config("backend"), make_config("backend", "arch=arm64")
    assert parameter_name(x86_cfg, "staging") == "/bakery/images/staging/backend/ami-id"
    assert parameter_name(arm_cfg, "staging") == "/bakery/images/staging/backend/arm64/ami-id"
    # The newest verified image of the config's arch, not of the role: the x86_64 one
    # is newer, and the arm64 release still takes the arm64 image.
    assert release(arm_cfg, "staging", clock=clock()).ami_id == arm
    assert release(x86_cfg, "staging", clock=clock()).ami_id == x86
    value = ssm.get_parameter(Name="/bakery/images/staging/backend/arm64/ami-id")
    assert value["Parameter"]["Value"] == arm
    value = ssm.get_parameter(Name="/bakery/images/staging/backend/ami-id")
    assert value["Parameter"]["Value"] == x86
    assert template_name(arm_cfg, "staging") == "bakery-backend-staging-arm64"
    assert template_name(x86_cfg, "staging") == "bakery-backend-staging"
    assert image_reference(arm_cfg, "staging").endswith("/backend/arm64/ami-id")


def test_an_image_of_the_other_architecture_is_not_released(aws: None) -> None:
    arm = _arm64_image("backend")
    with pytest.raises(BadInput, match=f"{arm} is a arm64 image, not x86_64: add --set arch=arm64"):
        release(make_config("backend"), "staging", ami_id=arm, clock=clock())


def test_prune_keeps_the_newest_verified_per_role_and_architecture(ec2: Any) -> None:
    x86_new = make_image("backend", created=days_ago(1))
    x86_old = make_image("backend", created=days_ago(2))
    arm_new = _arm64_image("backend", created=days_ago(3))
    arm_old = _arm64_image("backend", created=days_ago(4))
    rows = {row.ami_id: row for row in prune([make_config("backend")], keep=1, clock=clock())}
    assert {ami: rows[ami].decision for ami in (x86_new, x86_old, arm_new, arm_old)} == {
        x86_new: KEEP,
        x86_old: DELETE,
        arm_new: KEEP,
        arm_old: DELETE,
    }
    assert rows[arm_new].arch == "arm64" and rows[x86_new].arch == "x86_64"


def test_images_lists_both_architectures_of_a_role_with_an_arch_column(aws: None) -> None:
    x86 = make_image("frontend")
    arm = _arm64_image("frontend")
    listed = {record.image: record for record in list_images([make_config("frontend")])}
    assert {listed[x86].arch, listed[arm].arch} == {"x86_64", "arm64"}
    column = LISTING_COLUMNS.index("arch")
    assert listing_row(listed[arm])[column] == "arm64"
