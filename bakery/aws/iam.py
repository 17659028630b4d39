"""The IAM policy documents bakery's images and pipeline need, as data.

- `instance-<role>`: the policy of the instance role of each role's instances
  (`bakery-<role>`, and its instance profile of the same name, which launch templates
  name). Derived from what the CloudWatch agent and the OTEL distro call with the
  role's agent config (docs/aws.md, "What the instances call", names the sources):
  every role's agent writes host metrics (`CWAgent`) and its log files; the backend's
  also writes Application Signals (EMF to `/aws/application-signals/data`, spans to
  X-Ray, sampling through the agent's proxy) and Service Events
  (`/aws/service-events/<service.name>`, error metrics over OTLP). The backend and the
  database read their password from SSM at boot; the frontend reads no secret.
- `pipeline`: what bakery and Packer's amazon-ebs builder need, scoped to the
  configured regions, to bakery's tags and to the SSM prefix where IAM allows.
  Destructive and sharing actions reach only resources bakery tagged; tags can be put
  on an instance, volume, group or key pair only as it is created (`ec2:CreateAction`),
  so nothing can be tagged into bakery's reach and then terminated. Groups and key
  pairs are bakery's own, made tagged (build_access.py, verify.py), never Packer's.

`invoke iam` writes them under iam/; the unit tests check them with parliament and
cloudsplaining, and evaluate every recorded call against them with principalmapper.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bakery.aws import tags
from bakery.aws.images import regions_of
from bakery.config import BakeryConfig
from bakery.packer import PackerVersion

Policy = dict[str, Any]

# Where launch-time secrets (the database password) live, until config names it.
DEFAULT_SECRET_PATH = "/bakery/secrets/"
# The log group the agent writes Application Signals' metrics to (as EMF).
APPLICATION_SIGNALS_LOG_GROUP = "/aws/application-signals/data"
# Where agent >= 1.300069.0 writes the distro's Service Events (deployment events and
# endpoint summaries), one group per service.name.
SERVICE_EVENTS_LOG_GROUP = "/aws/service-events/{service}"
APPLICATION_SIGNALS_SERVICE = "application-signals.cloudwatch.amazonaws.com"
APPLICATION_SIGNALS_LINKED_ROLE = "AWSServiceRoleForCloudWatchApplicationSignals"
# The CloudTrail service channel StartDiscovery creates for Application Signals.
APPLICATION_SIGNALS_CHANNEL = "aws-service-channel/application-signals/*"
# The roles whose instances run Application Signals (agent traces + distro).
APPLICATION_SIGNALS_ROLES = ("backend",)
# The roles whose boot reads the database password from SSM (DB_PASSWORD_SSM_PARAMETER).
SECRET_READING_ROLES = ("backend", "database")


def instance_role_name(role: str) -> str:
    """The instance role of a role's instances, and its instance profile: one name for
    both, as the console makes them, so that a launch template can name the profile."""
    return f"bakery-{role}"


def _statement(
    sid: str, actions: Sequence[str], resources: Sequence[str] | str, **extra: Any
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": extra.pop("Effect", "Allow"),
        "Action": sorted(actions),
        "Resource": resources if isinstance(resources, str) else sorted(resources),
    }
    statement.update(extra)
    return statement


def _policy(*statements: dict[str, Any]) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _log_group_arns(group: str) -> list[str]:
    """The group, and what is under it (its streams): IAM names both forms."""
    return [f"arn:aws:logs:*:*:log-group:{group}", f"arn:aws:logs:*:*:log-group:{group}:*"]


def service_events_log_group(cfg: BakeryConfig) -> str:
    return SERVICE_EVENTS_LOG_GROUP.format(service=cfg.service.name)


def instance_policy(cfg: BakeryConfig, secret_path: str = DEFAULT_SECRET_PATH) -> Policy:
    """The instance role policy for one role's instances: what its agent and app call."""
    regions = [cfg.aws.region, *cfg.aws.copy_regions]
    secret = secret_path.strip("/")
    signals = cfg.role in APPLICATION_SIGNALS_ROLES
    statements = [
        # Host metrics (telegraf's cloudwatch output, PutMetricData with a namespace).
        # The backend's Service Events error metrics go over CloudWatch's OTLP endpoint,
        # which checks PutMetricData with no namespace key: IfExists lets those in and
        # still holds every PutMetricData call to CWAgent.
        _statement(
            "AgentMetrics",
            ["cloudwatch:PutMetricData"],
            "*",
            Condition={
                ("StringEqualsIfExists" if signals else "StringEquals"): {
                    "cloudwatch:namespace": ["CWAgent"]
                }
            },
        ),
        # Retention check before PutRetentionPolicy; logs:DescribeLogGroups has no
        # resource-level permission.
        _statement("AgentListsLogGroups", ["logs:DescribeLogGroups"], "*"),
        _statement(
            "AgentWritesItsLogGroups",
            [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:PutRetentionPolicy",
            ],
            _log_group_arns(cfg.service.log_group),
        ),
    ]
    if signals:
        statements += [
            _statement(
                "ApplicationSignalsLogGroups",
                ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                [
                    *_log_group_arns(APPLICATION_SIGNALS_LOG_GROUP),
                    *_log_group_arns(service_events_log_group(cfg)),
                ],
            ),
            # The resourcedetection processor's ec2 detector reads the instance's
            # aws:autoscaling:groupName tag; DescribeTags has no resource-level permission.
            _statement("AgentDescribesItsInstance", ["ec2:DescribeTags"], "*"),
            # Spans and the exporter's telemetry; sampling rules and targets that the
            # distro asks for through the agent's proxy on port 2000. X-Ray has no
            # resource-level permission for any of them.
            _statement(
                "TracesAndSampling",
                [
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                    "xray:PutTelemetryRecords",
                    "xray:PutTraceSegments",
                ],
                "*",
            ),
        ]
    if cfg.role in SECRET_READING_ROLES:
        statements.append(
            _statement(
                "LaunchTimeSecrets",
                ["ssm:GetParameter"],
                [f"arn:aws:ssm:{region}:*:parameter/{secret}/*" for region in regions],
            )
        )
    return _policy(*statements)


