"""Launch templates for the golden AMIs (`invoke launch-template`), on moto.

moto 5.2.5 keeps a launch template's `ImageId` as given and does not resolve
`resolve:ssm:` (EC2 resolves it at each launch, and `describe-launch-template-versions
--resolve-alias` shows the AMI). So these tests check the two halves the resolution joins:
the stored template names the parameter `invoke release` writes, and that parameter
holds the released AMI.
"""

from __future__ import annotations

import base64
import json
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import boto3
import pytest
from invoke import Config, Context

from bakery import ROLES
from bakery.aws import tags, tasks
from bakery.aws.iam import iam_documents, instance_role_name
from bakery.aws.launch import (
    example_user_data,
    launch_template_data,
    read_user_data,
    user_data_warnings,
)
from bakery.aws.release import release
from bakery.config import REPO_ROOT
from bakery.errors import BadInput

from .conftest import ACCOUNT, REGION, clock, days_ago, make_config, make_image

PARAMETER = "/bakery/images/staging/backend/ami-id"


def create_template(ec2: Any, name: str, data: Any) -> dict[str, Any]:
    """What `aws ec2 create-launch-template --launch-template-data file://F` does with the
    JSON in F, then the stored data of the template's latest version."""
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)
    versions = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])
    stored: dict[str, Any] = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return stored


def current_value(ssm: Any, name: str) -> str:
    return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])


def test_template_launches_what_release_promoted(ec2: Any, ssm: Any) -> None:
    ami = make_image()
    cfg = make_config("backend")
    released = release(cfg, "staging", clock=clock())
    user_data = read_user_data(example_user_data("backend"))

    stored = create_template(
        ec2, "bakery-backend-staging", launch_template_data(cfg, "staging", user_data)
    )

    assert released.parameter == PARAMETER
    assert stored["ImageId"] == "resolve:ssm:" + released.parameter
    assert current_value(ssm, released.parameter) == ami
    assert stored["InstanceType"] == cfg.instance_type
    assert stored["IamInstanceProfile"] == {"Name": "bakery-backend"}
    assert stored["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert base64.b64decode(stored["UserData"]) == example_user_data("backend").read_bytes()
    for spec in stored["TagSpecifications"]:
        values = tags.as_dict(spec["Tags"])
        assert values[tags.ROLE] == "backend" and values[tags.ENVIRONMENT] == "staging"
        assert values["project"] == "bakery"  # aws.tags from config
    assert {spec["ResourceType"] for spec in stored["TagSpecifications"]} == {"instance", "volume"}


def test_a_rollback_changes_what_the_same_template_launches(ec2: Any, ssm: Any) -> None:
    first, second = make_image(created=days_ago(2)), make_image(created=days_ago(1))
    cfg = make_config("backend")
    release(cfg, "staging", first, clock=clock())
    release(cfg, "staging", second, clock=clock())
    data = launch_template_data(cfg, "staging", read_user_data(example_user_data("backend")))
    stored = create_template(ec2, "bakery-backend-staging", data)
    assert current_value(ssm, PARAMETER) == second

    release(cfg, "staging", rollback=True, clock=clock())

    # The template is unchanged (one version, same reference); its parameter moved back.
    versions = ec2.describe_launch_template_versions(LaunchTemplateName="bakery-backend-staging")
    assert len(versions["LaunchTemplateVersions"]) == 1
    assert stored["ImageId"] == f"resolve:ssm:{PARAMETER}"
    assert current_value(ssm, PARAMETER) == first


def test_instances_launched_from_the_template_carry_its_tags(ec2: Any, ssm: Any) -> None:
    """`aws ec2 run-instances --launch-template LaunchTemplateName=NAME`. moto launches
    with the unresolved `resolve:ssm:` string as the image, so the image is not checked
    here (see the module docstring); the template's type and tags are."""
    cfg = make_config("frontend")
    data = launch_template_data(cfg, "staging", read_user_data(example_user_data("frontend")))
    create_template(ec2, "bakery-frontend-staging", data)

    instance = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateName": "bakery-frontend-staging"}, MinCount=1, MaxCount=1
    )["Instances"][0]

    assert instance["InstanceType"] == cfg.instance_type
    values = tags.as_dict(instance["Tags"])
    assert (values[tags.ROLE], values[tags.ENVIRONMENT]) == ("frontend", "staging")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_its_own_parameter_and_instance_profile(role: str) -> None:
    cfg = make_config(role)
    data = launch_template_data(cfg, "production", b"#cloud-config\n")
    assert data["ImageId"] == f"resolve:ssm:/bakery/images/production/{role}/ami-id"
    assert data["IamInstanceProfile"] == {"Name": instance_role_name(role)}
    assert data["InstanceType"] == cfg.instance_type
    # The profile's role is the one whose policy `invoke iam` writes for the role.
    assert f"instance-{role}" in iam_documents([cfg])


