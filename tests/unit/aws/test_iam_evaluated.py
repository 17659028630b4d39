"""The IAM documents, evaluated by principalmapper (iam_evaluation.py) against the calls
their users make, both ways:

(a) every call bakery and Packer make in the moto runs of tests/unit/aws (recorded by
    call_recorder.py, Packer's own calls through moto's server included) is allowed by
    the pipeline policy, and every call the agent and the distro make on a role's
    instance (docs/aws.md, "What the instances call") by that role's policy;
(b) destructive and sharing actions on resources without bakery's tags are denied,
    the tag-then-terminate bypass included, and so is what a role does not use;
(c) cloudsplaining finds no privilege escalation, resource exposure, credentials
    exposure or unconstrained write or permissions-management action in any document.

The pipeline policy is rendered per Packer version (`iam.pipeline_policy(packer=...)`):
for 1.6.6, the real Packer of the recorded end-to-end run, the gaps IAM cannot close
(docs/aws.md, "the known gaps of Packer 1.6") are asserted open, so the docs get
updated the day they close; for >= 1.7 (packer-plugin-amazon, which tags what it makes
as it makes it) they are asserted closed, against the recorded calls as the plugin
makes them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cloudsplaining.scan.policy_document import PolicyDocument
from policy_sentry.querying.actions import get_action_data

from bakery.aws.iam import (
    APPLICATION_SIGNALS_LOG_GROUP,
    iam_documents,
    service_events_log_group,
)
from bakery.config import BakeryConfig
from bakery.packer import PackerVersion

from .call_recorder import RECORDED_MODULES
from .conftest import OTHER_REGION, REGION, make_config
from .iam_evaluation import (
    ACCOUNT,
    Request,
    allowed,
    ec2_arn,
    request_tags,
    requests_for,
    resource_tags,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
# The configs the recorded tests use: every role, copies to OTHER_REGION, a KMS alias.
CONFIGS = [
    make_config(role, f"aws.copy_regions=['{OTHER_REGION}']", "aws.kms_key_id=alias/bakery-images")
    for role in ("backend", "frontend", "database")
]
FOREIGN = {"team": "payments"}
# The Packer of the recorded end-to-end run (apt's), and one with the amazon plugin.
PACKER_1_6 = PackerVersion(1, 6, 6)
PACKER_WITH_PLUGIN = PackerVersion(1, 10, 0)
# Every form of the pipeline policy: per version, and for any version (None).
PACKERS = {"packer-1.6.6": PACKER_1_6, "packer-1.10.0": PACKER_WITH_PLUGIN, "any-packer": None}


def pipeline(
    configs: list[BakeryConfig] = CONFIGS, packer: PackerVersion | None = PACKER_1_6
) -> dict[str, Any]:
    return iam_documents(configs, packer=packer)["pipeline"]


def ours(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls made by bakery's code or by Packer, not by a test's set-up or checks."""
    return [call for call in calls if call["origin"] in ("bakery", "packer")]


# --- (a) the pipeline ----------------------------------------------------------------


