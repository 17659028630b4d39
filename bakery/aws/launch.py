"""Launch templates for the golden AMIs: what a role's instances in an environment launch
with, as EC2 `LaunchTemplateData`.

The image is not an AMI id but `resolve:ssm:<parameter>`, the parameter `invoke release`
writes (`release.parameter_name`). EC2 resolves it at each launch, so a release or a
rollback takes effect for every new instance without a new template version. The rest
is what the images expect at launch: the instance profile whose role has the policy
`invoke iam` writes (`iam/instance-<role>.json`), IMDSv2 required (the images are
verified with it), bakery's tags, and cloud-init user data that writes
/etc/bakery/launch.env (by default the role's example, docs/examples/user-data/).

Security groups are optional, and checked: the CloudWatch agent listens on 0.0.0.0 for
OTLP (4315, 4316) and the X-Ray proxy (2000) and authenticates no sender, so a group
the template attaches may have no ingress rule that reaches those ports. The app on
the instance reaches its agent through localhost, which no security group filters.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import yaml

from bakery.aws import tags
from bakery.aws.clients import aws_errors, ec2_client, error_code, ssm_client
from bakery.aws.iam import instance_role_name
from bakery.aws.release import check_environment, parameter_name, parameter_values
from bakery.config import REPO_ROOT, BakeryConfig
from bakery.errors import BadInput

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        IpPermissionOutputTypeDef,
        RequestLaunchTemplateDataTypeDef,
        SecurityGroupTypeDef,
    )

EXAMPLES = REPO_ROOT / "docs" / "examples" / "user-data"
LAUNCH_ENV = "/etc/bakery/launch.env"
# EC2 refuses more user data than this (counted before base64).
MAX_USER_DATA_BYTES = 16 * 1024
# The CloudWatch agent's OTLP gRPC, OTLP HTTP and X-Ray proxy ports: for the instance
# itself only, so no security group rule may reach them.
AGENT_PORTS = (4315, 4316, 2000)


def example_user_data(role: str) -> Path:
    """The role's documented user data example (docs/launch-settings.md shows it)."""
    return EXAMPLES / f"{role}.yaml"


def image_reference(cfg: BakeryConfig, environment: str) -> str:
    """What a launch template names as its image: the environment's AMI parameter."""
    return f"resolve:ssm:{parameter_name(cfg, environment)}"


def read_user_data(path: Path) -> bytes:
    """The user data file's bytes; BadInput when it is missing, empty or too large."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput(f"--user-data {path}: no such file") from exc
    except OSError as exc:
        raise BadInput(f"--user-data {path}: cannot be read ({exc.strerror})") from exc
    if not data.strip():
        raise BadInput(f"--user-data {path}: the file is empty")
    if len(data) > MAX_USER_DATA_BYTES:
        raise BadInput(
            f"--user-data {path}: {len(data)} bytes; EC2 takes at most {MAX_USER_DATA_BYTES}"
        )
    return data


def template_name(cfg: BakeryConfig, environment: str) -> str:
    """The launch template's name, also the Name tag of what it launches; an arm64
    role's has its own (its image parameter and instance type differ)."""
    arch = "" if cfg.arch == "x86_64" else f"-{cfg.arch}"
    return f"bakery-{cfg.role}-{environment}{arch}"


def _reaches_agent_ports(rule: IpPermissionOutputTypeDef) -> list[int]:
    protocol = str(rule.get("IpProtocol", ""))
    if protocol == "-1":  # every protocol and port
        return list(AGENT_PORTS)
    if protocol not in ("tcp", "udp", "6", "17"):
        return []
    low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
    return [port for port in AGENT_PORTS if low <= port <= high]


