"""Network access for the machines bakery starts on AWS (the build instance, the test
instance): the one address SSH may come from, the VPC they start in, and deleting the
security groups and key pairs made for them, only while they exist. Shared by the build
(bakery/aws/build_access.py), verification and the janitor."""

from __future__ import annotations

import ipaddress
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import botocore.exceptions

from bakery.aws.clients import aws_errors, error_code
from bakery.config import BakeryConfig
from bakery.errors import BadInput

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

# The kinds of resource bakery makes to reach its build and test instances, as EC2
# names them in TagSpecifications.
AccessKind = Literal["security-group", "key-pair"]
SECURITY_GROUP: AccessKind = "security-group"
KEY_PAIR: AccessKind = "key-pair"
GROUP_DELETE_ATTEMPTS = 12
GROUP_DELETE_DELAY_S = 10.0
CHECKIP_URL = "https://checkip.amazonaws.com"


def ingress_cidr_for(address: str | None) -> str:
    """The /32 (or /128) SSH may come from: the given address or this machine's public one."""
    if address is None:
        try:
            with urllib.request.urlopen(CHECKIP_URL, timeout=10) as response:
                address = response.read().decode().strip()
        except OSError as exc:
            raise BadInput(
                f"cannot find this machine's public address ({exc}): pass the runner's "
                "address (ingress_cidr), or configure aws.security_group_id"
            ) from exc
    try:
        network = ipaddress.ip_network(address, strict=True)
    except ValueError as exc:
        raise BadInput(f"ingress address {address!r} is not an IP address: {exc}") from exc
    if network.num_addresses != 1:
        raise BadInput(f"ingress {address} is a range: SSH is only opened to one address (/32)")
    return str(network)


def _security_group_exists(ec2: EC2Client, group_id: str) -> bool:
    # A filter, not GroupIds: asking for a group by id that is gone is an error.
    found = ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return bool(found["SecurityGroups"])


def _key_pair_exists(ec2: EC2Client, key_name: str) -> bool:
    found = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_name]}])
    return bool(found["KeyPairs"])


def _delete_security_group(ec2: EC2Client, group_id: str) -> None:
    ec2.delete_security_group(GroupId=group_id)


def _delete_key_pair(ec2: EC2Client, key_name: str) -> None:
    ec2.delete_key_pair(KeyName=key_name)


_EXISTS_AND_DELETE: dict[
    AccessKind, tuple[Callable[[EC2Client, str], bool], Callable[[EC2Client, str], None]]
] = {
    SECURITY_GROUP: (_security_group_exists, _delete_security_group),
    KEY_PAIR: (_key_pair_exists, _delete_key_pair),
}


def delete_while_it_exists(
    ec2: EC2Client,
    kind: AccessKind,
    resource_id: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Delete one of bakery's tagged security groups (by id) or key pairs (by name),
    only while it exists: one already gone is left alone.

    The pipeline policy lets bakery delete only what carries its tags, and IAM sees no
    tags on a resource that is gone: a delete sent again for it (a re-run after a reply
    lost on its way back, or botocore's own retry of that request) is
    UnauthorizedOperation, not NotFound. So it looks before deleting, and after a failed
    delete looks again: gone is deleted. A group that a just-terminated instance still
    holds (DependencyViolation) is waited for."""
    exists, delete = _EXISTS_AND_DELETE[kind]
    if not exists(ec2, resource_id):
        return
    attempt = 1
    while True:
        try:
            delete(ec2, resource_id)
            return
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            held = (
                isinstance(exc, botocore.exceptions.ClientError)
                and error_code(exc) == "DependencyViolation"
            )
            if held and attempt < GROUP_DELETE_ATTEMPTS:
                attempt += 1
                sleep(GROUP_DELETE_DELAY_S)
                continue
            if exists(ec2, resource_id):
                raise
            return


def vpc_for(ec2: EC2Client, cfg: BakeryConfig, machine: str) -> str:
    """The VPC `machine` (the build or the test instance) starts in: its subnet's, else the
    region's default VPC."""
    with aws_errors(f"finding the VPC for {machine}"):
        if cfg.aws.subnet_id:
            subnets = ec2.describe_subnets(SubnetIds=[cfg.aws.subnet_id])["Subnets"]
            return subnets[0]["VpcId"]
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise BadInput(
            f"{cfg.aws.region} has no default VPC: set aws.subnet_id (and optionally "
            f"aws.security_group_id) for {machine}"
        )
    return vpcs[0]["VpcId"]
