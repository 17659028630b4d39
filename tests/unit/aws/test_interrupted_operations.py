"""Every multi-step AWS operation is safe to interrupt and re-run: the failure matrix.

Each scenario arranges a starting state in moto and runs one operation. At collection,
it runs once without failure, recording every AWS call bakery makes and the end state;
each recorded call becomes cases, so a call added to an operation is covered without
touching this file. In a case the operation runs with that one call failing (throttled
or denied, alternately; for a write also a reply lost after AWS applied it). It must
stop with a bakery error (exit 1) and, run again without failure, reach the end state
of the no-failure run (AMIs, snapshots, their tags and permissions, SSM parameters with
their history and labels, instances, key pairs, security groups; nothing left over);
or, having read back a write whose reply was lost, be in that end state already.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from bakery.aws import tags
from bakery.aws.build import remove_run_leftovers
from bakery.aws.build_access import open_build_access
from bakery.aws.canary import CANARY_LIFETIME, TelemetryClients, run_canary
from bakery.aws.clients import ec2_client
from bakery.aws.distribute import copy_to_regions, share_image
from bakery.aws.janitor import janitor
from bakery.aws.launch import ensure_security_group, example_user_data, read_user_data
from bakery.aws.prune import prune
from bakery.aws.release import release
from bakery.config import BakeryConfig
from bakery.errors import BadInput, BakeryError, OperationFailed

from .conftest import (
    DEBIAN_SOURCE,
    NOW,
    OTHER_REGION,
    REGION,
    clock,
    days_ago,
    make_config,
    make_image,
)
from .failure_double import DENIED, LOST_REPLY, THROTTLED, Call, fail_calls_double, hook_client
from .operations import OPERATIONS
from .test_build import INPUTS, copy_encrypted, launch_build_instance, make_build_image
from .test_canary import TelemetryStubs
from .test_janitor import leave_build_access, make_test_resources

SHARING = ("aws.share_accounts=['210987654321']", "aws.kms_key_id=alias/bakery-images")
RUN_ID = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Scenario:
    """A starting state and an operation run on it; `arrange` returns what `act` needs.
    `settle`, when given, is what recovers from what a failure may leave by design
    (an expiring test instance: the janitor), run before each end state is read."""

    regions: tuple[str, ...]
    arrange: Callable[[], dict[str, Any]]
    act: Callable[[dict[str, Any]], object]
    settle: Callable[[dict[str, Any]], object] | None = None


def _images(count: int, region: str = REGION, prefix: str = "image") -> list[str]:
    """Verified images, oldest first, one day apart, with names a state can go by."""
    return [
        make_image(region=region, created=days_ago(count - n), name=f"{prefix}-{n}")
        for n in range(count)
    ]


def _released(cfg: BakeryConfig, count: int) -> dict[str, Any]:
    amis = _images(count)
    for ami in amis:
        release(cfg, "production", ami, clock=clock())
    return {"cfg": cfg, "amis": amis}


def _arrange_release() -> dict[str, Any]:
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']", *SHARING)
    context = _released(cfg, 1)
    context["new"] = make_image(created=days_ago(0.5), name="image-new")
    return context


def _arrange_copies() -> dict[str, Any]:
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']", *SHARING)
    return {"cfg": cfg, "ami": _images(1)[0]}


def _arrange_share() -> dict[str, Any]:
    context = _arrange_copies()
    context["copies"] = copy_to_regions(context["cfg"], context["ami"])
    return context


def _arrange_prune() -> dict[str, Any]:
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    # Kept: promoted, in use, the newest; deleted: the oldest, and a rejected one.
    amis = _images(4)
    release(cfg, "production", amis[1], clock=clock())
    make_image(status=tags.REJECTED, created=days_ago(3), name="rejected")
    home = boto3.client("ec2", region_name=REGION)
    home.run_instances(ImageId=amis[2], MinCount=1, MaxCount=1)
    home.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": amis[0]})
    there = _images(3, OTHER_REGION, prefix="there")
    # In use in the copy region by a launch configuration: kept there.
    boto3.client("autoscaling", region_name=OTHER_REGION).create_launch_configuration(
        LaunchConfigurationName="web", ImageId=there[0], InstanceType="t3.micro"
    )
    return {"cfg": cfg}


def _arrange_janitor() -> dict[str, Any]:
    cfg = make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']")
    killed = NOW - timedelta(hours=7)  # past the build access's lifetime
    for n, region in enumerate((REGION, OTHER_REGION)):
        client = boto3.client("ec2", region_name=region)
        make_test_resources(client, "bakery-verify-old", "2030-01-15T11:00:00Z")
        make_test_resources(client, "bakery-verify-new", "2030-01-15T13:00:00Z")
        leave_build_access(region, f"{n}" * 32, killed)  # a killed build's: removed
    # An expired build access a live build instance still holds: kept.
    held = leave_build_access(REGION, "f" * 32, killed)
    boto3.client("ec2", region_name=REGION).run_instances(
        ImageId=DEBIAN_SOURCE,
        MinCount=1,
        MaxCount=1,
        KeyName=held["key-pair"],
        SecurityGroupIds=[held["security-group"]],
    )
    return {"cfg": cfg}


def _arrange_build_leftovers() -> dict[str, Any]:
    home = boto3.client("ec2", region_name=REGION)
    instance = launch_build_instance(home, RUN_ID)
    tagged = make_build_image(home, instance, RUN_ID)
    make_build_image(home, instance, None, name_time="20300115110000")
    copy_encrypted(home, tagged, name_time="20300115120000")
    return {"cfg": make_config("backend")}


def _arrange_build_access() -> dict[str, Any]:
    """A build's key pair and group, as the build leaves them for its clean-up."""
    cfg = make_config("backend")
    access = open_build_access(ec2_client(REGION), cfg, RUN_ID, "198.51.100.4", NOW)
    return {"access": access}


