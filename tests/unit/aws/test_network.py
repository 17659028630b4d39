"""Deleting bakery's security groups and key pairs only while they exist
(bakery/aws/network.py), in moto: a delete is never sent again for one already gone,
since under the tag-scoped pipeline policy that is UnauthorizedOperation, not NotFound.
The group held by a just-terminated instance runs on botocore's Stubber (moto never
answers DependencyViolation)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from bakery.aws import tags
from bakery.aws.clients import ec2_client
from bakery.aws.network import (
    GROUP_DELETE_ATTEMPTS,
    GROUP_DELETE_DELAY_S,
    KEY_PAIR,
    SECURITY_GROUP,
    AccessKind,
    delete_while_it_exists,
)

from .conftest import REGION
from .failure_double import DENIED, LOST_REPLY, fail_calls_double

BAKERYS = [{"Key": tags.PURPOSE, "Value": "build"}]
KINDS = [SECURITY_GROUP, KEY_PAIR]
DELETE = {SECURITY_GROUP: "DeleteSecurityGroup", KEY_PAIR: "DeleteKeyPair"}


def make_bakerys(ec2: Any, kind: AccessKind) -> str:
    """A security group (its id) or key pair (its name) tagged as a build's."""
    spec = [{"ResourceType": kind, "Tags": BAKERYS}]
    if kind == KEY_PAIR:
        ec2.create_key_pair(KeyName="bakery-build-backend-0123", TagSpecifications=spec)
        return "bakery-build-backend-0123"
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    return str(
        ec2.create_security_group(
            GroupName="bakery-build-backend-0123",
            Description="build",
            VpcId=vpc,
            TagSpecifications=spec,
        )["GroupId"]
    )


def exists(ec2: Any, kind: AccessKind, resource_id: str) -> bool:
    if kind == KEY_PAIR:
        return resource_id in {pair["KeyName"] for pair in ec2.describe_key_pairs()["KeyPairs"]}
    groups = ec2.describe_security_groups()["SecurityGroups"]
    return resource_id in {group["GroupId"] for group in groups}


@pytest.mark.parametrize("kind", KINDS)
def test_an_existing_resource_is_deleted(ec2: Any, kind: AccessKind) -> None:
    resource_id = make_bakerys(ec2, kind)
    delete_while_it_exists(ec2_client(REGION), kind, resource_id)
    assert not exists(ec2, kind, resource_id)


@pytest.mark.parametrize("kind", KINDS)
def test_a_resource_already_gone_gets_no_delete_sent_again(ec2: Any, kind: AccessKind) -> None:
    resource_id = make_bakerys(ec2, kind)
    with fail_calls_double() as double:
        delete_while_it_exists(ec2_client(REGION), kind, resource_id)
        delete_while_it_exists(ec2_client(REGION), kind, resource_id)  # a re-run
    sent = [call.operation for call in double.calls if call.writes]
    assert sent == [DELETE[kind]]
    assert not exists(ec2, kind, resource_id)


@pytest.mark.parametrize("kind", KINDS)
def test_a_delete_whose_reply_was_lost_is_read_back_as_done(ec2: Any, kind: AccessKind) -> None:
    """The reply is lost after EC2 applied the delete: the read-back finds it gone."""
    resource_id = make_bakerys(ec2, kind)
    with fail_calls_double(kind=LOST_REPLY, fail_at={DELETE[kind]}) as double:
        delete_while_it_exists(ec2_client(REGION), kind, resource_id)
    assert [call.operation for call in double.failed] == [DELETE[kind]]
    assert not exists(ec2, kind, resource_id)


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_delete_of_a_resource_still_there_raises(ec2: Any, kind: AccessKind) -> None:
    resource_id = make_bakerys(ec2, kind)
    with (
        fail_calls_double(kind=DENIED, fail_at={DELETE[kind]}),
        pytest.raises(botocore.exceptions.ClientError, match="UnauthorizedOperation"),
    ):
        delete_while_it_exists(ec2_client(REGION), kind, resource_id)
    assert exists(ec2, kind, resource_id)


GROUP = "sg-0a1b2c3d4e5f60718"
FOUND = {"SecurityGroups": [{"GroupId": GROUP}]}
BY_ID = {"Filters": [{"Name": "group-id", "Values": [GROUP]}]}


def test_a_group_a_terminating_instance_still_holds_is_waited_for() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    waited: list[float] = []
    with Stubber(ec2) as stub:
        stub.add_response("describe_security_groups", FOUND, BY_ID)
        for _ in range(2):
            stub.add_client_error(
                "delete_security_group", "DependencyViolation", expected_params={"GroupId": GROUP}
            )
        stub.add_response("delete_security_group", {}, {"GroupId": GROUP})
        delete_while_it_exists(ec2, SECURITY_GROUP, GROUP, sleep=waited.append)
        stub.assert_no_pending_responses()
    assert waited == [GROUP_DELETE_DELAY_S, GROUP_DELETE_DELAY_S]


def test_a_group_held_past_every_attempt_raises_the_dependency_violation() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    with Stubber(ec2) as stub:
        stub.add_response("describe_security_groups", FOUND, BY_ID)
        for _ in range(GROUP_DELETE_ATTEMPTS):
            stub.add_client_error("delete_security_group", "DependencyViolation")
        stub.add_response("describe_security_groups", FOUND, BY_ID)  # still there
        with pytest.raises(botocore.exceptions.ClientError, match="DependencyViolation"):
            delete_while_it_exists(ec2, SECURITY_GROUP, GROUP, sleep=lambda _seconds: None)
        stub.assert_no_pending_responses()
