"""The IAM documents: parliament finds nothing, each names only what its user needs, and
iam/ is what `invoke iam` writes (evaluated against real calls in test_iam_evaluated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import parliament
import pytest

from bakery.aws.iam import iam_documents, write_iam_documents
from bakery.packer import PackerVersion

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


def test_only_the_backend_gets_application_signals_and_only_backend_and_database_secrets() -> None:
    documents = iam_documents(CONFIGS)
    assert actions(documents["instance-backend"]) == {
        "cloudwatch:PutMetricData",
        "ec2:DescribeTags",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:DescribeLogGroups",
        "logs:PutLogEvents",
        "logs:PutRetentionPolicy",
        "ssm:GetParameter",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    }
    for role in ("frontend", "database"):
        text = json.dumps(documents[f"instance-{role}"])
        assert "xray:" not in text and "ec2:" not in text
        assert "application-signals" not in text and "service-events" not in text
    assert "ssm:GetParameter" in actions(documents["instance-database"])
    assert "ssm:" not in json.dumps(documents["instance-frontend"])


def test_pipeline_policy_names_only_the_configured_regions_and_prefix() -> None:
    policy = iam_documents(CONFIGS)["pipeline"]
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert statements["PassInstanceRole"]["Resource"] == ["arn:aws:iam::*:role/bakery-app"]
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
            if resource == "*":
                # Only actions without resource-level permissions, held to the regions.
                assert statement["Sid"] in {
                    "Describe",
                    "DescribeLaunchConfigurations",
                    "CanaryReadsTelemetry",
                    "StartApplicationSignals",
                    "ListSlosAndSamplingRules",
                    # authorized on `*` only; the request's bakery:role tag scopes it
                    "CreateSlosTaggedAsBakerys",
                }
                assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == [
                    "us-east-1",
                    "eu-west-1",
                ]


@pytest.mark.parametrize("group", [None, "sg-0123456789abcdef0"])
def test_group_and_key_pair_changes_are_allowed_only_on_bakerys_purpose_tag(
    group: str | None,
) -> None:
    """No statement for Packer's untagged temporary group or key pair, whatever the
    config: bakery makes both (build_access.py)."""
    configs = [make_config("backend", *([f"aws.security_group_id={group}"] if group else []))]
    changes = {"ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup", "ec2:DeleteKeyPair"}
    granting = [
        statement
        for statement in iam_documents(configs)["pipeline"]["Statement"]
        if statement["Effect"] == "Allow" and changes & set(statement["Action"])
    ]
    assert [statement["Sid"] for statement in granting] == ["OwnKeysAndGroups"]
    assert granting[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/bakery:purpose": ["build", "test-instance"]}
    }


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
    """iam/*.json are what `invoke iam --packer-version 1.6.6` writes for the repo's
    config (1.6.6: the Packer the repo's hosts bake with, apt's): regenerate on drift."""
    from bakery.cli import load_configs
    from bakery.config import REPO_ROOT

    expected = iam_documents(load_configs(None, "aws", None, None), packer=PackerVersion(1, 6, 6))
    folder = REPO_ROOT / "iam"
    committed = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert committed == expected, "iam/ is stale: run `invoke iam`"