def _remove_build_access(context: dict[str, Any]) -> None:
    left = context["access"].remove()  # names what is left rather than raising
    if left:
        raise OperationFailed("; ".join(left))


def _arrange_canary() -> dict[str, Any]:
    cfg = make_config("backend")
    make_image("backend", name="released")  # a name, for the end state to go by
    release(cfg, "staging", clock=clock())
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="bakery-backend", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="bakery-backend")
    iam.add_role_to_instance_profile(
        InstanceProfileName="bakery-backend", RoleName="bakery-backend"
    )
    return {"cfg": cfg, "user_data": read_user_data(example_user_data("backend"))}


def _telemetry_arrived(region: str) -> TelemetryClients:
    """Application Signals, CloudWatch and X-Ray (which moto lacks or holds nothing in)
    through botocore's Stubber, answering that everything arrived; their calls go
    through the failure double like bakery's own clients'."""
    stubs = TelemetryStubs()
    stubs.everything()
    for client, service in zip(
        stubs.clients.__dict__.values(), ("application-signals", "cloudwatch", "xray"), strict=True
    ):
        hook_client(client, service, region)
    for stubber in stubs.stubbers:
        stubber.activate()
    return stubs.clients


def _run_canary(context: dict[str, Any], environment: str = "staging", **options: Any) -> object:
    return run_canary(
        context["cfg"],
        environment,
        context["user_data"],
        clients=_telemetry_arrived,
        clock=clock(),
        sleep=lambda _seconds: None,
        **options,
    )


def _arrange_canary_reuse() -> dict[str, Any]:
    """An instance of the released AMI already running with the role's user data, tagged
    as bakery's launch template tags what it launches (role and environment)."""
    context = _arrange_canary()
    home = boto3.client("ec2", region_name=REGION)
    image = home.describe_images(Filters=[{"Name": "name", "Values": ["released"]}])["Images"][0]
    launched_tags = [
        {"Key": tags.ROLE, "Value": "backend"},
        {"Key": tags.ENVIRONMENT, "Value": "staging"},
    ]
    context["instance"] = home.run_instances(
        ImageId=image["ImageId"],
        MinCount=1,
        MaxCount=1,
        UserData=context["user_data"].decode(),
        TagSpecifications=[{"ResourceType": "instance", "Tags": launched_tags}],
    )["Instances"][0]["InstanceId"]
    return context