def test_the_recording_holds_every_aws_operation_of_bakery(
    recorded_calls: list[dict[str, Any]],
) -> None:
    origins = {call["origin"] for call in recorded_calls}
    assert origins <= {"bakery", "packer", "test"}, origins
    by_bakery = {
        Path(call["test"].split("::")[0]).name
        for call in recorded_calls
        if call["origin"] == "bakery" and call["test"]
    }
    assert by_bakery >= set(RECORDED_MODULES) - {"test_images.py"}


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x (as the e2e test)")
def test_the_recording_holds_packers_own_calls(recorded_calls: list[dict[str, Any]]) -> None:
    packer = {call["action"] for call in recorded_calls if call["origin"] == "packer"}
    assert packer >= {"RunInstances", "CreateImage", "CreateTags", "TerminateInstances"}


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x (as the e2e test)")
def test_packer_makes_no_key_pair_or_security_group_of_its_own(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """bakery hands Packer a tagged key pair and group (build_access.py)."""
    packer = {call["action"] for call in recorded_calls if call["origin"] == "packer"}
    assert "RunInstances" in packer
    assert not packer & {
        "CreateKeyPair",
        "ImportKeyPair",
        "DeleteKeyPair",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "DeleteSecurityGroup",
    }


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x (as the e2e test)")
def test_packer_encrypts_its_launch_volume_and_images_it_without_an_intermediate_ami(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """With encryption on (the e2e run names a KMS key), the build instance's volume is
    encrypted as launched and CreateImage makes the AMI: no CopyImage, and nothing
    deregistered or deleted by Packer."""
    packer = [call for call in recorded_calls if call["origin"] == "packer"]
    launches = [call["parameters"] for call in packer if call["action"] == "RunInstances"]
    assert launches
    for launch in launches:
        assert launch["BlockDeviceMapping.1.Ebs.Encrypted"] == "true"
        assert launch["BlockDeviceMapping.1.Ebs.KmsKeyId"] == "alias/bakery-images"
    actions = [call["action"] for call in packer]
    assert actions.count("CreateImage") == len(launches)
    assert not {"CopyImage", "DeregisterImage", "DeleteSnapshot"} & set(actions)


def test_bakerys_copies_are_tagged_as_bakerys_as_they_are_made(
    recorded_calls: list[dict[str, Any]],
) -> None:
    copies = [
        call
        for call in ours(recorded_calls)
        if call["action"] in ("CopyImage", "CreateImage") and call["origin"] == "bakery"
    ]
    assert copies
    for call in copies:
        tag_on_create = [r for r in requests_for(call) if r.action == "ec2:CreateTags"]
        kinds = {_resource_type(r.resource) for r in tag_on_create}
        assert kinds == {"image", "snapshot"}, call["parameters"]
        assert all(r.context["aws:RequestTag/bakery:role"] == "backend" for r in tag_on_create)


# `invoke launch-template --create-security-group` is run by an operator with their own
# credentials, once per VPC (docs/aws.md): the pipeline policy does not grant it.
OPERATOR_TEST = "test_launch.py::test_create_security_group_makes_one_with_no_ingress_once"
OPERATOR_ACTIONS = {"CreateSecurityGroup", "CreateTags", "DescribeVpcs"}


def operators(call: dict[str, Any]) -> bool:
    """An operator's call (`invoke launch-template --create-security-group`), never the
    pipeline's: in its own test or in the failure matrix's launch-template scenario."""
    return call["action"] in OPERATOR_ACTIONS and (
        call["test"].endswith(OPERATOR_TEST) or "[launch-template-" in call["test"]
    )


def test_the_operators_security_group_is_not_the_pipelines_to_make(
    recorded_calls: list[dict[str, Any]],
) -> None:
    policy = pipeline()
    made = [
        request
        for call in ours(recorded_calls)
        if operators(call) and call["action"] == "CreateSecurityGroup"
        for request in requests_for(call)
    ]
    assert made
    assert not all(allowed(policy, request) for request in made)


@pytest.mark.parametrize("packer", ["packer-1.6.6", "any-packer"])
def test_every_call_bakery_and_packer_make_is_allowed_by_the_pipeline_policy(
    recorded_calls: list[dict[str, Any]], packer: str
) -> None:
    """The recorded Packer is 1.6.6: its policy, and the one for any Packer, allow all."""
    policy = pipeline(packer=PACKERS[packer])
    requests = [
        request
        for call in ours(recorded_calls)
        if not operators(call)
        for request in requests_for(call)
    ]
    denied = [str(request) for request in requests if not allowed(policy, request)]
    assert len(requests) > 500
    assert denied == []


def _with_tags(parameters: dict[str, Any], kind: str, values: dict[str, str]) -> None:
    """Add a TagSpecification for `kind` to a recorded query-protocol request."""
    taken = {int(k.split(".")[1]) for k in parameters if k.startswith("TagSpecification.")}
    n = max(taken, default=0) + 1
    parameters[f"TagSpecification.{n}.ResourceType"] = kind
    for m, (key, value) in enumerate(sorted(values.items()), start=1):
        parameters[f"TagSpecification.{n}.Tag.{m}.Key"] = key
        parameters[f"TagSpecification.{n}.Tag.{m}.Value"] = value


def as_the_amazon_plugin_makes_them(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded Packer 1.6.6 calls as packer-plugin-amazon (>= 1.0.2, what bakery
    requires with Packer >= 1.7) makes them, read from its source: RunInstances also
    tags the network interface with `run_tags` (builder/common/
    step_run_source_instance.go); CreateImage tags the image and its snapshots with
    `run_tags` (builder/ebs/step_create_ami.go), so the AMI and snapshots Packer tags
    afterwards already carry them. Every other call is the same."""
    changed: list[dict[str, Any]] = []
    run_tags: dict[str, dict[str, str]] = {}  # per test: the build instance's tags
    for call in calls:
        call = json.loads(json.dumps(call))  # a deep copy
        if call["origin"] == "packer":
            parameters = call["parameters"]
            specs = {
                parameters[k]: k.rsplit(".", 1)[0]
                for k in parameters
                if re.fullmatch(r"TagSpecification\.\d+\.ResourceType", k)
            }
            if call["action"] == "RunInstances" and "instance" in specs:
                instance_tags = {
                    parameters[k]: parameters[k[: -len("Key")] + "Value"]
                    for k in parameters
                    if k.startswith(specs["instance"] + ".Tag.") and k.endswith(".Key")
                }
                _with_tags(parameters, "network-interface", instance_tags)
            elif call["action"] == "CreateImage":
                tags_now = call["tags"].get(parameters["InstanceId"], {})
                run_tags[call["test"]] = tags_now
                for kind in ("image", "snapshot"):
                    _with_tags(parameters, kind, tags_now)
            elif call["action"] == "CreateTags":
                for name, values in call["tags"].items():
                    if name.startswith(("ami-", "snap-")) and "bakery:role" not in values:
                        call["tags"][name] = {**run_tags.get(call["test"], {}), **values}
        changed.append(call)
    return changed


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x (as the e2e test)")
def test_packer_1_6_tags_its_instance_and_volumes_as_it_launches_but_not_its_images(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """What tells the two policies apart, seen in the recorded run of the real 1.6.6."""
    packer = [call for call in recorded_calls if call["origin"] == "packer"]
    launched = [
        {v for k, v in call["parameters"].items() if k.endswith(".ResourceType")}
        for call in packer
        if call["action"] == "RunInstances"
    ]
    assert launched and all(kinds == {"instance", "volume"} for kinds in launched)
    imaged = [call for call in packer if call["action"] == "CreateImage"]
    assert imaged and not any("TagSpecification.1.ResourceType" in c["parameters"] for c in imaged)


@pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x (as the e2e test)")
def test_with_the_plugin_only_calls_on_images_packer_1_6_left_untagged_are_denied(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """The policy for Packer >= 1.7 allows every recorded call as the plugin makes it,
    except bakery's clean-up of AMIs and snapshots without bakery:role, which only a
    Packer 1.6 build leaves (the plugin's CreateImage tags them)."""
    policy = pipeline(packer=PACKER_WITH_PLUGIN)
    denied: list[Request] = []
    checked = 0
    for call in as_the_amazon_plugin_makes_them(ours(recorded_calls)):
        if operators(call):
            continue
        for request in requests_for(call):
            checked += 1
            if not allowed(policy, request):
                denied.append(request)
    assert checked > 500
    untagged_image_actions = {"ec2:CreateTags", "ec2:DeleteSnapshot", "ec2:DeregisterImage"}
    not_the_gap = [
        str(r)
        for r in denied
        if r.action not in untagged_image_actions
        or _resource_type(r.resource) not in ("image", "snapshot")
        or "aws:ResourceTag/bakery:role" in r.context
        or not r.why.startswith("bakery ")
    ]
    assert not_the_gap == []
    # And the plugin's own calls are all allowed, tagged as they are.
    assert not [r for r in denied if r.why.startswith("packer ")]


def test_requests_name_only_resource_types_the_service_reference_lists(
    recorded_calls: list[dict[str, Any]],
) -> None:
    """requests_for is ours: hold it to the Service Authorization Reference."""
    seen: set[tuple[str, str]] = set()
    for call in ours(recorded_calls):
        for request in requests_for(call):
            kind = "*" if request.resource == "*" else _resource_type(request.resource)
            seen.add((request.action, kind))
    for action, kind in sorted(seen):
        service, name = action.split(":")
        listed = {
            "*" if row["resource_arn_format"] == "*" else _resource_type(row["resource_arn_format"])
            for row in get_action_data(service, name)[service]
        }
        assert kind in listed, f"{action} is not authorized on {kind}: {sorted(listed)}"


def _resource_type(arn: str) -> str:
    """`instance` of arn:aws:ec2:r:a:instance/i-1, `parameter` of ...:parameter/x."""
    return re.split(r"[/:]", arn.split(":", 5)[5])[0]


# --- (a) the instances ----------------------------------------------------------------


def _logs(action: str, region: str, group: str, stream: str | None = None) -> Request:
    arn = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}"
    return Request(f"logs:{action}", arn + (f":log-stream:{stream}" if stream else ""))


def agent_and_distro_calls(cfg: BakeryConfig) -> list[Request]:
    """What the agent and distro call on a role's instance (docs/aws.md lists the source
    file of each): host metrics and the role's log files on every role; Application
    Signals and Service Events on the backend; the launch-time secret where read."""
    region = cfg.aws.region
    group = cfg.service.log_group
    calls = [
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "CWAgent"}),
        _logs("CreateLogStream", region, group, "i-0123456789abcdef0/app.log"),
        _logs("CreateLogGroup", region, group),
        _logs("PutLogEvents", region, group, "i-0123456789abcdef0/app.log"),
        Request("logs:DescribeLogGroups", "*"),
        _logs("PutRetentionPolicy", region, group),
    ]
    if cfg.role == "backend":
        events = service_events_log_group(cfg)
        calls += [
            _logs("CreateLogGroup", region, APPLICATION_SIGNALS_LOG_GROUP),
            _logs("CreateLogStream", region, APPLICATION_SIGNALS_LOG_GROUP, "i-0abc"),
            _logs("PutLogEvents", region, APPLICATION_SIGNALS_LOG_GROUP, "i-0abc"),
            _logs("CreateLogGroup", region, events),
            _logs("CreateLogStream", region, events, "default"),
            _logs("PutLogEvents", region, events, "default"),
            # Service Events error metrics over the OTLP endpoint: no namespace key.
            Request("cloudwatch:PutMetricData", "*"),
            Request("ec2:DescribeTags", "*"),
            Request("xray:PutTraceSegments", "*"),
            Request("xray:PutTelemetryRecords", "*"),
            Request("xray:GetSamplingRules", "*"),
            Request("xray:GetSamplingTargets", "*"),
        ]
    if cfg.role in ("backend", "database"):
        name = "bakery/secrets/staging/db-password"
        calls.append(
            Request("ssm:GetParameter", f"arn:aws:ssm:{region}:{ACCOUNT}:parameter/{name}")
        )
    return calls


@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_every_call_the_agent_and_distro_make_is_allowed_by_the_role_policy(role: str) -> None:
    cfg = make_config(role)
    policy = iam_documents([cfg])[f"instance-{role}"]
    denied = [str(call) for call in agent_and_distro_calls(cfg) if not allowed(policy, call)]
    assert denied == []


@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_the_user_data_example_stays_inside_the_role_policy(role: str) -> None:
    cfg = make_config(role)
    policy = iam_documents([cfg])[f"instance-{role}"]
    text = (REPO / "docs" / "examples" / "user-data" / f"{role}.yaml").read_text()
    settings = dict(re.findall(r"^\s+([A-Z_]+)=(.*)$", text, re.M))
    write = _logs("PutLogEvents", REGION, settings["LOG_GROUP_NAME"], "i-0abc/app.log")
    assert allowed(policy, write)
    if "DB_PASSWORD_SSM_PARAMETER" in settings:
        name = settings["DB_PASSWORD_SSM_PARAMETER"].lstrip("/")
        secret = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name}"
        assert allowed(policy, Request("ssm:GetParameter", secret))


