"""The post-release canary: proof, through AWS's own APIs, that a released backend's
telemetry arrives.

One instance is launched from the AMI an environment's parameter names (what `invoke
release` wrote), with the role's launch-time user data, the role's instance profile
(`bakery-<role>`) and IMDSv2, or an instance already running that AMI is reused. The
canary then waits, polling, until Application Signals lists the service for the
deployment environment (`application-signals` ListServices), its Latency, Error and
Fault metrics have datapoints (CloudWatch GetMetricData in the `ApplicationSignals`
namespace, dimensions Service and Environment, as the agent names them) and X-Ray has
its traces (GetTraceSummaries, `service("<name>")`).

Traffic comes from the instance itself: the canary adds a second part to the user data
that starts a transient systemd unit sending requests to the app on 127.0.0.1. No key
pair, no security group and no inbound rule are needed, so the canary runs from any
machine that can call AWS, and the instance may sit in a private subnet. What is
asserted is what AWS received, not what a client saw.

A launched instance carries bakery's test-instance tags (and `bakery:canary`), is
terminated however the run ends (Ctrl-C included) and expires for `invoke janitor`
if the process is killed. A reused instance is left alone. This module raises and
never prints: progress goes to the callback the caller passes.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from bakery.aws import tags
from bakery.aws.clients import aws_client, aws_errors, ec2_client
from bakery.aws.iam import instance_role_name
from bakery.aws.launch import MAX_USER_DATA_BYTES, promoted_image
from bakery.aws.launch import _launch_settings as launch_settings
from bakery.aws.progress import INSTANCE_WAIT
from bakery.aws.release import check_environment
from bakery.config import BakeryConfig
from bakery.errors import BadInput, BakeryError, OperationFailed

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import RunInstancesRequestTypeDef

# The role whose image runs an instrumented app; the others ship logs and host metrics.
TELEMETRY_ROLE = "backend"
# On a launched canary instance, beside the test-instance tags: the environment it proves.
CANARY_TAG = tags.PREFIX + "canary"
METRICS_NAMESPACE = "ApplicationSignals"
# Application Signals' service-level metrics; the agent's dimension names (its
# awsapplicationsignals processor: "Service", "Environment").
METRICS = ("Latency", "Error", "Fault")
SERVICE_DIMENSION = "Service"
ENVIRONMENT_DIMENSION = "Environment"
# Discovery takes minutes after the first span: a new service shows up in
# Application Signals five to ten minutes after its first request.
DEFAULT_TIMEOUT = timedelta(minutes=20)
DEFAULT_POLL_INTERVAL_S = 30.0
# Long enough for the whole wait; after this `invoke janitor` may remove the instance.
CANARY_LIFETIME = timedelta(hours=1)
# A reused instance may have served traffic before the canary started.
REUSE_LOOKBACK = timedelta(minutes=30)
# The app's paths the request loop calls: both answer without a database.
REQUEST_PATHS = ("/", "/health")
REQUEST_INTERVAL_S = 2
# How long the request loop runs beyond the canary's timeout: the boot comes first.
BOOT_ALLOWANCE = timedelta(minutes=10)


@dataclass(frozen=True)
class TelemetryClients:
    """The clients of the three APIs the checks read (one region)."""

    application_signals: Any
    cloudwatch: Any
    xray: Any


def telemetry_clients(region: str) -> TelemetryClients:
    return TelemetryClients(
        aws_client("application-signals", region),
        aws_client("cloudwatch", region),
        aws_client("xray", region),
    )


@dataclass(frozen=True)
class TelemetryFound:
    """What one poll found: is the service listed, datapoints per metric, traces."""

    service_listed: bool
    datapoints: dict[str, int]
    traces: int

    @property
    def complete(self) -> bool:
        return (
            self.service_listed
            and all(self.datapoints.get(name, 0) > 0 for name in METRICS)
            and self.traces > 0
        )

    def describe(self) -> str:
        metrics = ", ".join(f"{name} {self.datapoints.get(name, 0)}" for name in METRICS)
        listed = "listed" if self.service_listed else "not listed"
        return f"service {listed}; datapoints: {metrics}; traces: {self.traces}"


@dataclass(frozen=True)
class CanaryResult:
    """The canary's verdict on an environment: where it looked and what it found."""

    role: str
    environment: str
    region: str
    ami_id: str
    instance_id: str
    launched: bool
    service: str
    deployment_environment: str
    found: TelemetryFound
    polls: int


