"""The IAM documents: parliament finds nothing, and each grants what its user needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import parliament
import pytest

from bakery.aws.iam import iam_documents, write_iam_documents

from .conftest import make_config

CONFIGS = [
    make_config(
        "backend",
        "aws.copy_regions=['eu-west-1']",
        "aws.instance_profile=bakery-app",
        "aws.kms_key_id=alias/bakery-images",
    ),
    make_config("frontend"),
    make_config("database"),
]


def actions(policy: dict[str, Any]) -> set[str]:
    return {action for statement in policy["Statement"] for action in statement["Action"]}


@pytest.mark.parametrize(
    "name", ["instance-backend", "instance-frontend", "instance-database", "pipeline"]
)
def test_parliament_finds_nothing(name: str) -> None:
    document = iam_documents(CONFIGS)[name]
    policy = parliament.analyze_policy_string(json.dumps(document))
    assert [(f.issue, f.detail, f.location) for f in policy.findings] == []


def test_instance_policy_covers_the_agent_and_application_signals() -> None:
    policy = iam_documents(CONFIGS)["instance-backend"]
    assert actions(policy) >= {
        "cloudwatch:PutMetricData",
        "ec2:DescribeTags",
        "ec2:DescribeVolumes",
        "logs:PutLogEvents",
        "logs:CreateLogStream",
        "logs:CreateLogGroup",
        "logs:DescribeLogStreams",
        "logs:DescribeLogGroups",
        "logs:PutRetentionPolicy",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "ssm:GetParameter",
    }
    text = json.dumps(policy)
    assert "log-group:/aws/ec2/fastapi-backend" in text
    assert "log-group:/aws/application-signals/data" in text
    assert "parameter/bakery/secrets/*" in text
    assert "ssm:PutParameter" not in text


def test_pipeline_policy_is_scoped() -> None:
    policy = iam_documents(CONFIGS)["pipeline"]
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    untagged = statements["LaunchOnlyTaggedInstances"]
    assert untagged["Effect"] == "Deny"
    assert untagged["Condition"]["StringNotEquals"]["aws:RequestTag/bakery:purpose"] == [
        "build",
        "test-instance",
    ]
    terminate = statements["OnlyTouchOwnInstances"]
    assert "ec2:TerminateInstances" in terminate["Action"]
    assert "aws:ResourceTag/bakery:purpose" in terminate["Condition"]["StringEquals"]
    assert statements["PassInstanceRole"]["Resource"] == ["arn:aws:iam::*:role/bakery-app"]
    assert statements["ApplicationSignalsLinkedRole"]["Condition"]["StringEquals"] == {
        "iam:AWSServiceName": "application-signals.cloudwatch.amazonaws.com"
    }
    parameters = statements["ReleaseThroughParameters"]["Resource"]
    assert "arn:aws:ssm:eu-west-1:*:parameter/bakery/images/*" in parameters
    assert all(":parameter/bakery/images" in arn for arn in parameters)
    for statement in policy["Statement"]:
        for resource in (
            [statement["Resource"]]
            if isinstance(statement["Resource"], str)
            else statement["Resource"]
        ):
            assert (
                resource == "*"
                or ":us-east-1:" in resource
                or ":eu-west-1:" in resource
                or ":iam::" in resource
            )


def test_documents_are_written_as_json(tmp_path: Path) -> None:
    paths = write_iam_documents(iam_documents(CONFIGS), tmp_path)
    assert sorted(p.name for p in paths) == [
        "instance-backend.json",
        "instance-database.json",
        "instance-frontend.json",
        "pipeline.json",
    ]
    assert json.loads(paths[0].read_text())["Version"] == "2012-10-17"


def test_committed_documents_match_the_config() -> None:
    """iam/*.json are what `invoke iam` writes for the repo's config: regenerate on drift."""
    from bakery.cli import load_configs
    from bakery.config import REPO_ROOT

    expected = iam_documents(load_configs(None, "aws", None, None))
    folder = REPO_ROOT / "iam"
    committed = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert committed == expected, "iam/ is stale: run `invoke iam`"