def agent_port_openings(group: SecurityGroupTypeDef) -> list[str]:
    """Each ingress rule of the group that reaches an agent port, as text to act on."""
    found = []
    for rule in group.get("IpPermissions", []):
        ports = _reaches_agent_ports(rule)
        if not ports:
            continue
        sources = [
            *(r.get("CidrIp", "") for r in rule.get("IpRanges", [])),
            *(r.get("CidrIpv6", "") for r in rule.get("Ipv6Ranges", [])),
            *(r.get("PrefixListId", "") for r in rule.get("PrefixListIds", [])),
            *(r.get("GroupId", "") for r in rule.get("UserIdGroupPairs", [])),
        ]
        protocol = rule.get("IpProtocol", "")
        what = "all traffic" if protocol == "-1" else f"{protocol} {rule.get('FromPort')}"
        if protocol != "-1" and rule.get("ToPort") != rule.get("FromPort"):
            what += f"-{rule.get('ToPort')}"
        found.append(
            f"{what} from {', '.join(sources) or 'anywhere'} (reaches {', '.join(map(str, ports))})"
        )
    return found


def check_security_groups(ec2: EC2Client, group_ids: Sequence[str]) -> None:
    """BadInput unless every group exists and lets nothing reach the agent's ports."""
    if not group_ids:
        return
    with aws_errors(f"reading security groups {', '.join(group_ids)}"):
        try:
            groups = ec2.describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"]
        except botocore.exceptions.ClientError as exc:
            if not error_code(exc).startswith(("InvalidGroup", "InvalidGroupId")):
                raise
            raise BadInput(
                f"--security-group {', '.join(group_ids)}: no such group in "
                f"{ec2.meta.region_name} ({error_code(exc)})"
            ) from exc
    for group in groups:
        openings = agent_port_openings(group)
        if openings:
            raise BadInput(
                f"--security-group {group['GroupId']} lets in {'; '.join(openings)}: the "
                f"CloudWatch agent on ports {', '.join(map(str, AGENT_PORTS))} authenticates "
                "no sender, so only the instance itself may reach them (through localhost). "
                "Remove those rules (aws ec2 revoke-security-group-ingress), or narrow them "
                "to the app's own port"
            )


def security_group_name(cfg: BakeryConfig, environment: str) -> str:
    return f"{template_name(cfg, environment)}-instances"


def ensure_security_group(
    cfg: BakeryConfig, environment: str, vpc_id: str | None = None
) -> tuple[str, bool]:
    """The id of the role's security group in the environment, and whether it was made
    now: `bakery-<role>-<environment>-instances` in the VPC (default: the region's
    default VPC), made with no ingress rule at all, so the agent's ports are closed to
    everything but the instance. An existing one is checked, not changed."""
    check_environment(environment)
    ec2 = ec2_client(cfg.aws.region)
    name = security_group_name(cfg, environment)
    with aws_errors(f"looking up the VPC and security group {name}"):
        if vpc_id is None:
            vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
            if not vpcs["Vpcs"]:
                raise BadInput(
                    f"no default VPC in {cfg.aws.region}: give --vpc-id for the group {name}"
                )
            vpc_id = vpcs["Vpcs"][0]["VpcId"]
        found = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [name]},
            ]
        )["SecurityGroups"]
    if found:
        check_security_groups(ec2, [found[0]["GroupId"]])
        return found[0]["GroupId"], False
    values = {**cfg.aws.tags, tags.ROLE: cfg.role, tags.ENVIRONMENT: environment}
    with aws_errors(f"creating security group {name} in {vpc_id}"):
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=f"bakery {cfg.role} instances in {environment}: no agent port open",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags.as_list(values)}],
        )["GroupId"]
    return group_id, True