def _canary_where_nothing_was_released(context: dict[str, Any]) -> None:
    """Its outcome is bad input (exit 2), found by reads alone: a failed read is exit 1
    and changes nothing, and the re-run gives the bad input again."""
    try:
        _run_canary(context, "production")
    except BadInput:
        return
    raise AssertionError("a canary of an environment nothing was released to ran")


SCENARIOS: dict[str, Scenario] = {
    "release": Scenario(
        (REGION, OTHER_REGION),
        _arrange_release,
        lambda c: release(c["cfg"], "production", c["new"], clock=clock()),
    ),
    "rollback": Scenario(
        (REGION, OTHER_REGION),
        lambda: _released(make_config("backend", f"aws.copy_regions=['{OTHER_REGION}']"), 3),
        lambda c: release(c["cfg"], "production", rollback=True, clock=clock()),
    ),
    "copy": Scenario(
        (REGION, OTHER_REGION),
        _arrange_copies,
        lambda c: copy_to_regions(c["cfg"], c["ami"]),
    ),
    "share": Scenario(
        (REGION, OTHER_REGION),
        _arrange_share,
        lambda c: share_image(c["cfg"], c["ami"], c["copies"]),
    ),
    "prune": Scenario(
        (REGION, OTHER_REGION),
        _arrange_prune,
        lambda c: prune([c["cfg"]], keep=1, apply=True, clock=clock()),
    ),
    "janitor": Scenario(
        (REGION, OTHER_REGION),
        _arrange_janitor,
        lambda c: janitor([c["cfg"]], apply=True, clock=clock()),
    ),
    "build-clean-up": Scenario(
        (REGION,),
        _arrange_build_leftovers,
        lambda c: remove_run_leftovers(
            ec2_client(REGION), c["cfg"], RUN_ID, INPUTS.inputs_hash, frozenset()
        ),
    ),
    "build-access-removal": Scenario((REGION,), _arrange_build_access, _remove_build_access),
    "launch-template": Scenario(
        (REGION,),
        lambda: {"cfg": make_config("backend")},
        lambda c: ensure_security_group(c["cfg"], "staging"),
    ),
    "canary-reusing-an-instance": Scenario(
        (REGION,),
        _arrange_canary_reuse,
        lambda c: _run_canary(c, instance_id=c["instance"]),
    ),
    "canary-of-an-unreleased-environment": Scenario(
        (REGION,), _arrange_canary, _canary_where_nothing_was_released
    ),
    "canary": Scenario(
        (REGION,),
        _arrange_canary,
        _run_canary,
        # A canary instance a failed terminate leaves expires: the janitor's, then.
        settle=lambda c: janitor([c["cfg"]], apply=True, clock=clock(NOW + CANARY_LIFETIME)),
    ),
}


# --- the end state, with AWS's random ids replaced by names that do not change ---

_ID = re.compile(r"\b(ami|snap|i|sg|vol|key|eni)-[0-9a-f]{8,17}\b")


_NEW_CLIENT = boto3.client


@functools.cache
def _client(service: str, region: str) -> Any:
    """One client per service and region for arranging and reading the state: building
    one costs more than the calls made with it, and moto answers it across resets."""
    return _NEW_CLIENT(service, region_name=region)


@contextmanager
def arranging() -> Iterator[None]:
    """What a scenario arranges, with cached clients (conftest's helpers build one per
    call) and bakery's through the double, failing nothing."""
    with (
        mock.patch.object(
            boto3, "client", lambda service, region_name: _client(service, region_name)
        ),
        fail_calls_double(),
    ):
        yield


def _ssm_state(region: str) -> dict[str, Any]:
    ssm = _client("ssm", region)
    state: dict[str, Any] = {}
    for page in ssm.get_paginator("describe_parameters").paginate():
        for parameter in page["Parameters"]:
            name = parameter["Name"]
            history = ssm.get_parameter_history(Name=name)["Parameters"]
            state[f"{region} parameter {name}"] = [
                (h["Version"], h["Value"], sorted(h.get("Labels", [])), h.get("Description", ""))
                for h in history
            ]
    return state


