"""The build instance's key pair and security group: made by bakery before Packer runs,
tagged as they are created, handed to Packer, and removed after the build however it
ends (failure and Ctrl-C included).

Left to itself, Packer's amazon-ebs makes a temporary key pair and security group and
never tags them, so the pipeline policy would have to let it open and delete any
untagged group and key pair. Made here, both carry `bakery:purpose=build` and the run
id from their creation, and IAM holds every change to groups and key pairs to bakery's
own. SSH is opened to the runner's address only (as for verification's test instance);
with `aws.security_group_id` configured, that group is used and none is made.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions

from bakery.aws import tags
from bakery.aws.clients import aws_errors
from bakery.aws.network import (
    KEY_PAIR,
    SECURITY_GROUP,
    delete_while_it_exists,
    ingress_cidr_for,
    vpc_for,
)
from bakery.aws.progress import INSTANCE_WAIT, say, waiting
from bakery.config import BakeryConfig
from bakery.errors import BakeryError, MissingTool

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import IpPermissionTypeDef, TagSpecificationTypeDef

BUILD = "build"
_AWS_FAILURES = (BakeryError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
# Longer than any build: what a killed run leaves is recognisably stale after this.
BUILD_ACCESS_LIFETIME = timedelta(hours=6)


def _tag_spec(kind: ResourceTypeType, values: dict[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": kind, "Tags": tags.as_list(values)}


@dataclass
class BuildAccess:
    """One run's key pair (private half in a local temporary folder) and group."""

    ec2: EC2Client
    region: str
    key_name: str = ""
    private_key_file: Path | None = None
    security_group_id: str = ""
    created_group: bool = False
    sleep: Callable[[float], None] = time.sleep
    _folder: Path | None = field(default=None, repr=False)

    def packer_variables(self) -> dict[str, str]:
        """What the run's var file passes to Packer (packer/variables.pkr.hcl.j2)."""
        return {
            "ssh_keypair_name": self.key_name,
            "ssh_private_key_file": str(self.private_key_file or ""),
            "security_group_id": self.security_group_id,
        }

    def remove(self) -> list[str]:
        """Delete the group (once no instance uses it) and the key pair; never raises for
        AWS errors, it names what is left instead. Returns what could not be removed."""
        left: list[str] = []
        if self.created_group and self.security_group_id:
            try:
                self._wait_for_instances_to_leave_group()
                delete_while_it_exists(self.ec2, SECURITY_GROUP, self.security_group_id, self.sleep)
                self.created_group = False
            except _AWS_FAILURES as exc:
                left.append(f"security group {self.security_group_id}: {exc}")
        if self.key_name:
            try:
                delete_while_it_exists(self.ec2, KEY_PAIR, self.key_name)
                self.key_name = ""
            except _AWS_FAILURES as exc:
                left.append(f"key pair {self.key_name}: {exc}")
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if left:
            say(
                f"[red]could not remove the build's access in {self.region}[/]: "
                f"{'; '.join(left)}; they are tagged {tags.PURPOSE}={BUILD}: "
                "`invoke janitor --apply` removes them once they expire "
                f"({BUILD_ACCESS_LIFETIME.total_seconds() / 3600:g} h after the build began)"
            )
        return left

    def _wait_for_instances_to_leave_group(self) -> None:
        """The build instance (terminated by Packer or the failed-build clean-up) holds
        the group until it is gone."""
        found = self.ec2.describe_instances(
            Filters=[
                {"Name": "instance.group-id", "Values": [self.security_group_id]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "shutting-down", "stopping", "stopped"],
                },
            ]
        )
        ids = [i["InstanceId"] for r in found["Reservations"] for i in r.get("Instances", [])]
        if ids:
            with waiting(f"build instance(s) {', '.join(ids)} to terminate"):
                self.ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=ids, WaiterConfig=INSTANCE_WAIT
                )


def _import_key_pair(access: BuildAccess, name: str, values: dict[str, str]) -> None:
    if shutil.which("ssh-keygen") is None:
        raise MissingTool("ssh-keygen", "install openssh-client")
    access._folder = Path(tempfile.mkdtemp(prefix="bakery-build-"))
    key = access._folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    access.private_key_file = key
    with aws_errors(f"importing the build's key pair {name}"):
        access.ec2.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=key.with_suffix(".pub").read_bytes(),
            TagSpecifications=[_tag_spec("key-pair", values)],
        )
    access.key_name = name


def _create_group(
    access: BuildAccess, cfg: BakeryConfig, name: str, cidr: str, values: dict[str, str]
) -> None:
    vpc_id = vpc_for(access.ec2, cfg, "the build instance")
    with aws_errors(f"creating the build's security group {name}"):
        access.security_group_id = access.ec2.create_security_group(
            GroupName=name,
            Description=f"bakery: SSH to the {cfg.role} build instance from the runner only",
            VpcId=vpc_id,
            TagSpecifications=[_tag_spec("security-group", values)],
        )["GroupId"]
        access.created_group = True
        rule: IpPermissionTypeDef = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
        if ":" in cidr:
            rule["Ipv6Ranges"] = [{"CidrIpv6": cidr}]
        else:
            rule["IpRanges"] = [{"CidrIp": cidr}]
        access.ec2.authorize_security_group_ingress(
            GroupId=access.security_group_id, IpPermissions=[rule]
        )


def open_build_access(
    ec2: EC2Client,
    cfg: BakeryConfig,
    run_id: str,
    ingress_cidr: str | None,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> BuildAccess:
    """Make the run's key pair and (unless configured) security group, tagged at
    creation; on any failure, Ctrl-C included, remove what was made and re-raise."""
    # The address first: a bad one fails before anything is created.
    cidr = None if cfg.aws.security_group_id else ingress_cidr_for(ingress_cidr)
    name = f"bakery-build-{cfg.role}-{run_id[:12]}"
    values = {
        **cfg.aws.tags,
        "Name": name,
        tags.ROLE: cfg.role,
        tags.PURPOSE: BUILD,
        tags.RUN_ID: run_id,
        tags.EXPIRES_AT: tags.timestamp(now + BUILD_ACCESS_LIFETIME),
    }
    access = BuildAccess(ec2, cfg.aws.region, sleep=sleep)
    try:
        _import_key_pair(access, name, values)
        if cidr is None:
            access.security_group_id = str(cfg.aws.security_group_id)
        else:
            _create_group(access, cfg, name, cidr, values)
    except BaseException:
        access.remove()
        raise
    say(f"build access: key pair {access.key_name}, security group {access.security_group_id}")
    return access
