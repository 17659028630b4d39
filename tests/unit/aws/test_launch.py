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
    assert stored["InstanceType"] == cfg.aws.instance_type
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

    assert instance["InstanceType"] == cfg.aws.instance_type
    values = tags.as_dict(instance["Tags"])
    assert (values[tags.ROLE], values[tags.ENVIRONMENT]) == ("frontend", "staging")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_its_own_parameter_and_instance_profile(role: str) -> None:
    cfg = make_config(role)
    data = launch_template_data(cfg, "production", b"#cloud-config\n")
    assert data["ImageId"] == f"resolve:ssm:/bakery/images/production/{role}/ami-id"
    assert data["IamInstanceProfile"] == {"Name": instance_role_name(role)}
    assert data["InstanceType"] == cfg.aws.instance_type
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