def _ec2_state(region: str, names: dict[str, str]) -> dict[str, Any]:
    """What the operations change in EC2; fills `names` with {id: stable name}."""
    ec2 = _client("ec2", region)
    state: dict[str, Any] = {}
    behind: set[str] = set()
    for image in ec2.describe_images(Owners=["self"])["Images"]:
        label = f"{region} image {image.get('Name')}"
        while label in state:  # two images of one name: a left-over copy
            label += "+"
        names[image["ImageId"]] = label
        snapshots = []
        for mapping in image.get("BlockDeviceMappings", []):
            if "SnapshotId" in mapping.get("Ebs", {}):
                snapshot = mapping["Ebs"]["SnapshotId"]
                names[snapshot] = f"{label} snapshot {mapping['DeviceName']}"
                behind.add(snapshot)
                snapshots.append(snapshot)
        permissions = ec2.describe_image_attribute(
            ImageId=image["ImageId"], Attribute="launchPermission"
        )["LaunchPermissions"]
        state[label] = {
            "state": image.get("State"),
            "description": image.get("Description"),
            "imds": image.get("ImdsSupport"),
            "tags": tags.as_dict(image.get("Tags")),
            "launch permissions": sorted(map(str, permissions)),
            "snapshots": snapshots,
        }
    # Snapshots no image of ours uses (moto's catalogue has some) have no stable name:
    # they are compared as a bag.
    unused = state.setdefault(f"{region} snapshots no image of ours uses", [])
    for snapshot in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
        snapshot_id = snapshot["SnapshotId"]
        found = {
            "tags": tags.as_dict(snapshot.get("Tags")),
            "description": snapshot.get("Description"),
        }
        if snapshot_id in behind or found["tags"]:  # not one of moto's catalogue
            found["create volume permissions"] = sorted(
                map(
                    str,
                    ec2.describe_snapshot_attribute(
                        SnapshotId=snapshot_id, Attribute="createVolumePermission"
                    )["CreateVolumePermissions"],
                )
            )
        if snapshot_id in behind:
            state[names[snapshot_id]] = found
        else:
            unused.append(found)
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] == "terminated":
                continue  # holds nothing, and EC2 forgets it within the hour
            values = tags.as_dict(instance.get("Tags"))
            label = f"{region} instance {sorted(values.items())} from {instance['ImageId']}"
            names[instance["InstanceId"]] = label
            state.setdefault(label, []).append(instance["State"]["Name"])
    for pair in ec2.describe_key_pairs()["KeyPairs"]:
        state[f"{region} key pair {pair['KeyName']}"] = tags.as_dict(pair.get("Tags"))
    for group in ec2.describe_security_groups()["SecurityGroups"]:
        label = f"{region} security group {group['GroupName']}"
        names[group["GroupId"]] = label
        state[label] = tags.as_dict(group.get("Tags"))
    return state