class TelemetryMissing(OperationFailed):
    """The telemetry did not arrive within the timeout (exit 1)."""


def reported_identity(cfg: BakeryConfig, user_data: bytes) -> tuple[str, str]:
    """(service name, deployment environment) an instance with this user data reports:
    the launch settings it writes, else the image's baked defaults."""
    settings = launch_settings(user_data)
    return (
        settings.get("SERVICE_NAME") or cfg.service.name,
        settings.get("DEPLOYMENT_ENVIRONMENT") or cfg.service.deployment_environment,
    )


def request_loop(port: int, duration_s: int) -> str:
    """The shell script (a user data part) that starts the requests to the app. A
    transient unit, so cloud-init finishes at once and the app can start first; the
    loop keeps trying until the app answers, and stops by itself."""
    urls = " ".join(f"http://127.0.0.1:{port}{path}" for path in REQUEST_PATHS)
    loop = (
        "import sys, time, urllib.request\n"
        f"end = time.time() + {duration_s}\n"
        "while time.time() < end:\n"
        "    for url in sys.argv[1:]:\n"
        "        try:\n"
        "            urllib.request.urlopen(url, timeout=5).close()\n"
        "        except OSError:\n"
        "            pass\n"
        f"    time.sleep({REQUEST_INTERVAL_S})\n"
    )
    return (
        "#!/bin/sh\n"
        "# bakery canary: requests to the app, so its telemetry reaches AWS.\n"
        "exec systemd-run --unit=bakery-canary-requests "
        '--description="bakery canary: requests to the app" '
        f"/usr/bin/python3 -c '{loop}' {urls}\n"
    )


def _user_data_subtype(user_data: bytes) -> str:
    if user_data.startswith(b"#cloud-config"):
        return "cloud-config"
    if user_data.startswith(b"#!"):
        return "x-shellscript"
    raise BadInput(
        "--user-data: the canary adds its request loop as a second user data part, so the "
        "role's user data must be a #cloud-config document or a #! script"
    )


def canary_user_data(user_data: bytes, port: int, duration_s: int) -> str:
    """The role's user data and the request loop, as one MIME multi-part document that
    cloud-init runs part by part."""
    subtype = _user_data_subtype(user_data)
    try:
        text = user_data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"--user-data: not UTF-8 text ({exc})") from exc
    document = MIMEMultipart()
    # ASCII stays as it is (7bit); anything else goes base64, which cloud-init decodes.
    document.attach(MIMEText(text, subtype, "us-ascii" if text.isascii() else "utf-8"))
    document.attach(MIMEText(request_loop(port, duration_s), "x-shellscript", "us-ascii"))
    combined = document.as_string()
    if len(combined.encode()) > MAX_USER_DATA_BYTES:
        raise BadInput(
            f"--user-data: with the canary's request loop the user data is "
            f"{len(combined.encode())} bytes; EC2 takes at most {MAX_USER_DATA_BYTES}"
        )
    return combined


