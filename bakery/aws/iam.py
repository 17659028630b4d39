"""The IAM policy documents bakery's images and pipeline need, as data.

- `instance-<role>`: the policy of the instance role of each role's instances
  (`bakery-<role>`, and its instance profile of the same name, which launch templates
  name): what the managed CloudWatchAgentServerPolicy grants, scoped to the role's log
  groups where IAM allows, plus X-Ray sampling and telemetry and reading the
  launch-time secrets from SSM.
- `pipeline`: what bakery and Packer's amazon-ebs builder need, scoped to the
  configured regions, to bakery's tags and to the SSM prefix where IAM allows.

`invoke iam` writes them under iam/; the unit tests check them with parliament.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bakery.aws import tags
from bakery.aws.images import regions_of
from bakery.config import BakeryConfig

Policy = dict[str, Any]

# Where launch-time secrets (the database password) live, until config names it.
DEFAULT_SECRET_PATH = "/bakery/secrets/"
# The log group the agent writes Application Signals' metrics to (as EMF).
APPLICATION_SIGNALS_LOG_GROUP = "/aws/application-signals/data"
APPLICATION_SIGNALS_SERVICE = "application-signals.cloudwatch.amazonaws.com"


def instance_role_name(role: str) -> str:
    """The instance role of a role's instances, and its instance profile: one name for
    both, as the console makes them, so that a launch template can name the profile."""
    return f"bakery-{role}"


def _statement(
    sid: str, actions: Sequence[str], resources: Sequence[str] | str, **extra: Any
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": resources if isinstance(resources, str) else sorted(resources),
    }
    statement.update(extra)
    return statement


def _policy(*statements: dict[str, Any]) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _log_group_arns(group: str) -> list[str]:
    return [f"arn:aws:logs:*:*:log-group:{group}", f"arn:aws:logs:*:*:log-group:{group}:*"]


def instance_policy(cfg: BakeryConfig, secret_path: str = DEFAULT_SECRET_PATH) -> Policy:
    """The instance role policy for one role's instances."""
    groups = [cfg.service.log_group, APPLICATION_SIGNALS_LOG_GROUP]
    regions = [cfg.aws.region, *cfg.aws.copy_regions]
    secret = secret_path.strip("/")
    return _policy(
        _statement(
            "AgentMetrics",
            ["cloudwatch:PutMetricData"],
            "*",
            Condition={"StringEquals": {"cloudwatch:namespace": ["CWAgent", "ApplicationSignals"]}},
        ),
        _statement("AgentDescribesItsInstance", ["ec2:DescribeTags", "ec2:DescribeVolumes"], "*"),
        _statement("AgentListsLogGroups", ["logs:DescribeLogGroups"], "*"),
        _statement(
            "AgentWritesItsLogGroups",
            [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
                "logs:PutRetentionPolicy",
            ],
            [arn for group in groups for arn in _log_group_arns(group)],
        ),
        _statement(
            "TracesAndSampling",
            [
                "xray:GetSamplingRules",
                "xray:GetSamplingStatisticSummaries",
                "xray:GetSamplingTargets",
                "xray:PutTelemetryRecords",
                "xray:PutTraceSegments",
            ],
            "*",
        ),
        _statement(
            "LaunchTimeSecrets",
            ["ssm:GetParameter"],
            [f"arn:aws:ssm:{region}:*:parameter/{secret}/*" for region in regions],
        ),
    )


