"""Verification on a test instance, with the testinfra runner injected.

moto's instances have made-up addresses, so nothing here connects to them: the
runner is a function that records what it was given and answers pass or fail.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from bakery.aws import tags
from bakery.aws.pipeline import verify as verify_roles
from bakery.aws.verify import (
    InstanceUnderTest,
    ingress_cidr_for,
    summarise,
    verify_image,
)
from bakery.errors import BadInput, OperationFailed
from bakery.verify.suites import SuiteResult, failed_checks_from_junit

from .conftest import REGION, clock, image_tags, make_config, make_image, suite_outcome

RUNNER_ADDRESS = "203.0.113.7"


@pytest.fixture
def profile(aws: None) -> str:
    boto3.client("iam").create_instance_profile(InstanceProfileName="bakery-test-instance")
    return "bakery-test-instance"


class Runner:
    """Looks at the test instance through the EC2 API, then answers."""

    def __init__(self, outcome: SuiteResult | BaseException) -> None:
        self.outcome = outcome
        self.seen: list[InstanceUnderTest] = []
        self.instance: dict[str, Any] = {}
        self.group_rules: list[dict[str, Any]] = []
        self.key_pairs: list[str] = []

    def __call__(self, target: InstanceUnderTest) -> SuiteResult:
        ec2 = boto3.client("ec2", region_name=REGION)
        self.seen.append(target)
        reservation = ec2.describe_instances(InstanceIds=[target.instance_id])["Reservations"][0]
        self.instance = reservation["Instances"][0]
        groups = [g["GroupId"] for g in self.instance["SecurityGroups"]]
        self.group_rules = ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
        self.key_pairs = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
        assert target.key_file.exists() and target.key_file.stat().st_mode & 0o077 == 0
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def leftovers(ec2: Any) -> dict[str, list[str]]:
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[{"Name": f"tag:{tags.PURPOSE}", "Values": [tags.TEST_INSTANCE]}]
        )["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    groups = [
        g["GroupId"]
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] != "default"
    ]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    return {"instances": instances, "groups": groups, "keys": keys}


def run(tmp_path: Path, runner: Runner, ami: str | None = None, *overrides: str) -> Any:
    return verify_image(
        make_config("backend", *overrides),
        ami,
        runner=runner,
        ingress_cidr=RUNNER_ADDRESS,
        reports_dir=tmp_path / "reports",
        records_dir=tmp_path / "records",
        clock=clock(),
        sleep=lambda seconds: None,
    )


def test_launch_uses_imdsv2_profile_tags_and_a_32_only_group(
    ec2: Any, profile: str, tmp_path: Path
) -> None:
    ami = make_image(status=tags.BUILT)
    runner = Runner(suite_outcome(True))
    result = run(tmp_path, runner, None, f"aws.instance_profile={profile}")
    assert result.verified and result.ami_id == ami
    instance = runner.instance
    assert instance["ImageId"] == ami
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{profile}")
    instance_tags = tags.as_dict(instance["Tags"])
    assert instance_tags[tags.PURPOSE] == "test-instance"
    assert instance_tags[tags.EXPIRES_AT] == "2030-01-15T15:00:00Z"
    [group] = runner.group_rules
    [rule] = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert rule["IpRanges"] == [{"CidrIp": f"{RUNNER_ADDRESS}/32"}]
    assert tags.as_dict(group["Tags"])[tags.EXPIRES_AT] == "2030-01-15T15:00:00Z"
    [target] = runner.seen
    assert target.user == "admin" and target.host
    assert len(runner.key_pairs) == 1


def test_launch_time_settings_reach_the_instance_as_user_data(ec2: Any, tmp_path: Path) -> None:
    make_image(status=tags.BUILT)
    runner = Runner(suite_outcome(True))
    run(tmp_path, runner)
    [target] = runner.seen
    attribute = ec2.describe_instance_attribute(InstanceId=target.instance_id, Attribute="userData")
    document = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert document.startswith("#cloud-config\n")
    [launch] = json.loads(document.split("\n", 1)[1])["write_files"]
    assert launch["path"] == "/etc/bakery/launch.env" and launch["permissions"] == "0600"
    for key, value in target.settings.items():  # the values the suites will expect
        assert f'{key}="{value}"' in launch["content"]


def test_success_tags_verified_and_removes_everything(ec2: Any, tmp_path: Path) -> None:
    ami = make_image(status=tags.BUILT, extra_tags={tags.FAILED_CHECKS: "from an old run"})
    result = run(tmp_path, Runner(suite_outcome(True)), ami)
    values = image_tags(ec2, ami)
    assert values[tags.STATUS] == "verified"
    assert tags.FAILED_CHECKS not in values
    assert values[tags.VERIFIED_AT] == "2030-01-15T12:00:00Z"
    assert leftovers(ec2) == {"instances": [], "groups": [], "keys": []}
    assert result.summary == ""


def test_failure_tags_rejected_with_a_tag_sized_summary(ec2: Any, tmp_path: Path) -> None:
    ami = make_image(status=tags.BUILT)
    failed = tuple(f"test_services.test_check_number_{n}_is_long_enough" for n in range(20))
    junit = tmp_path / "reports" / "backend.xml"
    result = run(tmp_path, Runner(suite_outcome(False, failed, junit)), ami)
    values = image_tags(ec2, ami)
    assert values[tags.STATUS] == "rejected"
    assert values[tags.FAILED_CHECKS].startswith("20 failed: test_services.test_check_number_0")
    assert len(values[tags.FAILED_CHECKS]) <= 256
    assert result.junit_path == junit and not result.verified
    assert leftovers(ec2) == {"instances": [], "groups": [], "keys": []}
    record = (tmp_path / "records" / f"backend-{ami}.json").read_text()
    assert '"status": "rejected"' in record and str(junit) in record


@pytest.mark.parametrize(
    "interruption", [KeyboardInterrupt(), RuntimeError("runner crashed")], ids=["ctrl-c", "crash"]
)
def test_interrupted_run_still_removes_everything(
    ec2: Any, tmp_path: Path, interruption: BaseException
) -> None:
    ami = make_image(status=tags.BUILT)
    with pytest.raises(type(interruption)):
        run(tmp_path, Runner(interruption), ami)
    assert leftovers(ec2) == {"instances": [], "groups": [], "keys": []}
    assert image_tags(ec2, ami)[tags.STATUS] == "built"  # no verdict without a run


def test_configured_group_is_used_and_kept(ec2: Any, tmp_path: Path) -> None:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="ops-ssh", Description="ops", VpcId=vpc)["GroupId"]
    ami = make_image(status=tags.BUILT)
    runner = Runner(suite_outcome(True))
    run(tmp_path, runner, ami, f"aws.security_group_id={group}")
    assert [g["GroupId"] for g in runner.group_rules] == [group]
    assert [
        g["GroupId"]
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] == "ops-ssh"
    ] == [group]


def test_no_built_image_to_verify_is_bad_input(ec2: Any, tmp_path: Path) -> None:
    make_image(status=tags.VERIFIED)
    with pytest.raises(BadInput, match=r"no built .*backend AMI"):
        run(tmp_path, Runner(suite_outcome(True)))


def test_pipeline_verify_raises_when_an_image_is_rejected(ec2: Any, tmp_path: Path) -> None:
    make_image(status=tags.BUILT)
    runner = Runner(suite_outcome(False, ("test_agent.test_agent_is_running",)))
    with pytest.raises(OperationFailed, match=r"rejected: backend .*test_agent_is_running"):
        verify_roles(
            [make_config("backend")],
            runner,
            ingress_cidr=RUNNER_ADDRESS,
            records_dir=tmp_path,
            reports_dir=tmp_path,
        )


def test_ingress_is_one_address_only() -> None:
    assert ingress_cidr_for("198.51.100.4") == "198.51.100.4/32"
    assert ingress_cidr_for("2001:db8::1") == "2001:db8::1/128"
    with pytest.raises(BadInput, match="range"):
        ingress_cidr_for("0.0.0.0/0")
    with pytest.raises(BadInput, match="not an IP address"):
        ingress_cidr_for("my-laptop")


def test_junit_failures_become_check_names(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        """<testsuites><testsuite>
        <testcase classname="tests.infra.test_agent" name="test_agent_running[ssh://h]">
          <failure message="no"/></testcase>
        <testcase classname="tests.infra.test_agent" name="test_config_valid"/>
        <testcase classname="tests.infra.test_app" name="test_health[ssh://h]"><error/></testcase>
        </testsuite></testsuites>"""
    )
    assert failed_checks_from_junit(report) == (
        "test_agent.test_agent_running",
        "test_app.test_health",
    )
    assert summarise(()) == ""
    assert summarise(("a.b",)) == "1 failed: a.b"


def test_measured_hardening_index_is_tagged_and_recorded(ec2: Any, tmp_path: Path) -> None:
    ami = make_image(status=tags.BUILT)
    outcome = replace(suite_outcome(True), hardening={"index": 84, "tool": "lynis 3.0.8"})
    run(tmp_path, Runner(outcome), ami)
    assert image_tags(ec2, ami)[tags.HARDENING_INDEX] == "84"
    record = json.loads((tmp_path / "records" / f"backend-{ami}.json").read_text())
    assert record["verification"]["hardening"]["index"] == 84