def test_an_instance_profile_can_be_named() -> None:
    data = launch_template_data(make_config("backend"), "dev", b"#cloud-config\n", "my-profile")
    assert data["IamInstanceProfile"] == {"Name": "my-profile"}


@pytest.mark.parametrize("role", ROLES)
def test_the_examples_stay_inside_the_instance_role_policy(role: str) -> None:
    """The example's log group and secret are what `iam/instance-<role>.json` allows, so
    an instance launched with both does not meet AccessDenied."""
    cfg = make_config(role)
    policy = iam_documents([cfg])[f"instance-{role}"]
    allowed = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    text = example_user_data(role).read_text()
    settings = dict(
        line.strip().split("=", 1) for line in text.splitlines() if line.startswith("      ")
    )

    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{settings['LOG_GROUP_NAME']}:*"
    assert any(fnmatch(group, pattern) for pattern in allowed["AgentWritesItsLogGroups"])
    if "DB_PASSWORD_SSM_PARAMETER" in settings:
        secret = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{settings['DB_PASSWORD_SSM_PARAMETER']}"
        assert any(fnmatch(secret, pattern) for pattern in allowed["LaunchTimeSecrets"])


def test_the_documented_instance_role_is_the_profile_the_template_names(
    aws: None, tmp_path: Path
) -> None:
    """docs/aws.md, "The instance role": `invoke iam`, then the role (its trust policy as
    the doc gives it), its policy from iam/instance-<role>.json and its profile."""
    iam = boto3.client("iam")
    doc = (REPO_ROOT / "docs" / "aws.md").read_text()
    (trust,) = re.findall(r"--assume-role-policy-document \\\n\s+'(.*)'", doc)
    tasks.iam(Context(Config(lazy=True)), role=["backend"], output=str(tmp_path))
    policy = (tmp_path / "instance-backend.json").read_text()

    iam.create_role(RoleName="bakery-backend", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(
        RoleName="bakery-backend", PolicyName="bakery-instance", PolicyDocument=policy
    )
    iam.create_instance_profile(InstanceProfileName="bakery-backend")
    iam.add_role_to_instance_profile(
        InstanceProfileName="bakery-backend", RoleName="bakery-backend"
    )

    assert json.loads(trust)["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    profile = iam.get_instance_profile(InstanceProfileName="bakery-backend")["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == ["bakery-backend"]
    stored = iam.get_role_policy(RoleName="bakery-backend", PolicyName="bakery-instance")
    assert stored["PolicyDocument"] == json.loads(policy)
    data = launch_template_data(make_config("backend"), "staging", b"#cloud-config\n")
    assert data["IamInstanceProfile"] == {"Name": profile["InstanceProfileName"]}


def test_user_data_that_contradicts_the_template_is_warned_about() -> None:
    example = example_user_data("backend").read_bytes()  # staging, password from SSM
    debian, al2023 = make_config("backend"), make_config("backend", "os=al2023")

    assert len(user_data_warnings(debian, "staging", example)) == 1  # no aws CLI on Debian
    assert user_data_warnings(al2023, "staging", example) == []
    (warning,) = user_data_warnings(al2023, "production", example)
    assert "DEPLOYMENT_ENVIRONMENT=staging" in warning
    assert user_data_warnings(debian, "production", b"#!/bin/sh\necho hi\n") == []


def test_user_data_larger_than_ec2_takes_is_bad_input(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#cloud-config\n" + b"#" * 16 * 1024)
    with pytest.raises(BadInput, match=r"--user-data .*EC2 takes at most 16384"):
        read_user_data(big)


# ---------------------------------------------------------------------------------------
# The task: `invoke launch-template`


def test_launch_template_task_prints_the_template_data(
    ec2: Any, ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke launch-template --role backend -e staging`"""
    ami = make_image()
    release(make_config("backend"), "staging", clock=clock())

    tasks.launch_template(Context(Config(lazy=True)), role="backend", environment="staging")

    out, err = capsys.readouterr()
    expected = launch_template_data(
        make_config("backend"), "staging", read_user_data(example_user_data("backend"))
    )
    assert json.loads(out) == expected
    assert f"now resolves to {ami}" in err
    assert "docs/examples/user-data/backend.yaml" in err


def test_launch_template_task_writes_the_file_for_create_launch_template(
    ec2: Any, ssm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke launch-template --role backend -e staging --output F`, then
    `aws ec2 create-launch-template --launch-template-name bakery-backend-staging
    --launch-template-data file://F` (the CLI passes F's JSON as LaunchTemplateData)."""
    ami = make_image()
    release(make_config("backend"), "staging", clock=clock())
    user_data = tmp_path / "backend.yaml"
    user_data.write_text(
        example_user_data("backend").read_text().replace("10.0.2.30", "db.internal")
    )
    output = tmp_path / "launch" / "backend-staging.json"

    tasks.launch_template(
        Context(Config(lazy=True)),
        role="backend",
        environment="staging",
        user_data=str(user_data),
        output=str(output),
    )

    assert output.stat().st_mode & 0o777 == 0o600  # the user data may hold a password
    stored = create_template(ec2, "bakery-backend-staging", json.loads(output.read_text()))
    assert stored["ImageId"] == f"resolve:ssm:{PARAMETER}"
    assert current_value(ssm, PARAMETER) == ami
    assert b"DB_HOST=db.internal" in base64.b64decode(stored["UserData"])
    err = capsys.readouterr().err
    assert "aws ec2 create-launch-template --region us-east-1" in err
    assert f"file://{output}" in err


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"environment": "prod"}, "--environment prod: no backend AMI was released there"),
        ({"environment": "Prod!"}, "--environment 'Prod!'"),
        ({"user_data": "no-such-user-data.yaml"}, "--user-data no-such-user-data.yaml"),
        ({"role": "cache"}, "--role cache"),
    ],
)
def test_launch_template_task_bad_input_exits_2_and_writes_nothing(
    ec2: Any,
    ssm: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: dict[str, str],
    named: str,
) -> None:
    make_image()
    release(make_config("backend"), "staging", clock=clock())
    output = tmp_path / "backend.json"

    with pytest.raises(SystemExit) as caught:
        tasks.launch_template(
            Context(Config(lazy=True)),
            **{"role": "backend", "environment": "staging", **options},
            output=str(output),
        )

    assert caught.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert named in err
    if options.get("environment") == "prod":
        assert "released to: staging" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# Security groups: the agent's ports (4315, 4316, 2000) stay closed to all but the instance


def make_group(ec2: Any, name: str, *rules: dict[str, Any]) -> str:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = str(ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"])
    if rules:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=list(rules))
    return group


APP_PORT = {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8000,
            "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ({"IpProtocol": "tcp", "FromPort": 4316, "ToPort": 4316,
          "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "tcp 4316 from 0.0.0.0/0 (reaches 4316)"),
        ({"IpProtocol": "tcp", "FromPort": 4000, "ToPort": 4400,
          "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
         "tcp 4000-4400 from 10.0.0.0/8 (reaches 4315, 4316)"),
        ({"IpProtocol": "udp", "FromPort": 2000, "ToPort": 2000,
          "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, "udp 2000 from ::/0 (reaches 2000)"),
        ({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.1.0.0/16"}]},
         "all traffic from 10.1.0.0/16 (reaches 4315, 4316, 2000)"),
    ],
    ids=["otlp-http-from-anywhere", "a-range-over-otlp", "xray-udp-ipv6", "all-traffic"],
)  # fmt: skip
def test_a_group_that_lets_anything_reach_the_agent_ports_is_refused(
    ec2: Any,
    ssm: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rule: dict[str, Any],
    named: str,
) -> None:
    make_image()
    release(make_config("backend"), "staging", clock=clock())
    group = make_group(ec2, "web", APP_PORT, rule)
    output = tmp_path / "backend.json"
    with pytest.raises(SystemExit) as caught:
        tasks.launch_template(
            Context(Config(lazy=True)), role="backend", environment="staging",
            security_group=[group], output=str(output),
        )  # fmt: skip
    assert caught.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--security-group {group} lets in {named}" in err
    assert list(tmp_path.iterdir()) == []


def test_a_group_reaching_the_agent_from_its_own_members_is_refused_too(ec2: Any, ssm: Any) -> None:
    """A rule naming the group itself opens the ports to every other instance in it."""
    from bakery.aws.clients import ec2_client
    from bakery.aws.launch import check_security_groups

    group = make_group(ec2, "cluster")
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 2000, "ToPort": 2000,
                        "UserIdGroupPairs": [{"GroupId": group}]}],
    )  # fmt: skip
    with pytest.raises(BadInput, match=f"tcp 2000 from {group}"):
        check_security_groups(ec2_client(REGION), [group])


def test_a_group_open_only_on_the_app_port_is_attached(
    ec2: Any, ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke launch-template --role backend -e staging --security-group sg-0123456789abcdef0`"""
    make_image()
    release(make_config("backend"), "staging", clock=clock())
    group = make_group(ec2, "web", APP_PORT)
    tasks.launch_template(
        Context(Config(lazy=True)), role="backend", environment="staging", security_group=[group]
    )
    stored = create_template(ec2, "bakery-backend-staging", json.loads(capsys.readouterr().out))
    assert stored["SecurityGroupIds"] == [group]


def test_a_missing_group_is_bad_input(ec2: Any, ssm: Any) -> None:
    from bakery.aws.clients import ec2_client
    from bakery.aws.launch import check_security_groups

    with pytest.raises(BadInput, match="--security-group sg-0123456789abcdef0: no such group"):
        check_security_groups(ec2_client(REGION), ["sg-0123456789abcdef0"])


def test_create_security_group_makes_one_with_no_ingress_once(
    ec2: Any, ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke launch-template --role backend -e staging --create-security-group`"""
    make_image()
    release(make_config("backend"), "staging", clock=clock())
    for _ in range(2):
        tasks.launch_template(
            Context(Config(lazy=True)),
            role="backend",
            environment="staging",
            create_security_group=True,
        )
    first, second = (
        json.loads(block)
        for block in re.findall(r"^\{.*?^\}$", capsys.readouterr().out, re.M | re.S)
    )
    assert first["SecurityGroupIds"] == second["SecurityGroupIds"]
    [group] = ec2.describe_security_groups(GroupIds=first["SecurityGroupIds"])["SecurityGroups"]
    assert group["GroupName"] == "bakery-backend-staging-instances"
    assert group["IpPermissions"] == []  # nothing reaches 4315, 4316 or 2000
    assert tags.as_dict(group["Tags"])[tags.ENVIRONMENT] == "staging"
    assert tags.PURPOSE not in tags.as_dict(group["Tags"])  # not the janitor's to remove
    instance = ec2.run_instances(
        ImageId=ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"],
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=first["SecurityGroupIds"],
    )["Instances"][0]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == first["SecurityGroupIds"]


def test_vpc_id_without_create_security_group_is_bad_input(
    ec2: Any, ssm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        tasks.launch_template(
            Context(Config(lazy=True)), role="backend", environment="staging", vpc_id="vpc-1"
        )
    assert caught.value.code == 2
    assert "--create-security-group" in capsys.readouterr().err