def launch_template_data(
    cfg: BakeryConfig,
    environment: str,
    user_data: bytes,
    instance_profile: str | None = None,
    security_group_ids: Sequence[str] = (),
) -> RequestLaunchTemplateDataTypeDef:
    """The launch template of the role's instances in the environment."""
    check_environment(environment)
    values = {
        "Name": template_name(cfg, environment),
        **cfg.aws.tags,
        tags.ROLE: cfg.role,
        tags.ENVIRONMENT: environment,
    }
    data: RequestLaunchTemplateDataTypeDef = {
        "ImageId": image_reference(cfg, environment),
        "InstanceType": cfg.instance_type,  # type: ignore[typeddict-item]
        "IamInstanceProfile": {"Name": instance_profile or instance_role_name(cfg.role)},
        # As in verification: the images are tested with IMDSv2 only.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags.as_list(values)},
            {"ResourceType": "volume", "Tags": tags.as_list(values)},
        ],
        # Launch template data carries user data base64-encoded (run-instances does not).
        "UserData": base64.b64encode(user_data).decode("ascii"),
    }
    if security_group_ids:
        data["SecurityGroupIds"] = list(security_group_ids)
    return data


def promoted_image(cfg: BakeryConfig, environment: str) -> str:
    """The AMI the environment's parameter points at now. BadInput when nothing was
    released there: EC2 refuses a launch template naming a parameter that does not exist."""
    check_environment(environment)
    name = parameter_name(cfg, environment)
    ssm = ssm_client(cfg.aws.region)
    with aws_errors(f"reading {name}"):
        try:
            return ssm.get_parameter(Name=name)["Parameter"].get("Value", "")
        except ssm.exceptions.ParameterNotFound:
            pass
        released = sorted(
            found.split("/")[-3]
            for found in parameter_values(ssm, cfg.aws.ssm_prefix)
            if found.endswith(f"/{cfg.role}/ami-id")
        )
    raise BadInput(
        f"--environment {environment}: no {cfg.role} AMI was released there ({name} does not "
        f"exist in {cfg.aws.region}); released to: {', '.join(released) or 'none'}. Run "
        f"`invoke release --role {cfg.role} -e {environment}` first"
    )


def _launch_settings(user_data: bytes) -> dict[str, str]:
    """KEY=value of launch.env as cloud-config user data writes it; {} for any other
    kind of user data (a script, MIME), which bakery does not look into."""
    if not user_data.startswith(b"#cloud-config"):
        return {}
    try:
        document: Any = yaml.safe_load(user_data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return {}
    files = document.get("write_files") if isinstance(document, dict) else None
    settings: dict[str, str] = {}
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and entry.get("path") == LAUNCH_ENV:
            for line in str(entry.get("content", "")).splitlines():
                key, found, value = line.strip().partition("=")
                if found and not key.startswith("#"):
                    settings[key.strip()] = value.strip().strip("'\"")
    return settings


def user_data_warnings(cfg: BakeryConfig, environment: str, user_data: bytes) -> list[str]:
    """What in the launch settings of the user data will not work as meant."""
    settings = _launch_settings(user_data)
    warnings = []
    written = settings.get("DEPLOYMENT_ENVIRONMENT")
    if written and written != environment:
        warnings.append(
            f"the user data sets DEPLOYMENT_ENVIRONMENT={written} in a template for "
            f"{environment}: the instances would report as {written}"
        )
    from_ssm = settings.get("DB_PASSWORD_SSM_PARAMETER") and not settings.get("DB_PASSWORD")
    if from_ssm and cfg.os == "debian12":
        warnings.append(
            "the user data reads the password from SSM (DB_PASSWORD_SSM_PARAMETER), but "
            "debian12 images have no aws CLI to read it: give DB_PASSWORD instead, or "
            "bake with --set os=al2023"
        )
    return warnings


def write_template_data(data: RequestLaunchTemplateDataTypeDef, path: Path) -> None:
    """Write the JSON for `--launch-template-data file://PATH`, whole or not at all, and
    readable by its owner only (mkstemp's 0600): the user data may hold a password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(template_json(data))
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def template_json(data: RequestLaunchTemplateDataTypeDef) -> str:
    return json.dumps(data, indent=2) + "\n"