def _launch(
    ec2: EC2Client, cfg: BakeryConfig, environment: str, ami_id: str, user_data: str, now: datetime
) -> str:
    name = f"bakery-canary-{cfg.role}-{environment}-{uuid.uuid4().hex[:8]}"
    values = {
        **cfg.aws.tags,
        "Name": name,
        tags.ROLE: cfg.role,
        tags.PURPOSE: tags.TEST_INSTANCE,
        tags.EXPIRES_AT: tags.timestamp(now + CANARY_LIFETIME),
        CANARY_TAG: environment,
    }
    request: RunInstancesRequestTypeDef = {
        "ImageId": ami_id,
        "UserData": user_data,
        "InstanceType": cfg.instance_type,  # type: ignore[typeddict-item]
        "MinCount": 1,
        "MaxCount": 1,
        "IamInstanceProfile": {"Name": instance_role_name(cfg.role)},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags.as_list(values)},
            {"ResourceType": "volume", "Tags": tags.as_list(values)},
        ],
    }
    if cfg.aws.subnet_id:
        request["SubnetId"] = cfg.aws.subnet_id
    if cfg.aws.security_group_id:
        request["SecurityGroupIds"] = [cfg.aws.security_group_id]
    with aws_errors(f"launching a canary instance from {ami_id}"):
        try:
            instance = ec2.run_instances(**request)["Instances"][0]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            # A reply lost after EC2 launched it leaves a running instance nobody knows
            # of: find it by its unique name and terminate it now, not at its expiry.
            _terminate_unknown_launch(ec2, name)
            raise
    return instance["InstanceId"]


def _terminate_unknown_launch(ec2: EC2Client, name: str) -> None:
    """Terminate an instance named `name` if a failed RunInstances made one; errors are
    left to the janitor (the instance expires), the launch's own error is the news."""
    try:
        reservations = ec2.describe_instances(
            Filters=[
                {"Name": "tag:Name", "Values": [name]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        found = [i["InstanceId"] for r in reservations for i in r.get("Instances", [])]
        if found:
            ec2.terminate_instances(InstanceIds=found)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        pass


def _describe(ec2: EC2Client, instance_id: str) -> dict[str, Any]:
    with aws_errors(f"looking up {instance_id}"):
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instances = [i for r in reservations for i in r.get("Instances", [])]
    if not instances:
        raise BadInput(f"--instance-id {instance_id}: no such instance in this region")
    found: dict[str, Any] = dict(instances[0])
    return found


def _wait_running(ec2: EC2Client, instance_id: str) -> None:
    """Wait until the instance runs; OperationFailed with EC2's reason when it will not."""
    try:
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[instance_id], WaiterConfig=INSTANCE_WAIT
        )
    except botocore.exceptions.WaiterError as exc:
        instance = _describe(ec2, instance_id)
        state = instance.get("State", {}).get("Name", "unknown")
        reason = instance.get("StateReason", {}).get("Message", str(exc))
        raise OperationFailed(
            f"canary instance {instance_id} did not start: it is {state} ({reason})"
        ) from exc


def _terminate(ec2: EC2Client, instance_id: str) -> None:
    ec2.terminate_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_terminated").wait(
        InstanceIds=[instance_id], WaiterConfig=INSTANCE_WAIT
    )


def _reused_instance(ec2: EC2Client, instance_id: str, ami_id: str) -> bytes:
    """Check that the instance runs the released AMI; the user data it was given."""
    instance = _describe(ec2, instance_id)
    state = instance.get("State", {}).get("Name")
    if state != "running":
        raise BadInput(f"--instance-id {instance_id} is {state}: reuse a running instance")
    if instance.get("ImageId") != ami_id:
        raise BadInput(
            f"--instance-id {instance_id} runs {instance.get('ImageId')}, not the released "
            f"{ami_id}: reuse an instance launched after the release, or let the canary "
            "launch one"
        )
    with aws_errors(f"reading the user data of {instance_id}"):
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    encoded = attribute.get("UserData", {}).get("Value", "")
    try:
        return base64.b64decode(encoded) if encoded else b""
    except binascii.Error:
        return b""


def _service_listed(
    client: Any, service: str, environment: str, start: datetime, end: datetime
) -> bool:
    with aws_errors("listing Application Signals services"):
        for page in client.get_paginator("list_services").paginate(StartTime=start, EndTime=end):
            for summary in page.get("ServiceSummaries", []):
                attributes = summary.get("KeyAttributes", {})
                if (
                    attributes.get("Name") == service
                    and attributes.get("Environment") == environment
                ):
                    return True
    return False


def metric_queries(service: str, environment: str, period_s: int) -> list[dict[str, Any]]:
    """GetMetricData queries for the service's Latency, Error and Fault."""
    dimensions = [
        {"Name": SERVICE_DIMENSION, "Value": service},
        {"Name": ENVIRONMENT_DIMENSION, "Value": environment},
    ]
    return [
        {
            "Id": name.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": METRICS_NAMESPACE,
                    "MetricName": name,
                    "Dimensions": dimensions,
                },
                "Period": period_s,
                "Stat": "SampleCount",
            },
            "ReturnData": True,
        }
        for name in METRICS
    ]


