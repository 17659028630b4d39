"""The build's own key pair and security group (bakery/aws/build_access.py), in moto:
made tagged before Packer runs, used by the build instance, SSH open to the runner only,
and gone after the build however it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bakery.aws import tags
from bakery.aws.build import build_on_aws
from bakery.errors import BadInput, OperationFailed

from .conftest import make_config
from .test_build import INPUTS, RUNNER_ADDRESS, FakePacker, rendered


def bakery_build_access(ec2: Any) -> dict[str, list[dict[str, Any]]]:
    """Key pairs and groups tagged as a build's."""
    build: list[Any] = [{"Name": f"tag:{tags.PURPOSE}", "Values": ["build"]}]
    return {
        "key pairs": ec2.describe_key_pairs(Filters=build)["KeyPairs"],
        "groups": ec2.describe_security_groups(Filters=build)["SecurityGroups"],
    }


class SeesBuildAccess:
    """Runs while the build instance is up: what key pair and group it has."""

    def __init__(self) -> None:
        self.access: dict[str, list[dict[str, Any]]] = {}
        self.instance: dict[str, Any] = {}

    def __call__(self, ec2: Any) -> None:
        self.access = bakery_build_access(ec2)
        reservations = ec2.describe_instances(
            Filters=[{"Name": f"tag:{tags.PURPOSE}", "Values": ["build"]}]
        )["Reservations"]
        self.instance = reservations[-1]["Instances"][0]


def build(
    tmp_path: Path, packer: FakePacker, *overrides: str, ingress: str = RUNNER_ADDRESS
) -> Any:
    return build_on_aws(
        rendered(tmp_path),
        make_config("backend", *overrides),
        inputs=INPUTS,
        ingress_cidr=ingress,
        packer=packer,
        records_dir=tmp_path / "records",
    )


def test_build_instance_uses_bakerys_tagged_key_pair_and_group_open_to_the_runner_only(
    ec2: Any, tmp_path: Path
) -> None:
    seen = SeesBuildAccess()
    packer = FakePacker(meanwhile=seen)
    record = build(tmp_path, packer)
    [pair], [group] = seen.access["key pairs"], seen.access["groups"]
    for resource in (pair, group):
        assert tags.as_dict(resource["Tags"])[tags.RUN_ID] == record.details["run_id"]
        assert tags.as_dict(resource["Tags"])[tags.ROLE] == "backend"
    assert seen.instance["KeyName"] == pair["KeyName"]
    assert [g["GroupId"] for g in seen.instance["SecurityGroups"]] == [group["GroupId"]]
    [rule] = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert rule["IpRanges"] == [{"CidrIp": f"{RUNNER_ADDRESS}/32"}]
    # Gone after the build, the private half too.
    assert bakery_build_access(ec2) == {"key pairs": [], "groups": []}
    assert packer.key_files and not packer.key_files[0].exists()


@pytest.mark.parametrize(
    "failure", [OperationFailed("packer build failed"), KeyboardInterrupt()], ids=str
)
def test_failed_or_interrupted_build_removes_its_key_pair_and_group(
    ec2: Any, tmp_path: Path, failure: BaseException
) -> None:
    seen = SeesBuildAccess()
    packer = FakePacker(fail=failure, meanwhile=seen)
    with pytest.raises(type(failure)):
        build(tmp_path, packer)
    assert len(seen.access["groups"]) == 1  # it was there while the instance ran
    assert bakery_build_access(ec2) == {"key pairs": [], "groups": []}
    assert not packer.key_files[0].exists()


def test_a_configured_group_is_used_and_kept_and_no_group_is_made(ec2: Any, tmp_path: Path) -> None:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    own = ec2.create_security_group(GroupName="ci-builds", Description="ours", VpcId=vpc)
    seen = SeesBuildAccess()
    build(tmp_path, FakePacker(meanwhile=seen), f"aws.security_group_id={own['GroupId']}")
    assert seen.access["groups"] == []
    assert len(seen.access["key pairs"]) == 1
    assert [g["GroupId"] for g in seen.instance["SecurityGroups"]] == [own["GroupId"]]
    assert ec2.describe_security_groups(GroupIds=[own["GroupId"]])["SecurityGroups"]
    assert bakery_build_access(ec2)["key pairs"] == []


def test_a_range_as_runner_address_fails_before_anything_is_made(ec2: Any, tmp_path: Path) -> None:
    packer = FakePacker()
    with pytest.raises(BadInput, match="range"):
        build(tmp_path, packer, ingress="0.0.0.0/0")
    assert packer.calls == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert bakery_build_access(ec2) == {"key pairs": [], "groups": []}
