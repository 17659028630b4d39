"""Network access for the machines bakery starts on AWS (the build instance, the test
instance): the one address SSH may come from, and deleting the security groups made
for them. Shared by the build (bakery/aws/build_access.py) and verification."""

from __future__ import annotations

import ipaddress
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import botocore.exceptions

from bakery.aws.clients import aws_errors, error_code
from bakery.config import BakeryConfig
from bakery.errors import BadInput

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

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


def delete_security_group(
    ec2: EC2Client, group_id: str, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Delete a group, waiting out the DependencyViolation of a just-terminated instance.
    A group already gone is deleted: a retry after a reply lost on its way back finds it
    so."""
    for attempt in range(GROUP_DELETE_ATTEMPTS):
        try:
            ec2.delete_security_group(GroupId=group_id)
            return
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "InvalidGroup.NotFound":
                return
            if error_code(exc) != "DependencyViolation" or attempt == GROUP_DELETE_ATTEMPTS - 1:
                raise
            sleep(GROUP_DELETE_DELAY_S)


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