# --- (b) what is denied ----------------------------------------------------------------

_SIGNALS_ONLY = [
    Request("xray:PutTraceSegments", "*"),
    Request("xray:GetSamplingRules", "*"),
    Request("ec2:DescribeTags", "*"),
    Request("cloudwatch:PutMetricData", "*"),
    _logs("PutLogEvents", REGION, APPLICATION_SIGNALS_LOG_GROUP, "i-0abc"),
    _logs("PutLogEvents", REGION, "/aws/service-events/bakery-app", "default"),
]


@pytest.mark.parametrize("role", ["frontend", "database"])
@pytest.mark.parametrize("call", _SIGNALS_ONLY, ids=str)
def test_roles_without_application_signals_get_none_of_it(role: str, call: Request) -> None:
    assert not allowed(iam_documents([make_config(role)])[f"instance-{role}"], call)


@pytest.mark.parametrize(
    ("role", "call"),
    [
        (
            "frontend",
            Request(
                "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/bakery/secrets/x"
            ),
        ),
        (
            "backend",
            Request("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/other/x"),
        ),
        ("backend", Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Other"})),
        ("backend", _logs("PutLogEvents", REGION, "/aws/other", "s")),
        ("backend", _logs("PutRetentionPolicy", REGION, APPLICATION_SIGNALS_LOG_GROUP)),
        ("database", _logs("DeleteLogGroup", REGION, "/aws/ec2/bakery-app")),
    ],
    ids=str,
)
def test_a_role_gets_nothing_beyond_its_own(role: str, call: Request) -> None:
    assert not allowed(iam_documents([make_config(role)])[f"instance-{role}"], call)


def _ec2(action: str, kind: str, name: str, context: dict[str, Any] | None = None) -> Request:
    return Request(
        f"ec2:{action}",
        ec2_arn(kind, name, REGION),
        {"aws:RequestedRegion": REGION, **(context or {})},
    )


_NOT_OURS = resource_tags(FOREIGN)
DENIED = {
    "terminate an instance bakery did not tag": _ec2(
        "TerminateInstances", "instance", "i-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "stop an instance bakery did not tag": _ec2(
        "StopInstances", "instance", "i-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "tag someone's instance as a test instance (then terminate it)": _ec2(
        "CreateTags",
        "instance",
        "i-0f0e0d0c0b0a09080",
        {**_NOT_OURS, **request_tags({"bakery:purpose": "test-instance"})},
    ),
    "tag someone's volume as bakery's": _ec2(
        "CreateTags", "volume", "vol-0f0e0d0c0b0a09080", request_tags({"bakery:purpose": "build"})
    ),
    "mark an untagged snapshot for deletion and claim it as bakery's in one request": _ec2(
        "CreateTags",
        "snapshot",
        "snap-0f0e0d0c0b0a09080",
        request_tags({"bakery:deleting-with": "ami-0f0e0d0c0b0a09080", "bakery:role": "backend"}),
    ),
    "mark a snapshot of someone's tagged AMI for deletion": _ec2(
        "CreateTags",
        "snapshot",
        "snap-0f0e0d0c0b0a09080",
        {
            **_NOT_OURS,
            **resource_tags({"bakery:role": "payments"}),
            **request_tags({"bakery:deleting-with": "ami-0f0e0d0c0b0a09080"}),
        },
    ),
    "read the user data of an instance bakery did not start": _ec2(
        "DescribeInstanceAttribute", "instance", "i-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "tag someone's security group as a test group (then open it)": _ec2(
        "CreateTags",
        "security-group",
        "sg-0f0e0d0c0b0a09080",
        {**_NOT_OURS, **request_tags({"bakery:purpose": "test-instance"})},
    ),
    "launch an untagged instance": _ec2("RunInstances", "instance", "*"),
    "image an instance that is not a build instance": _ec2(
        "CreateImage",
        "instance",
        "i-0f0e0d0c0b0a09080",
        resource_tags({"bakery:purpose": "test-instance"}),
    ),
    "claim someone's untagged AMI with a bare bakery:role": _ec2(
        "CreateTags",
        "image",
        "ami-0f0e0d0c0b0a09080",
        {**_NOT_OURS, **request_tags({"bakery:role": "backend"})},
    ),
    "copy an AMI without tagging the copy as bakery's": _ec2(
        "CopyImage", "image", "ami-0f0e0d0c0b0a09080", resource_tags({"bakery:role": "backend"})
    ),
    "tag an AMI as it is copied, but not as one of bakery's roles": _ec2(
        "CreateTags",
        "image",
        "*",
        {**request_tags({"team": "payments"}), "ec2:CreateAction": "CopyImage"},
    ),
    "share someone's AMI": _ec2(
        "ModifyImageAttribute", "image", "ami-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "share someone's snapshot": _ec2(
        "ModifySnapshotAttribute",
        "snapshot",
        "snap-0f0e0d0c0b0a09080",
        {**_NOT_OURS, "ec2:Add/userId": ["210987654321"]},
    ),
    "make bakery's snapshot public": _ec2(
        "ModifySnapshotAttribute",
        "snapshot",
        "snap-0f0e0d0c0b0a09080",
        {**resource_tags({"bakery:role": "backend"}), "ec2:Add/group": ["all"]},
    ),
    "deprecate someone's AMI": _ec2(
        "EnableImageDeprecation", "image", "ami-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "untag someone's AMI": _ec2("DeleteTags", "image", "ami-0f0e0d0c0b0a09080", _NOT_OURS),
    "delete a volume": _ec2("DeleteVolume", "volume", "vol-0f0e0d0c0b0a09080"),
    "detach a volume": _ec2("DetachVolume", "volume", "vol-0f0e0d0c0b0a09080"),
    "delete someone's key pair": _ec2("DeleteKeyPair", "key-pair", "deploy-key", _NOT_OURS),
    "delete an untagged key pair named like Packer's": _ec2(
        "DeleteKeyPair", "key-pair", "packer_5efef9ee-8e20-3ea4-cdff-78601d66f288"
    ),
    "delete an untagged security group": _ec2(
        "DeleteSecurityGroup", "security-group", "sg-0f0e0d0c0b0a09080"
    ),
    "delete someone's security group": _ec2(
        "DeleteSecurityGroup", "security-group", "sg-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "open someone's security group": _ec2(
        "AuthorizeSecurityGroupIngress", "security-group", "sg-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "make a security group without bakery's tags": _ec2(
        "CreateSecurityGroup", "security-group", "*", request_tags(FOREIGN)
    ),
    "import a key pair without bakery's tags": _ec2("ImportKeyPair", "key-pair", "packer_x"),
    "create a key pair (bakery imports its own)": _ec2(
        "CreateKeyPair", "key-pair", "bakery-x", request_tags({"bakery:purpose": "build"})
    ),
    "write a parameter outside the prefix": Request(
        "ssm:PutParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/payments/db-url"
    ),
    "pass a role other than the instance profile's": Request(
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/admin",
        {"iam:PassedToService": "ec2.amazonaws.com"},
    ),
    "create another service's linked role": Request(
        "iam:CreateServiceLinkedRole",
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
        {"iam:AWSServiceName": "ecs.amazonaws.com"},
    ),
    "create another CloudTrail channel": Request(
        "cloudtrail:CreateServiceLinkedChannel",
        f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/other",
    ),
    "use a KMS key directly, not through EC2": Request(
        "kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    ),
    "describe in a region bakery does not use": Request(
        "ec2:DescribeInstances", "*", {"aws:RequestedRegion": "ap-south-1"}
    ),
}


@pytest.mark.parametrize("packer", sorted(PACKERS))
@pytest.mark.parametrize("what", sorted(DENIED))
def test_the_pipeline_policy_denies(what: str, packer: str) -> None:
    assert not allowed(pipeline(packer=PACKERS[packer]), DENIED[what]), what


@pytest.mark.parametrize("packer", sorted(PACKERS))
def test_the_pipeline_policy_allows_the_same_actions_on_bakerys_resources(packer: str) -> None:
    """The denials above come from the tags, not from missing actions."""
    ours_ = resource_tags({"bakery:purpose": "test-instance", "bakery:role": "backend"})
    for action, kind, name in [
        ("TerminateInstances", "instance", "i-0f0e0d0c0b0a09080"),
        ("ModifyImageAttribute", "image", "ami-0f0e0d0c0b0a09080"),
        ("DeleteTags", "image", "ami-0f0e0d0c0b0a09080"),
        ("DeleteKeyPair", "key-pair", "bakery-verify-backend-0a1b2c3d"),
        ("DeleteSecurityGroup", "security-group", "sg-0a1b2c3d4e5f60718"),
        ("AuthorizeSecurityGroupIngress", "security-group", "sg-0a1b2c3d4e5f60718"),
    ]:
        assert allowed(pipeline(packer=PACKERS[packer]), _ec2(action, kind, name, ours_)), action


# What Packer 1.6 needs on AMIs and snapshots without bakery:role (docs/aws.md, "known
# gaps"), and so what its policy cannot deny on an AMI or snapshot of another team.
_PACKER_1_6_GAPS = {
    "deregister someone's untagged AMI": _ec2(
        "DeregisterImage", "image", "ami-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    "delete someone's untagged snapshot": _ec2(
        "DeleteSnapshot", "snapshot", "snap-0f0e0d0c0b0a09080", _NOT_OURS
    ),
    # Claiming an AMI with the first tags of a built image (Packer 1.6 tags its AMI
    # only after CreateImage), after which it can be shared.
    "claim someone's untagged AMI with a built image's tags": _ec2(
        "CreateTags",
        "image",
        "ami-0f0e0d0c0b0a09080",
        {
            **_NOT_OURS,
            **request_tags(
                {"bakery:role": "backend", "bakery:status": "built", "bakery:run-id": "x"}
            ),
        },
    ),
    "mark someone's untagged snapshot for deletion": _ec2(
        "CreateTags",
        "snapshot",
        "snap-0f0e0d0c0b0a09080",
        {**_NOT_OURS, **request_tags({"bakery:deleting-with": "ami-0f0e0d0c0b0a09080"})},
    ),
}


@pytest.mark.parametrize("what", sorted(_PACKER_1_6_GAPS))
def test_with_the_amazon_plugin_the_packer_1_6_gaps_are_denied(what: str) -> None:
    assert not allowed(pipeline(packer=PACKER_WITH_PLUGIN), _PACKER_1_6_GAPS[what])


@pytest.mark.parametrize("packer", ["packer-1.6.6", "any-packer"])
@pytest.mark.parametrize("what", sorted(_PACKER_1_6_GAPS))
def test_with_packer_1_6_the_known_gaps_are_open_as_documented(what: str, packer: str) -> None:
    """docs/aws.md names these gaps: this fails the day one closes, so the docs follow."""
    assert allowed(pipeline(packer=PACKERS[packer]), _PACKER_1_6_GAPS[what])


def _reaches_resources_without_a_tag(statement: dict[str, Any]) -> bool:
    """A Null condition that asks for a resource tag to be absent (an untagged resource)."""
    null = statement.get("Condition", {}).get("Null", {})
    return any(
        key.startswith("aws:ResourceTag/") and value == "true" for key, value in null.items()
    )


def test_with_the_amazon_plugin_no_statement_reaches_an_image_without_bakerys_role() -> None:
    untagged = [
        statement["Sid"]
        for statement in pipeline(packer=PACKER_WITH_PLUGIN)["Statement"]
        if statement["Effect"] == "Allow" and _reaches_resources_without_a_tag(statement)
    ]
    assert untagged == []
    assert [
        s["Sid"]
        for s in pipeline(packer=PACKER_1_6)["Statement"]
        if _reaches_resources_without_a_tag(s)
    ] == ["TagNewImagesAsBakerys", "RemoveUntaggedBuildImages", "MarkSnapshotsForDeletion"]


@pytest.mark.parametrize("group", [None, "sg-0123456789abcdef0"])
def test_untagged_groups_and_key_pairs_are_out_of_reach_with_or_without_a_configured_group(
    group: str | None,
) -> None:
    """bakery makes the build's group and key pair itself: no config needs Packer's."""
    configs = [make_config("backend", *([f"aws.security_group_id={group}"] if group else []))]
    for action, kind, name in [
        ("DeleteSecurityGroup", "security-group", "sg-0f0e0d0c0b0a09080"),
        ("AuthorizeSecurityGroupIngress", "security-group", "sg-0f0e0d0c0b0a09080"),
        ("DeleteKeyPair", "key-pair", "packer_5efef9ee-8e20-3ea4-cdff-78601d66f288"),
    ]:
        for untagged in ({}, _NOT_OURS):
            assert not allowed(pipeline(configs), _ec2(action, kind, name, untagged)), action


# Write or permissions-management actions that may name a resource bakery did not make
# without changing it: launching from an image into a subnet and group, copying an
# image, creating a group in a VPC, a new image; StartDiscovery has no
# resource. Every other one must be denied on a resource without bakery's tags.
_USES_WITHOUT_CHANGING = {
    "ec2:RunInstances": {
        "image",
        "subnet",
        "security-group",
        "key-pair",
        "snapshot",
        "volume",
        "network-interface",
    },
    "ec2:CopyImage": {"snapshot"},
    "ec2:CreateImage": {"image", "snapshot"},
    "ec2:CreateSecurityGroup": {"vpc"},
    "application-signals:StartDiscovery": {"*"},
}
_GAPS = {
    "ec2:DeregisterImage": {"image"},
    "ec2:DeleteSnapshot": {"snapshot"},
}
# Only the policies that serve Packer 1.6 have them.
_GAPS_OF = {"packer-1.6.6": _GAPS, "any-packer": _GAPS, "packer-1.10.0": {}}


def _foreign(arn_format: str) -> str:
    """An ARN of the format naming a resource nobody in bakery made."""
    arn = arn_format.replace("${Partition}", "aws").replace("${Region}", REGION)
    arn = arn.replace("${Account}", ACCOUNT)
    return re.sub(r"\$\{[A-Za-z]+\}", "foreign-0f0e0d0c", arn)


@pytest.mark.parametrize("packer", sorted(PACKERS))
def test_every_write_the_pipeline_may_make_needs_bakerys_tags(packer: str) -> None:
    policy = pipeline(packer=PACKERS[packer])
    gaps = _GAPS_OF[packer]
    granted = sorted(
        {
            action
            for statement in policy["Statement"]
            if statement["Effect"] == "Allow"
            for action in statement["Action"]
        }
    )
    checked = 0
    reached: list[str] = []
    for action in granted:
        service, name = action.split(":")
        for row in get_action_data(service, name)[service]:
            if row["access_level"] not in ("Write", "Permissions management", "Tagging"):
                continue
            fmt = row["resource_arn_format"]
            kind = "*" if fmt == "*" else _resource_type(fmt)
            if kind in _USES_WITHOUT_CHANGING.get(action, set()) | gaps.get(action, set()):
                continue
            if fmt == "*" and any(
                r["resource_arn_format"] != "*" for r in get_action_data(service, name)[service]
            ):
                continue  # the resource-level rows are the ones AWS checks
            request = Request(
                action,
                "*" if fmt == "*" else _foreign(fmt),
                {"aws:RequestedRegion": REGION, **_NOT_OURS},
            )
            checked += 1
            if allowed(policy, request):
                reached.append(str(request))
    assert checked > 20
    assert reached == []


# --- (c) cloudsplaining ----------------------------------------------------------------


def findings(policy: dict[str, Any]) -> dict[str, Any]:
    document = PolicyDocument(policy)
    return {
        "privilege escalation": document.allows_privilege_escalation,
        "resource exposure (permissions management without constraints)": (
            document.permissions_management_without_constraints
        ),
        "unconstrained write": document.write_actions_without_constraints,
        "unconstrained tagging": document.tagging_actions_without_constraints,
        "data exfiltration": document.allows_data_exfiltration_actions,
        "credentials exposure": document.credentials_exposure,
        "infrastructure modification": document.infrastructure_modification,
        "service wildcard": document.service_wildcard,
        "NotAction": document.contains_statement_using_not_action,
    }


@pytest.mark.parametrize("packer", sorted(PACKERS))
@pytest.mark.parametrize(
    "name", ["instance-backend", "instance-frontend", "instance-database", "pipeline"]
)
def test_cloudsplaining_finds_nothing(name: str, packer: str) -> None:
    policy = iam_documents(CONFIGS, packer=PACKERS[packer])[name]
    found = {kind: items for kind, items in findings(policy).items() if items}
    assert found == {}


def test_cloudsplaining_does_flag_what_the_old_documents_had() -> None:
    """The scanner is not blind to our kind of statement: the same actions on "*"."""
    old = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:ModifySnapshotAttribute", "iam:PassRole"],
                "Resource": "*",
            }
        ],
    }
    found = findings(old)
    assert "ec2:TerminateInstances" in found["unconstrained write"]
    assert (
        "ec2:ModifySnapshotAttribute"
        in found["resource exposure (permissions management without constraints)"]
    )