def pipeline_policy(configs: Sequence[BakeryConfig]) -> Policy:
    """The least-privilege policy of whoever runs bakery (CI), Packer included."""
    regions = regions_of(configs)

    def ec2(resource: str, account: str = "*") -> list[str]:
        return [f"arn:aws:ec2:{region}:{account}:{resource}" for region in regions]

    purposes = ["build", tags.TEST_INSTANCE]
    prefixes = sorted({cfg.aws.ssm_prefix for cfg in configs})
    profiles = sorted({cfg.aws.instance_profile for cfg in configs if cfg.aws.instance_profile})
    in_regions = {"StringEquals": {"aws:RequestedRegion": regions}}
    statements = [
        _statement("ReadImageAttributes", ["ec2:DescribeImageAttribute"], ec2("image/*", "")),
        _statement(
            "Describe",
            [
                "ec2:DescribeImages",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstances",
                "ec2:DescribeKeyPairs",
                "ec2:DescribeRegions",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSnapshots",
                "ec2:DescribeSubnets",
                "ec2:DescribeTags",
                "ec2:DescribeVolumes",
                "ec2:DescribeVpcs",
            ],
            "*",
            Condition=in_regions,
        ),
        _statement(
            "LaunchInstances",
            ["ec2:RunInstances"],
            [
                *ec2("image/*", account=""),
                *ec2("instance/*"),
                *ec2("key-pair/*"),
                *ec2("network-interface/*"),
                *ec2("security-group/*"),
                *ec2("subnet/*"),
                *ec2("volume/*"),
            ],
        ),
        # An Allow cannot put a tag condition on the instance alone in one statement that
        # also names the image and subnet; a Deny on the instance can.
        {
            "Sid": "LaunchOnlyTaggedInstances",
            "Effect": "Deny",
            "Action": ["ec2:RunInstances"],
            "Resource": ec2("instance/*"),
            "Condition": {"StringNotEquals": {f"aws:RequestTag/{tags.PURPOSE}": purposes}},
        },
        _statement(
            "OnlyTouchOwnInstances",
            ["ec2:ModifyInstanceAttribute", "ec2:StopInstances", "ec2:TerminateInstances"],
            ec2("instance/*"),
            Condition={"StringEquals": {f"aws:ResourceTag/{tags.PURPOSE}": purposes}},
        ),
        _statement(
            "TagWhatIsCreated",
            ["ec2:CreateTags"],
            [*ec2("instance/*"), *ec2("volume/*"), *ec2("key-pair/*"), *ec2("security-group/*")],
            Condition={
                "StringEquals": {
                    "ec2:CreateAction": [
                        "CreateSecurityGroup",
                        "ImportKeyPair",
                        "CreateKeyPair",
                        "RunInstances",
                    ]
                }
            },
        ),
        _statement(
            "MakeImages",
            [
                "ec2:CopyImage",
                "ec2:CreateImage",
                "ec2:CreateSnapshot",
                "ec2:CreateTags",
                "ec2:DeleteSnapshot",
                "ec2:DeleteTags",
                "ec2:DeregisterImage",
                "ec2:EnableImageDeprecation",
                "ec2:ModifyImageAttribute",
                "ec2:ModifySnapshotAttribute",
                "ec2:RegisterImage",
            ],
            [*ec2("image/*", account=""), *ec2("snapshot/*"), *ec2("instance/*"), *ec2("volume/*")],
        ),
        _statement(
            "BuildVolumes",
            ["ec2:AttachVolume", "ec2:CreateVolume", "ec2:DeleteVolume", "ec2:DetachVolume"],
            [*ec2("volume/*"), *ec2("instance/*")],
        ),
        _statement(
            "TemporaryKeysAndGroups",
            [
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:CreateKeyPair",
                "ec2:CreateSecurityGroup",
                "ec2:DeleteKeyPair",
                "ec2:DeleteSecurityGroup",
                "ec2:ImportKeyPair",
            ],
            [*ec2("key-pair/*"), *ec2("security-group/*"), *ec2("vpc/*")],
        ),
        _statement(
            "ReleaseThroughParameters",
            [
                "ssm:GetParameter",
                "ssm:GetParameterHistory",
                "ssm:GetParametersByPath",
                "ssm:LabelParameterVersion",
                "ssm:PutParameter",
            ],
            [
                f"arn:aws:ssm:{region}:*:parameter{prefix}{suffix}"
                for region in regions
                for prefix in prefixes
                for suffix in ("", "/*")
            ],
        ),
        _statement("StartApplicationSignals", ["application-signals:StartDiscovery"], "*"),
        _statement(
            "ApplicationSignalsLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            f"arn:aws:iam::*:role/aws-service-role/{APPLICATION_SIGNALS_SERVICE}/*",
            Condition={"StringEquals": {"iam:AWSServiceName": APPLICATION_SIGNALS_SERVICE}},
        ),
    ]
    if profiles:
        # The role behind each instance profile (bakery expects them to share a name).
        statements.append(
            _statement(
                "PassInstanceRole",
                ["iam:PassRole"],
                [f"arn:aws:iam::*:role/{profile}" for profile in profiles],
                Condition={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            )
        )
    if any(cfg.aws.kms_key_id for cfg in configs):
        statements.append(
            _statement(
                "EncryptImagesThroughEc2",
                [
                    "kms:CreateGrant",
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                ],
                [f"arn:aws:kms:{region}:*:key/*" for region in regions],
                Condition={
                    "StringEquals": {
                        "kms:ViaService": [f"ec2.{region}.amazonaws.com" for region in regions]
                    }
                },
            )
        )
    return _policy(*statements)


def iam_documents(
    configs: Sequence[BakeryConfig], secret_path: str = DEFAULT_SECRET_PATH
) -> dict[str, Policy]:
    """{document name: policy} for every role's instances and for the pipeline."""
    documents = {f"instance-{cfg.role}": instance_policy(cfg, secret_path) for cfg in configs}
    documents["pipeline"] = pipeline_policy(configs)
    return documents


def write_iam_documents(documents: dict[str, Policy], directory: Path) -> list[Path]:
    """Write each document as `<name>.json` under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in documents.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