def _named(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _ID.sub(lambda found: names.get(found.group(0), f"<{found.group(1)} gone>"), value)
    if isinstance(value, dict):
        return {_named(k, names): _named(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return sorted((_named(v, names) for v in value), key=repr)
    return value


def differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs, one line per resource, for an assertion message a person can read."""
    return [
        f"{key}: {found.get(key, '<absent>')} != {expected.get(key, '<absent>')}"
        for key in sorted(set(found) | set(expected))
        if found.get(key) != expected.get(key)
    ]


def end_state(regions: tuple[str, ...]) -> dict[str, Any]:
    names: dict[str, str] = {}
    state: dict[str, Any] = {}
    for region in regions:
        state.update(_ec2_state(region, names))
        state.update(_ssm_state(region))
    named: dict[str, Any] = _named(state, names)
    return named


# --- recording at collection, one case per call and kind of failure ---


@contextmanager
def offline_aws() -> Iterator[Any]:
    """moto with fake credentials, outside any fixture (collection runs before them)."""
    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    unset = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION")
    with mock.patch.dict(os.environ, fake):
        for name in unset:
            os.environ.pop(name, None)
        with mock_aws() as moto:
            yield moto


def settle(scenario: Scenario, context: dict[str, Any]) -> None:
    if scenario.settle is not None:
        scenario.settle(context)


@dataclass(frozen=True)
class Recording:
    calls: tuple[Call, ...]
    end_state: dict[str, Any]


RECORDINGS: dict[str, Recording] = {}


def recording(name: str) -> Recording:
    """The calls and end state of the scenario run without failure (once per session)."""
    if name not in RECORDINGS:
        scenario = SCENARIOS[name]
        with offline_aws():
            with arranging():
                context = scenario.arrange()
            with fail_calls_double() as double:
                scenario.act(context)
            settle(scenario, context)
            RECORDINGS[name] = Recording(tuple(double.calls), end_state(scenario.regions))
    return RECORDINGS[name]


@dataclass(frozen=True)
class Case:
    scenario: str
    index: int
    call: Call
    kind: str

    def __str__(self) -> str:
        return f"{self.scenario}-{self.index:02d}-{self.call}-{self.kind}"


def cases() -> list[Case]:
    found: list[Case] = []
    for name in SCENARIOS:
        for index, call in enumerate(recording(name).calls):
            # Throttling and AccessDenied take turns: both are refusals of the same call.
            found.append(Case(name, index, call, (THROTTLED, DENIED)[index % 2]))
            if call.writes:
                found.append(Case(name, index, call, LOST_REPLY))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        every = cases()
        metafunc.parametrize("case", every, ids=[str(case) for case in every])


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    with mock_aws() as started:
        yield started


# Scenarios of paths that only read: failing a read must still end in exit 1 and no change.
READ_ONLY = {"canary-reusing-an-instance", "canary-of-an-unreleased-environment"}


def test_every_operation_is_recorded_with_writes(aws: None) -> None:
    """The matrix is only as good as its recordings: each scenario must write, but those
    of read-only paths, which must not."""
    for name in SCENARIOS:
        writes = [str(call) for call in recording(name).calls if call.writes]
        assert bool(writes) != (name in READ_ONLY), f"{name} writes {writes}"


def test_operation_converges_after_a_failure_at_any_call(moto: Any, case: Case) -> None:
    scenario = SCENARIOS[case.scenario]
    moto.reset()
    with arranging():
        context = scenario.arrange()
    expected = recording(case.scenario).end_state
    try:
        with fail_calls_double(case.index, case.kind) as double:
            scenario.act(context)
    except BakeryError as failed:
        assert failed.exit_code == 1, f"not an operation failure: {failed}"
        with fail_calls_double():  # fails nothing
            scenario.act(context)
            settle(scenario, context)
        left = differences(end_state(scenario.regions), expected)
        assert not left, "the re-run did not converge:\n" + "\n".join(left)
    else:
        # Done despite the failure (it read back a write whose reply was lost): then
        # there must be nothing left to do, and nothing to re-run (a second rollback
        # is a rollback too).
        with fail_calls_double():
            settle(scenario, context)
        swallowed = differences(end_state(scenario.regions), expected)
        assert not swallowed, "a failure was swallowed:\n" + "\n".join(swallowed)
    assert double.failed == [case.call], "the operation's calls changed between runs"


# --- the audit: the matrix covers every call of every operation, wherever made ---


def matrix_calls() -> set[tuple[str, str, str]]:
    """(operation, service, action) of every call the matrix fails, each attributed to
    the operation on its stack (operations.py), as the recorder attributes them."""
    return {
        (call.operation_of, call.service, call.operation)
        for name in SCENARIOS
        for call in recording(name).calls
        if call.operation_of
    }


def test_the_matrix_has_a_scenario_for_every_multi_step_operation(aws: None) -> None:
    assert {operation for operation, _, _ in matrix_calls()} == OPERATIONS


def test_the_matrix_fails_every_call_each_operation_makes_in_any_test(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """Every AWS call bakery's operations make anywhere in the moto runs of
    tests/unit/aws (call_recorder.py) is one the matrix fails in that operation: a
    call added to an operation on a path no scenario takes fails here until a scenario
    takes it. (The canary's Application Signals, CloudWatch and X-Ray calls go through
    botocore's Stubber, not moto, so only the matrix's own run of them is recorded.)"""
    recorded = {
        (call["operation"], call["service"], call["action"])
        for call in recorded_calls
        if call["origin"] == "bakery" and call["operation"]
    }
    assert {operation for operation, _, _ in recorded} == OPERATIONS  # the recording sees all
    uncovered = sorted(recorded - matrix_calls())
    assert uncovered == [], "calls no scenario of the failure matrix fails:\n" + "\n".join(
        map(str, uncovered)
    )