# --- (a, b) `invoke slo` and `invoke sampling` ------------------------------------------
# Their calls go to application-signals and X-Ray through Stubber and to moto's
# CloudWatch (test_slo.py, test_sampling.py); here every call bakery's code makes in
# those runs is captured from botocore's events and evaluated against the pipeline
# policy, with the tags the resource has and the request carries.


def _captured(clients: list[Any], run: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(service, operation, parameters) of every call `run` makes on the clients."""
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def capture(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.service_model.endpoint_prefix, model.name, dict(params)))

    for client in clients:
        client.meta.events.register("provide-client-params", capture)
    try:
        run()
    finally:
        for client in clients:
            client.meta.events.unregister("provide-client-params", capture)
    return calls


BAKERYS = {"bakery:role": "backend", "bakery:environment": "staging", "project": "bakery"}


def _release_settings_requests(
    service: str, operation: str, params: dict[str, Any], existing: dict[str, str]
) -> list[Request]:
    """The IAM requests AWS authorizes for one call (Service Authorization Reference:
    the resource each action names, and its condition keys)."""
    base: dict[str, Any] = {"aws:RequestedRegion": REGION}
    asked = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
    prefix = {"application-signals": "application-signals", "monitoring": "cloudwatch"}.get(
        service, service
    )
    action = f"{prefix}:{operation}"
    slo_arn = f"arn:aws:application-signals:{REGION}:{ACCOUNT}:slo/"
    match action:
        case "application-signals:ListServiceLevelObjectives" | "xray:GetSamplingRules":
            return [Request(action, "*", base)]
        case "application-signals:CreateServiceLevelObjective":
            return [Request(action, "*", {**base, **request_tags(asked)})]
        case (
            "application-signals:GetServiceLevelObjective"
            | "application-signals:UpdateServiceLevelObjective"
            | "application-signals:DeleteServiceLevelObjective"
        ):
            return [Request(action, slo_arn + params["Id"], {**base, **resource_tags(existing)})]
        case "application-signals:ListTagsForResource":
            return [Request(action, params["ResourceArn"], base)]
        case "cloudwatch:DeleteAlarms":
            alarm_arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:"
            context = {**base, **resource_tags(existing)}
            return [Request(action, alarm_arn + name, context) for name in params["AlarmNames"]]
        case "application-signals:BatchGetServiceLevelObjectiveBudgetReport":
            return [Request(action, arn, base) for arn in params["SloIds"]]
        case "cloudwatch:DescribeAlarms" | "cloudwatch:PutMetricAlarm":
            record = {"service": "cloudwatch", "action": operation, "region": REGION,
                      "account": ACCOUNT, "parameters": params}  # fmt: skip
            return requests_for(record)
        case "xray:CreateSamplingRule":
            name = params["SamplingRule"]["RuleName"]
            arn = f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/{name}"
            return [Request(action, arn, {**base, **request_tags(asked)})]
        case "xray:UpdateSamplingRule":
            name = params["SamplingRuleUpdate"]["RuleName"]
            arn = f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/{name}"
            return [Request(action, arn, {**base, **resource_tags(existing)})]
        case "xray:ListTagsForResource":
            return [Request(action, params["ResourceARN"], base)]
    raise LookupError(f"no IAM mapping for {action}")


def _slo_and_sampling_calls() -> list[tuple[str, str, dict[str, Any]]]:
    """Every call of a create, an update and a deletion run and a listing of `invoke slo`, and of
    a create and an update run of `invoke sampling`, as the unit tests make them."""
    from datetime import datetime, timezone

    from moto import mock_aws

    from bakery.aws import sampling, slo

    from . import test_sampling as sampling_tests
    from . import test_slo as slo_tests

    calls: list[tuple[str, str, dict[str, Any]]] = []
    topic = "arn:aws:sns:us-east-1:123456789012:oncall"
    with mock_aws():
        cfg = make_config("backend", f"slo.alarm_actions=[{topic}]")
        double = slo_tests.SloDouble()
        wanted = slo_tests.requests_of(cfg)
        double.all_new(cfg)
        apply = lambda: slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)  # noqa: E731
        calls += _captured([double.signals, double.cloudwatch], apply)
        # An update run: the first SLO's description is stale, the rest are as wanted.
        first = next(iter(wanted))
        edited = {**wanted[first], "Description": wanted[first]["Description"] + " (old)"}
        double.present(first, edited)
        double.updated(first, wanted[first])
        for name in list(wanted)[1:]:
            double.present(name, wanted[name])
        double.listing(cfg, *wanted)
        calls += _captured([double.signals, double.cloudwatch], apply)
        # A deletion run: the availability entry left config; its SLO and alarms go.
        after = make_config("backend", f"slo.alarm_actions=[{topic}]", slo_tests.ONLY_LATENCY)
        gone = slo_tests.AVAILABILITY
        double.all_present(after, gone)
        double.present(gone, wanted[gone])
        double.tagged(gone, slo_tests.bakery_tags(cfg))
        double.deleted(gone)
        delete = lambda: slo.apply_slos(after, "staging", apply=True, clients=double.clients)  # noqa: E731
        calls += _captured([double.signals, double.cloudwatch], delete)
        when = datetime(2030, 1, 1, tzinfo=timezone.utc)
        double.listed(cfg, first, [], when=when)
        listing = lambda: slo.list_slos(cfg, "staging", when, clients=double.clients)  # noqa: E731
        calls += _captured([double.signals], listing)
        double.stub.assert_no_pending_responses()

    xray = sampling_tests.XRayDouble()
    rule = sampling.wanted_rule(cfg, "staging")
    xray.rules()
    xray.creates(rule)
    create = lambda: sampling.apply_sampling(cfg, "staging", apply=True, client=xray.factory)  # noqa: E731
    calls += _captured([xray.client], create)
    xray.rules({**sampling_tests.stored(rule), "FixedRate": 0.5})
    xray.tagged(sampling_tests.stored(rule), {"bakery:role": "backend"})
    update_rule = {k: rule[k] for k in ("RuleName", *sampling._UPDATABLE)}
    xray.stub.add_response(
        "update_sampling_rule",
        {"SamplingRuleRecord": {"SamplingRule": sampling_tests.stored(rule)}},
        {"SamplingRuleUpdate": update_rule},
    )
    calls += _captured([xray.client], create)
    xray.stub.assert_no_pending_responses()
    return calls


def test_every_call_of_slo_and_sampling_is_allowed_by_the_pipeline_policy() -> None:
    cfg = make_config("backend", "slo.alarm_actions=[arn:aws:sns:us-east-1:123456789012:oncall]")
    policy = iam_documents([cfg])["pipeline"]
    calls = _slo_and_sampling_calls()
    operations = {f"{service}:{operation}" for service, operation, _ in calls}
    assert operations == {
        "application-signals:GetServiceLevelObjective",
        "application-signals:CreateServiceLevelObjective",
        "application-signals:UpdateServiceLevelObjective",
        "application-signals:ListServiceLevelObjectives",
        "application-signals:BatchGetServiceLevelObjectiveBudgetReport",
        "application-signals:ListTagsForResource",
        "application-signals:DeleteServiceLevelObjective",
        "monitoring:DescribeAlarms",
        "monitoring:PutMetricAlarm",
        "monitoring:DeleteAlarms",
        "xray:GetSamplingRules",
        "xray:CreateSamplingRule",
        "xray:ListTagsForResource",
        "xray:UpdateSamplingRule",
    }
    requests = [
        request
        for service, operation, params in calls
        for request in _release_settings_requests(service, operation, params, BAKERYS)
    ]
    denied = [str(request) for request in requests if not allowed(policy, request)]
    assert denied == []


_SLO = f"arn:aws:application-signals:{REGION}:{ACCOUNT}:slo/fastapi-backend-staging-x"
_RULE = f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/fastapi-backend-staging"
_ALARM = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:fastapi-backend-staging-x-burn-rate-60m"
_IN_REGION = {"aws:RequestedRegion": REGION}
RELEASE_SETTINGS_DENIED = {
    "an SLO created without bakery's tag": Request(
        "application-signals:CreateServiceLevelObjective",
        "*",
        {**_IN_REGION, **request_tags(FOREIGN)},
    ),
    "an SLO created in a region bakery does not use": Request(
        "application-signals:CreateServiceLevelObjective",
        "*",
        {"aws:RequestedRegion": "ap-south-1", **request_tags(BAKERYS)},
    ),
    "an SLO that is not bakery's updated": Request(
        "application-signals:UpdateServiceLevelObjective", _SLO, resource_tags(FOREIGN)
    ),
    "an SLO of another service updated": Request(
        "application-signals:UpdateServiceLevelObjective",
        f"arn:aws:application-signals:{REGION}:{ACCOUNT}:slo/payments-staging-x",
        resource_tags(BAKERYS),
    ),
    "an SLO that is not bakery's deleted": Request(
        "application-signals:DeleteServiceLevelObjective", _SLO, resource_tags(FOREIGN)
    ),
    "an SLO of another service deleted": Request(
        "application-signals:DeleteServiceLevelObjective",
        f"arn:aws:application-signals:{REGION}:{ACCOUNT}:slo/payments-staging-x",
        resource_tags(BAKERYS),
    ),
    "an alarm that is not bakery's deleted": Request(
        "cloudwatch:DeleteAlarms", _ALARM, resource_tags(FOREIGN)
    ),
    "an alarm of another service deleted": Request(
        "cloudwatch:DeleteAlarms",
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:payments-staging-x-burn-rate-60m",
        resource_tags(BAKERYS),
    ),
    "an alarm that terminates instances": Request(
        "cloudwatch:PutMetricAlarm",
        _ALARM,
        {
            **request_tags(BAKERYS),
            "cloudwatch:AlarmActions": [f"arn:aws:automate:{REGION}:ec2:terminate"],
        },
    ),
    "an alarm without bakery's tag": Request(
        "cloudwatch:PutMetricAlarm", _ALARM, request_tags(FOREIGN)
    ),
    "a sampling rule created without bakery's tag": Request(
        "xray:CreateSamplingRule", _RULE, request_tags(FOREIGN)
    ),
    "a sampling rule that is not bakery's updated": Request(
        "xray:UpdateSamplingRule", _RULE, resource_tags(FOREIGN)
    ),
    "X-Ray's Default rule updated": Request(
        "xray:UpdateSamplingRule",
        f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/Default",
        resource_tags(BAKERYS),
    ),
}


@pytest.mark.parametrize("what", sorted(RELEASE_SETTINGS_DENIED))
def test_the_pipeline_policy_keeps_slo_and_sampling_to_bakerys_own(what: str) -> None:
    assert not allowed(pipeline(), RELEASE_SETTINGS_DENIED[what]), what