def _datapoints(
    client: Any, service: str, environment: str, start: datetime, end: datetime
) -> dict[str, int]:
    counts = dict.fromkeys(METRICS, 0)
    by_id = {name.lower(): name for name in METRICS}
    with aws_errors(f"reading {METRICS_NAMESPACE} metrics"):
        for page in client.get_paginator("get_metric_data").paginate(
            MetricDataQueries=metric_queries(service, environment, 60),
            StartTime=start,
            EndTime=end,
        ):
            for result in page.get("MetricDataResults", []):
                name = by_id.get(result.get("Id", ""))
                if name:
                    counts[name] += len(result.get("Values", []))
    return counts


def trace_filter(service: str) -> str:
    """The X-Ray filter expression for the service's traces."""
    return f'service("{service}")'


def _traces(client: Any, service: str, start: datetime, end: datetime) -> int:
    count = 0
    with aws_errors("reading X-Ray trace summaries"):
        for page in client.get_paginator("get_trace_summaries").paginate(
            StartTime=start, EndTime=end, FilterExpression=trace_filter(service)
        ):
            count += len(page.get("TraceSummaries", []))
            if count:
                break  # one is proof enough
    return count


def look_for_telemetry(
    clients: TelemetryClients, service: str, environment: str, start: datetime, end: datetime
) -> TelemetryFound:
    """One poll of the three APIs for the service in the deployment environment."""
    return TelemetryFound(
        service_listed=_service_listed(
            clients.application_signals, service, environment, start, end
        ),
        datapoints=_datapoints(clients.cloudwatch, service, environment, start, end),
        traces=_traces(clients.xray, service, start, end),
    )


def wait_for_telemetry(
    clients: TelemetryClients,
    service: str,
    environment: str,
    start: datetime,
    *,
    timeout: timedelta,
    poll_interval_s: float,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
    progress: Callable[[str], None],
) -> tuple[TelemetryFound, int]:
    """Poll until everything is found or the timeout passes; (what was found, polls)."""
    deadline = clock() + timeout
    polls = 0
    while True:
        polls += 1
        found = look_for_telemetry(clients, service, environment, start, clock())
        progress(f"poll {polls}: {found.describe()}")
        if found.complete:
            return found, polls
        if clock() + timedelta(seconds=poll_interval_s) > deadline:
            raise TelemetryMissing(
                f"no complete telemetry for {service} in {environment} after {polls} polls "
                f"({int(timeout.total_seconds())} s): {found.describe()}. Check the instance's "
                "agent log (/opt/aws/amazon-cloudwatch-agent/logs/) and that Application "
                "Signals is enabled (`invoke enable-application-signals`)"
            )
        sleep(poll_interval_s)