def pipeline_policy(configs: Sequence[BakeryConfig], packer: PackerVersion | None = None) -> Policy:
    """The least-privilege policy of whoever runs bakery (CI), Packer included.

    `packer` is the Packer that builds (`invoke iam` asks the installed one): with the
    amazon plugin of Packer >= 1.7 every resource Packer makes is tagged as it is made,
    so nothing untagged is ever touched; None is a policy for any Packer bakery renders
    for, 1.6's untagged AMIs included (`untagged_build_image_statements`).
    """
    regions = regions_of(configs)

    def ec2(*resources: str) -> list[str]:
        """ARNs in every configured region; images and snapshots have no account."""
        return [
            f"arn:aws:ec2:{region}:{'' if resource.split('/')[0] in ('image', 'snapshot') else '*'}"
            f":{resource}"
            for region in regions
            for resource in resources
        ]

    roles = sorted({cfg.role for cfg in configs})
    purposes = ["build", tags.TEST_INSTANCE]
    prefixes = sorted({cfg.aws.ssm_prefix for cfg in configs})
    profiles = sorted({cfg.aws.instance_profile for cfg in configs if cfg.aws.instance_profile})
    in_regions = {"StringEquals": {"aws:RequestedRegion": regions}}
    bakery_image = {"StringEquals": {f"aws:ResourceTag/{tags.ROLE}": roles}}
    bakery_made = {"StringEquals": {f"aws:ResourceTag/{tags.PURPOSE}": purposes}}
    statements = [
        _statement(
            "Describe",
            [
                "ec2:DescribeImages",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeKeyPairs",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:DescribeLaunchTemplates",
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
        # Prune keeps an image an Auto Scaling launch configuration names; listing them
        # has no resource-level permission.
        _statement(
            "DescribeLaunchConfigurations",
            ["autoscaling:DescribeLaunchConfigurations"],
            "*",
            Condition=in_regions,
        ),
        _statement(
            "ReadImageAndSnapshotAttributes",
            ["ec2:DescribeImageAttribute", "ec2:DescribeSnapshotAttribute"],
            ec2("image/*", "snapshot/*"),
        ),
        _statement(
            "LaunchInstances",
            ["ec2:RunInstances"],
            ec2(
                "image/*",
                "instance/*",
                "key-pair/*",
                "network-interface/*",
                "security-group/*",
                "snapshot/*",
                "subnet/*",
                "volume/*",
            ),
        ),
        # An Allow cannot put a tag condition on the instance alone in one statement that
        # also names the image and subnet; a Deny on the instance can.
        _statement(
            "LaunchOnlyTaggedInstances",
            ["ec2:RunInstances"],
            ec2("instance/*"),
            Effect="Deny",
            Condition={"StringNotEquals": {f"aws:RequestTag/{tags.PURPOSE}": purposes}},
        ),
        # The canary reuses an instance by reading the user data it was launched with; user
        # data can hold a launch-time secret, so only of instances with one of bakery's
        # role tags (what bakery and its launch templates start).
        _statement(
            "ReadOwnInstancesUserData",
            ["ec2:DescribeInstanceAttribute"],
            ec2("instance/*"),
            Condition=bakery_image,
        ),
        _statement(
            "OnlyTouchOwnInstances",
            ["ec2:StopInstances", "ec2:TerminateInstances"],
            ec2("instance/*"),
            Condition=bakery_made,
        ),
        # Tags on an instance, volume, group or key pair only as part of creating it: a
        # later CreateTags has no ec2:CreateAction, so the pipeline cannot tag someone
        # else's instance as a test instance and then terminate it.
        _statement(
            "TagWhatIsCreated",
            ["ec2:CreateTags"],
            ec2(*_tagged_at_launch(packer), "key-pair/*", "security-group/*"),
            Condition={
                "StringEquals": {
                    "ec2:CreateAction": ["CreateSecurityGroup", "ImportKeyPair", "RunInstances"]
                }
            },
        ),
        # An AMI or snapshot tagged as it is made is tagged as one of bakery's roles.
        _statement(
            "TagImagesAsTheyAreMade",
            ["ec2:CreateTags"],
            ec2("image/*", "snapshot/*"),
            Condition={
                "StringEquals": {
                    "ec2:CreateAction": ["CopyImage", "CreateImage"],
                    f"aws:RequestTag/{tags.ROLE}": roles,
                }
            },
        ),
        # Images come only from build instances (a Deny on the instance, as for launch).
        _statement(
            "NewImages",
            ["ec2:CreateImage"],
            ec2("image/*", "instance/*", "snapshot/*"),
        ),
        _statement("CopyImages", ["ec2:CopyImage"], ec2("image/*", "snapshot/*")),
        # bakery's copies are tagged as they are made (distribute.py): none is untagged.
        _statement(
            "CopiesOnlyTaggedAsBakerys",
            ["ec2:CopyImage"],
            ec2("image/*"),
            Effect="Deny",
            Condition={"StringNotEquals": {f"aws:RequestTag/{tags.ROLE}": roles}},
        ),
        _statement(
            "ImagesOnlyFromBuildInstances",
            ["ec2:CreateImage"],
            ec2("instance/*"),
            Effect="Deny",
            Condition={"StringNotEquals": {f"aws:ResourceTag/{tags.PURPOSE}": ["build"]}},
        ),
        # Everything else on images and snapshots, sharing included, only on bakery's.
        _statement(
            "ManageBakeryImages",
            [
                "ec2:CreateTags",
                "ec2:DeleteSnapshot",
                "ec2:DeleteTags",
                "ec2:DeregisterImage",
                "ec2:EnableImageDeprecation",
                "ec2:ModifyImageAttribute",
                "ec2:ModifySnapshotAttribute",
            ],
            ec2("image/*", "snapshot/*"),
            Condition=bakery_image,
        ),
        # Never make a snapshot public, whatever its tags.
        _statement(
            "NeverPublicSnapshots",
            ["ec2:ModifySnapshotAttribute"],
            ec2("snapshot/*"),
            Effect="Deny",
            Condition={"StringEquals": {"ec2:Add/group": "all"}},
        ),
        # bakery makes the build's and the test instance's key pair and group itself
        # (build_access.py, verify.py), tagged as they are created; Packer is handed them
        # and makes none. So each is made with bakery's purpose tag, and changed or
        # deleted only while it carries it.
        _statement(
            "MakeKeysAndGroups",
            ["ec2:CreateSecurityGroup", "ec2:ImportKeyPair"],
            ec2("key-pair/*", "security-group/*", "vpc/*"),
        ),
        _statement(
            "MakeOnlyTaggedKeysAndGroups",
            ["ec2:CreateSecurityGroup", "ec2:ImportKeyPair"],
            ec2("key-pair/*", "security-group/*"),
            Effect="Deny",
            Condition={"StringNotEquals": {f"aws:RequestTag/{tags.PURPOSE}": purposes}},
        ),
        _statement(
            "OwnKeysAndGroups",
            ["ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup"],
            ec2("key-pair/*", "security-group/*"),
            Condition=bakery_made,
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
        # `invoke canary`: is the released service in Application Signals, with metrics
        # and traces? None of these three has a resource-level permission.
        _statement(
            "CanaryReadsTelemetry",
            [
                "application-signals:ListServices",
                "cloudwatch:GetMetricData",
                "xray:GetTraceSummaries",
            ],
            "*",
            Condition=in_regions,
        ),
        # StartDiscovery and its prerequisites: the service-linked role (looked up, made
        # once) and the CloudTrail service channel Application Signals reads.
        _statement(
            "StartApplicationSignals",
            ["application-signals:StartDiscovery"],
            "*",
            Condition=in_regions,
        ),
        _statement(
            "ApplicationSignalsChannel",
            ["cloudtrail:CreateServiceLinkedChannel"],
            [
                f"arn:aws:cloudtrail:{region}:*:channel/{APPLICATION_SIGNALS_CHANNEL}"
                for region in regions
            ],
        ),
        _statement(
            "ApplicationSignalsLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            _linked_role_arn(),
            Condition={"StringEquals": {"iam:AWSServiceName": APPLICATION_SIGNALS_SERVICE}},
        ),
        _statement("ApplicationSignalsLinkedRoleLookup", ["iam:GetRole"], _linked_role_arn()),
    ]
    if not packer_tags_images_as_it_makes_them(packer):
        statements += untagged_build_image_statements(roles, ec2("image/*", "snapshot/*"))
    statements += slo_and_sampling_statements(configs)
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


# With Packer >= 1.7 bakery renders `required_plugins` amazon >= 1.3.0
# (packer/plugins.pkr.hcl.j2). packer-plugin-amazon passes `run_tags` as
# TagSpecifications on CreateImage, for the image and its snapshots, since v1.0.2
# (builder/ebs/step_create_ami.go; bakery never sets `skip_ami_run_tags`), and on
# RunInstances for the instance, its network interface and, with `run_volume_tags`, its
# volumes (builder/common/step_run_source_instance.go). Packer 1.6.6's built-in
# amazon-ebs sends no tags with CreateImage and tags the AMI only once it is available,
# and tags no network interface. (Neither tags at creation in AWS China or GovCloud,
# whose partitions this policy does not name.)


def packer_tags_images_as_it_makes_them(packer: PackerVersion | None) -> bool:
    """Does this Packer's amazon-ebs tag the AMI and snapshots in the CreateImage call?
    The plugin does (Packer >= 1.7); 1.6's built-in builder does not."""
    return packer is not None and packer.has_plugin_system


def _tagged_at_launch(packer: PackerVersion | None) -> list[str]:
    """What RunInstances tags as it launches (bakery's test instance, Packer's build
    instance): the plugin also tags the network interface."""
    made = ["instance/*", "volume/*"]
    if packer is None or packer_tags_images_as_it_makes_them(packer):
        made.append("network-interface/*")
    return made


def untagged_build_image_statements(roles: Sequence[str], images: list[str]) -> list[Policy]:
    """What only Packer 1.6 needs: its CreateImage carries no tags, so a build stopped
    before Packer tagged the AMI leaves an untagged AMI and snapshots, which bakery's
    clean-up removes, and Packer's first tags land on an untagged AMI. The narrowest
    form IAM can express; known gaps (docs/aws.md): a request with a built image's tags
    can claim another untagged AMI, and untagged AMIs and snapshots can be deleted."""
    roles = sorted(roles)
    return [
        # Packer 1.6 tags the AMI and its snapshots once the AMI is available. Those
        # first tags are a built image's: one of bakery's roles, status built and a run
        # id (the template's `tags`/`snapshot_tags`, and bakery's re-tag).
        _statement(
            "TagNewImagesAsBakerys",
            ["ec2:CreateTags"],
            images,
            Condition={
                "Null": {
                    f"aws:ResourceTag/{tags.ROLE}": "true",
                    f"aws:RequestTag/{tags.RUN_ID}": "false",
                },
                "StringEquals": {
                    f"aws:RequestTag/{tags.ROLE}": roles,
                    f"aws:RequestTag/{tags.STATUS}": [tags.BUILT],
                },
            },
        ),
        # A build stopped before Packer tagged its AMI leaves it untagged, and bakery's
        # clean-up removes it: IAM cannot tell it from other untagged AMIs.
        _statement(
            "RemoveUntaggedBuildImages",
            ["ec2:DeleteSnapshot", "ec2:DeregisterImage"],
            images,
            Condition={"Null": {f"aws:ResourceTag/{tags.ROLE}": "true"}},
        ),
        # delete_image marks the snapshots behind an AMI it deregisters, so a delete cut
        # short is found again (images.py). A failed build's untagged AMI has untagged
        # snapshots: they may get that marker and no other tag, which grants nothing.
        _statement(
            "MarkSnapshotsForDeletion",
            ["ec2:CreateTags"],
            [arn for arn in images if ":snapshot/" in arn],
            Condition={
                "ForAllValues:StringEquals": {"aws:TagKeys": [tags.DELETING_WITH]},
                # ForAllValues holds for a request with no tag keys at all: ask for one.
                "Null": {"aws:TagKeys": "false", f"aws:ResourceTag/{tags.ROLE}": "true"},
            },
        ),
    ]


def _linked_role_arn() -> str:
    return (
        f"arn:aws:iam::*:role/aws-service-role/{APPLICATION_SIGNALS_SERVICE}/"
        f"{APPLICATION_SIGNALS_LINKED_ROLE}"
    )


def iam_documents(
    configs: Sequence[BakeryConfig],
    secret_path: str = DEFAULT_SECRET_PATH,
    packer: PackerVersion | None = None,
) -> dict[str, Policy]:
    """{document name: policy} for every role's instances and for the pipeline (for the
    given Packer; None: for any Packer bakery renders for)."""
    documents = {f"instance-{cfg.role}": instance_policy(cfg, secret_path) for cfg in configs}
    documents["pipeline"] = pipeline_policy(configs, packer)
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


def slo_and_sampling_statements(configs: Sequence[BakeryConfig]) -> list[dict[str, Any]]:
    """What `invoke slo` and `invoke sampling` need (bakery/aws/slo.py, sampling.py):
    SLOs, burn-rate alarms and sampling rules named after a configured service
    (`<service>-...`), made only with bakery's role tag and changed or deleted only while
    they carry it; alarms notify only the configured `slo.alarm_actions`."""
    regions = regions_of(configs)
    roles = sorted({cfg.role for cfg in configs})
    services = sorted({cfg.service.name for cfg in configs})
    actions = sorted({action for cfg in configs for action in cfg.slo.alarm_actions})
    in_regions = {"StringEquals": {"aws:RequestedRegion": regions}}
    tagged_as_bakerys = {"StringEquals": {f"aws:RequestTag/{tags.ROLE}": roles}}
    still_bakerys = {"StringEquals": {f"aws:ResourceTag/{tags.ROLE}": roles}}

    def named(service: str, kind: str) -> list[str]:
        return [
            f"arn:aws:{service}:{region}:*:{kind}{name}-*"
            for region in regions
            for name in services
        ]

    # An alarm action can also stop or terminate instances (arn:aws:automate:...):
    # only the configured topics, or none at all.
    notifies = (
        {"ForAllValues:StringEquals": {"cloudwatch:AlarmActions": actions}}
        if actions
        else {"Null": {"cloudwatch:AlarmActions": "true"}}
    )
    return [
        # List operations: no resource-level permission.
        _statement(
            "ListSlosAndSamplingRules",
            ["application-signals:ListServiceLevelObjectives", "xray:GetSamplingRules"],
            "*",
            Condition=in_regions,
        ),
        _statement(
            "ReadServicesSlos",
            [
                "application-signals:BatchGetServiceLevelObjectiveBudgetReport",
                "application-signals:GetServiceLevelObjective",
                "application-signals:ListTagsForResource",
            ],
            named("application-signals", "slo/"),
        ),
        # CreateServiceLevelObjective authorizes on `*` only: the tag is what scopes it.
        _statement(
            "CreateSlosTaggedAsBakerys",
            ["application-signals:CreateServiceLevelObjective"],
            "*",
            Condition={
                "StringEquals": {
                    "aws:RequestedRegion": regions,
                    f"aws:RequestTag/{tags.ROLE}": roles,
                }
            },
        ),
        _statement(
            "TagNewSlosAsBakerys",
            ["application-signals:TagResource"],
            named("application-signals", "slo/"),
            Condition=tagged_as_bakerys,
        ),
        _statement(
            "UpdateOwnSlos",
            ["application-signals:UpdateServiceLevelObjective"],
            named("application-signals", "slo/"),
            Condition=still_bakerys,
        ),
        # An SLO that left config, and its alarms: only while they carry bakery's tag.
        _statement(
            "DeleteOwnSlos",
            ["application-signals:DeleteServiceLevelObjective"],
            named("application-signals", "slo/"),
            Condition=still_bakerys,
        ),
        # DescribeAlarms is a read: any alarm in the regions, so one of a name is found.
        _statement(
            "ReadAlarms",
            ["cloudwatch:DescribeAlarms"],
            [f"arn:aws:cloudwatch:{region}:*:alarm:*" for region in regions],
        ),
        _statement(
            "BurnRateAlarmsTaggedAsBakerys",
            ["cloudwatch:PutMetricAlarm", "cloudwatch:TagResource"],
            named("cloudwatch", "alarm:"),
            Condition={**tagged_as_bakerys, **notifies},
        ),
        _statement(
            "DeleteOwnBurnRateAlarms",
            ["cloudwatch:DeleteAlarms"],
            named("cloudwatch", "alarm:"),
            Condition=still_bakerys,
        ),
        _statement(
            "SamplingRulesTaggedAsBakerys",
            ["xray:CreateSamplingRule", "xray:TagResource"],
            named("xray", "sampling-rule/"),
            Condition=tagged_as_bakerys,
        ),
        _statement(
            "UpdateOwnSamplingRules",
            ["xray:UpdateSamplingRule"],
            named("xray", "sampling-rule/"),
            Condition=still_bakerys,
        ),
        _statement(
            "ReadServicesSamplingRuleTags",
            ["xray:ListTagsForResource"],
            named("xray", "sampling-rule/"),
        ),
    ]