def run_canary(
    cfg: BakeryConfig,
    environment: str,
    user_data: bytes,
    *,
    instance_id: str | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    clients: Callable[[str], TelemetryClients] | None = None,
    clock: Callable[[], datetime] = tags.utc_now,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] = lambda _message: None,
) -> CanaryResult:
    """Prove that the environment's released AMI sends telemetry AWS receives: launch a
    canary instance (or reuse `instance_id`), wait for the service, its metrics and its
    traces, and terminate what was launched."""
    check_environment(environment)
    if cfg.role != TELEMETRY_ROLE:
        raise BadInput(
            f"--role {cfg.role}: only the {TELEMETRY_ROLE} runs an instrumented app; the "
            "canary proves Application Signals telemetry"
        )
    if timeout <= timedelta(0) or poll_interval_s <= 0:
        raise BadInput("--timeout and the poll interval must be positive")
    region = cfg.aws.region
    ec2 = ec2_client(region)
    ami_id = promoted_image(cfg, environment)
    telemetry = (clients or telemetry_clients)(region)
    if instance_id:
        given = _reused_instance(ec2, instance_id, ami_id)
        service, reported = reported_identity(cfg, given)
        _check_reported(environment, reported, f"--instance-id {instance_id}'s user data")
        progress(f"reusing {instance_id} ({ami_id}); it sends its own traffic")
        found, polls = wait_for_telemetry(
            telemetry, service, reported, clock() - REUSE_LOOKBACK,
            timeout=timeout, poll_interval_s=poll_interval_s, clock=clock, sleep=sleep,
            progress=progress,
        )  # fmt: skip
        return CanaryResult(
            cfg.role, environment, region, ami_id, instance_id, False, service, reported,
            found, polls,
        )  # fmt: skip

    service, reported = reported_identity(cfg, user_data)
    _check_reported(environment, reported, "the user data")
    # Requests for as long as the canary may wait, plus the boot.
    duration_s = int((timeout + BOOT_ALLOWANCE).total_seconds())
    document = canary_user_data(user_data, cfg.app.port, duration_s)
    started = clock()
    launched = _launch(ec2, cfg, environment, ami_id, document, started)
    try:
        progress(f"launched canary {launched} from {ami_id} in {region}")
        _wait_running(ec2, launched)
        progress(f"{launched} is running; waiting for {service} ({reported}) in AWS")
        found, polls = wait_for_telemetry(
            telemetry, service, reported, started,
            timeout=timeout, poll_interval_s=poll_interval_s, clock=clock, sleep=sleep,
            progress=progress,
        )  # fmt: skip
    except BaseException:
        leftover = _terminate_quietly(ec2, launched)
        if leftover:
            progress(leftover)
        raise
    leftover = _terminate_quietly(ec2, launched)
    if leftover:
        raise OperationFailed(leftover)
    progress(f"terminated {launched}")
    return CanaryResult(
        cfg.role, environment, region, ami_id, launched, True, service, reported, found, polls
    )


def _check_reported(environment: str, reported: str, source: str) -> None:
    if reported != environment:
        raise BadInput(
            f"{source} reports DEPLOYMENT_ENVIRONMENT={reported}, not {environment}: give "
            f"--user-data whose launch.env sets DEPLOYMENT_ENVIRONMENT={environment}"
        )


def _terminate_quietly(ec2: EC2Client, instance_id: str) -> str | None:
    """Terminate and wait; a message naming what is left behind when that fails."""
    try:
        _terminate(ec2, instance_id)
    except (BakeryError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return (
            f"could not terminate canary instance {instance_id}: {exc}; it expires in "
            f"{int(CANARY_LIFETIME.total_seconds() // 60)} min and `invoke janitor --apply` "
            "removes it then"
        )
    return None


# What RunInstances needs authorised beyond itself: tags given at launch, and passing
# the instance profile's role.
AUTHORISED_WITH_RUN_INSTANCES = ("ec2:CreateTags", "iam:PassRole")


def api_calls() -> Sequence[str]:
    """Every IAM action the canary needs, as the pipeline's principal (docs/aws.md)."""
    return (
        "ssm:GetParameter",
        "ssm:GetParametersByPath",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "iam:PassRole",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceAttribute",
        "ec2:TerminateInstances",
        "application-signals:ListServices",
        "cloudwatch:GetMetricData",
        "xray:GetTraceSummaries",
    )
