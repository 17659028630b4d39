"""The post-release canary (`invoke canary`): EC2 and SSM on moto; Application Signals,
CloudWatch and X-Ray through botocore's Stubber, which checks every request and every
canned response against botocore's service model (moto 5.2.5 has no Application
Signals, and its X-Ray and CloudWatch hold nothing the canary's instance could send).
"""

from __future__ import annotations

import base64
import email
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from botocore.client import BaseClient
from botocore.stub import ANY, Stubber
from invoke import Config, Context

from bakery.aws import canary as canary_module
from bakery.aws import tags, tasks
from bakery.aws.canary import (
    AUTHORISED_WITH_RUN_INSTANCES,
    CANARY_TAG,
    METRICS,
    TelemetryClients,
    TelemetryMissing,
    api_calls,
    canary_user_data,
    metric_queries,
    request_loop,
    run_canary,
    trace_filter,
)
from bakery.aws.launch import example_user_data, read_user_data
from bakery.aws.release import release
from bakery.config import REPO_ROOT
from bakery.errors import BadInput, OperationFailed

from .conftest import NOW, REGION, clock, make_config, make_image
from .failure_double import LOST_REPLY, fail_calls_double

SERVICE = "fastapi-backend"  # what the example user data's launch.env names
ENVIRONMENT = "staging"  # and its DEPLOYMENT_ENVIRONMENT
INTERVAL_S = 30.0


class FakeTime:
    """A clock that moves only when the canary sleeps."""

    def __init__(self) -> None:
        self.now = NOW
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


class TelemetryStubs:
    """Stubbed Application Signals, CloudWatch and X-Ray clients; each poll's answers
    are queued with `poll()`."""

    def __init__(self) -> None:
        self.clients = TelemetryClients(
            boto3.client("application-signals", region_name=REGION),
            boto3.client("cloudwatch", region_name=REGION),
            boto3.client("xray", region_name=REGION),
        )
        self.stubbers = [
            Stubber(self.clients.application_signals),
            Stubber(self.clients.cloudwatch),
            Stubber(self.clients.xray),
        ]
        self.regions: list[str] = []

    def factory(self, region: str) -> TelemetryClients:
        self.regions.append(region)
        return self.clients

    def poll(
        self, *, listed: bool, datapoints: dict[str, int] | None = None, traces: int = 0
    ) -> None:
        apps, metrics, xray = self.stubbers
        summaries = [
            {
                "KeyAttributes": {"Type": "Service", "Name": "other", "Environment": "staging"},
                "MetricReferences": [],
            }
        ]
        if listed:
            summaries.append(
                {
                    "KeyAttributes": {
                        "Type": "Service",
                        "Name": SERVICE,
                        "Environment": ENVIRONMENT,
                    },
                    "MetricReferences": [],
                }
            )
        apps.add_response(
            "list_services",
            {"StartTime": NOW, "EndTime": NOW, "ServiceSummaries": summaries},
            {"StartTime": ANY, "EndTime": ANY},
        )
        counts = datapoints or {}
        metrics.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {
                        "Id": name.lower(),
                        "Label": name,
                        "Timestamps": [NOW] * counts.get(name, 0),
                        "Values": [1.0] * counts.get(name, 0),
                        "StatusCode": "Complete",
                    }
                    for name in METRICS
                ]
            },
            {
                "MetricDataQueries": metric_queries(SERVICE, ENVIRONMENT, 60),
                "StartTime": ANY,
                "EndTime": ANY,
            },
        )
        xray.add_response(
            "get_trace_summaries",
            {
                "TraceSummaries": [
                    {"Id": f"1-5f000000-{index:024x}", "Duration": 0.01} for index in range(traces)
                ],
                "TracesProcessedCount": traces,
            },
            {"StartTime": ANY, "EndTime": ANY, "FilterExpression": f'service("{SERVICE}")'},
        )

    def everything(self) -> None:
        self.poll(listed=True, datapoints=dict.fromkeys(METRICS, 3), traces=2)

    def __enter__(self) -> TelemetryStubs:
        for stubber in self.stubbers:
            stubber.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stubber in self.stubbers:
            stubber.deactivate()

    def assert_all_answered(self) -> None:
        for stubber in self.stubbers:
            stubber.assert_no_pending_responses()


@pytest.fixture
def released(aws: None) -> str:
    """A verified backend AMI released to staging, and the role's instance profile."""
    ami = make_image("backend")
    release(make_config("backend"), ENVIRONMENT, clock=clock())
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="bakery-backend", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="bakery-backend")
    iam.add_role_to_instance_profile(
        InstanceProfileName="bakery-backend", RoleName="bakery-backend"
    )
    return ami


@pytest.fixture
def stubs() -> Iterator[TelemetryStubs]:
    with TelemetryStubs() as found:
        yield found


def user_data() -> bytes:
    return read_user_data(example_user_data("backend"))


def canaries(ec2: Any) -> list[dict[str, Any]]:
    """Every instance tagged as a canary, in any state."""
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{CANARY_TAG}", "Values": ["*"]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


def states(ec2: Any) -> list[str]:
    return [i["State"]["Name"] for i in canaries(ec2)]


def run(stubs: TelemetryStubs, fake: FakeTime, **kwargs: Any) -> Any:
    return run_canary(
        make_config("backend"),
        ENVIRONMENT,
        kwargs.pop("content", user_data()),
        clients=stubs.factory,
        clock=fake.clock,
        sleep=fake.sleep,
        poll_interval_s=INTERVAL_S,
        **kwargs,
    )


# --- telemetry arrives ----------------------------------------------------------------


def test_telemetry_found_after_three_polls_passes_and_terminates_the_canary(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    stubs.poll(listed=False)
    stubs.poll(listed=True, datapoints={"Latency": 2}, traces=1)
    stubs.everything()
    fake = FakeTime()
    messages: list[str] = []

    result = run(stubs, fake, progress=messages.append)

    assert result.polls == 3
    assert fake.slept == [INTERVAL_S, INTERVAL_S]
    assert (result.service, result.deployment_environment) == (SERVICE, ENVIRONMENT)
    assert result.ami_id == released and result.launched
    assert result.found.complete and result.found.traces == 2
    assert states(ec2) == ["terminated"]
    assert next(m for m in messages if m.startswith("poll ")).startswith("poll 1: service not")
    stubs.assert_all_answered()
    assert stubs.regions == [REGION]


def test_canary_instance_launches_the_released_ami_as_the_role_would(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    stubs.everything()
    seen: list[dict[str, Any]] = []

    def look_while_running(message: str) -> None:
        if " is running" in message:  # moto drops the profile at termination
            seen.extend(canaries(ec2))

    result = run(stubs, FakeTime(), progress=look_while_running)

    [instance] = seen
    assert instance["InstanceId"] == result.instance_id
    assert instance["ImageId"] == released
    assert instance["IamInstanceProfile"]["Arn"].endswith("/bakery-backend")
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    values = tags.as_dict(instance["Tags"])
    assert values[tags.PURPOSE] == tags.TEST_INSTANCE  # janitor and the tag-scoped policy
    assert values[CANARY_TAG] == ENVIRONMENT
    assert values[tags.ROLE] == "backend"
    assert tags.parse_timestamp(values[tags.EXPIRES_AT]) == NOW + timedelta(hours=1)
    given = ec2.describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")
    document = email.message_from_bytes(base64.b64decode(given["UserData"]["Value"]))
    parts = [part for part in document.walk() if not part.is_multipart()]
    assert [part.get_content_type() for part in parts] == [
        "text/cloud-config",
        "text/x-shellscript",
    ]
    assert parts[0].get_payload(decode=True) == user_data()


# --- telemetry does not arrive ----------------------------------------------------------


def test_telemetry_that_never_arrives_fails_after_the_timeout_and_terminates(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    for _ in range(4):
        stubs.poll(listed=True, datapoints={"Latency": 1, "Error": 1}, traces=0)
    fake = FakeTime()

    with pytest.raises(TelemetryMissing, match=r"after 4 polls \(90 s\).*Fault 0.*traces: 0"):
        run(stubs, fake, timeout=timedelta(seconds=90))

    assert fake.now - NOW == timedelta(seconds=90)  # bounded: no poll past the deadline
    assert states(ec2) == ["terminated"]
    stubs.assert_all_answered()


def test_canary_instance_that_does_not_start_fails_and_is_cleaned_up(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    def instance_dies_at_launch(message: str) -> None:
        # EC2 ends an instance before it runs (capacity, a bad volume, ...).
        if message.startswith("launched canary"):
            ec2.terminate_instances(InstanceIds=[message.split()[2]])

    with pytest.raises(OperationFailed, match="did not start: it is terminated"):
        run(stubs, FakeTime(), progress=instance_dies_at_launch)

    assert states(ec2) == ["terminated"]
    stubs.assert_all_answered()  # no telemetry was looked for


def test_ctrl_c_while_waiting_terminates_the_canary(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    stubs.poll(listed=False)
    fake = FakeTime()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    fake.sleep = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        run(stubs, fake)
    assert states(ec2) == ["terminated"]


def test_an_api_error_while_polling_fails_cleanly_and_terminates(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    stubs.stubbers[0].add_client_error(
        "list_services", "AccessDeniedException", "not authorized", 403
    )
    with pytest.raises(OperationFailed, match="listing Application Signals services"):
        run(stubs, FakeTime())
    assert states(ec2) == ["terminated"]


# --- reuse ------------------------------------------------------------------------------


# The tags of an instance that `invoke launch-template`'s template launched.
LAUNCHED_FROM_TEMPLATE: Any = [
    {
        "ResourceType": "instance",
        "Tags": [
            {"Key": tags.ROLE, "Value": "backend"},
            {"Key": tags.ENVIRONMENT, "Value": "staging"},
        ],
    }
]


def test_reused_instance_is_checked_and_left_running(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    instance = ec2.run_instances(
        ImageId=released, MinCount=1, MaxCount=1, UserData=user_data().decode(),
        TagSpecifications=LAUNCHED_FROM_TEMPLATE,
    )["Instances"][0]  # fmt: skip
    stubs.everything()

    result = run(stubs, FakeTime(), content=b"", instance_id=instance["InstanceId"])

    assert not result.launched and result.polls == 1
    assert result.service == SERVICE
    found = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"]
    assert found[0]["Instances"][0]["State"]["Name"] == "running"
    assert canaries(ec2) == []


def test_reused_instance_of_another_ami_is_refused(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    other = make_image("backend")
    instance = ec2.run_instances(ImageId=other, MinCount=1, MaxCount=1)["Instances"][0]
    with pytest.raises(BadInput, match=f"runs {other}, not the released {released}"):
        run(stubs, FakeTime(), content=b"", instance_id=instance["InstanceId"])


# --- the task -------------------------------------------------------------------------


def test_canary_task_launches_checks_and_prints_what_it_found(
    released: str,
    stubs: TelemetryStubs,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoke canary --role backend -e staging`"""
    monkeypatch.setattr(canary_module, "telemetry_clients", stubs.factory)
    stubs.everything()

    tasks.canary(Context(Config(lazy=True)), role="backend", environment="staging")

    _, err = capsys.readouterr()
    assert "poll 1: service listed; datapoints: Latency 3, Error 3, Fault 3; traces: 2" in err
    assert released in err
    assert "telemetry arrived for fastapi-backend in staging" in err
    assert states(ec2) == ["terminated"]


def test_canary_task_reuses_a_running_instance(
    released: str,
    stubs: TelemetryStubs,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`invoke canary --role backend -e staging --instance-id ID`"""
    monkeypatch.setattr(canary_module, "telemetry_clients", stubs.factory)
    instance = ec2.run_instances(
        ImageId=released, MinCount=1, MaxCount=1, UserData=user_data().decode(),
        TagSpecifications=LAUNCHED_FROM_TEMPLATE,
    )["Instances"][0]["InstanceId"]  # fmt: skip
    stubs.everything()

    tasks.canary(
        Context(Config(lazy=True)), role="backend", environment="staging", instance_id=instance
    )

    _, err = capsys.readouterr()
    assert f"{instance} (reused)" in err
    found = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert found["State"]["Name"] == "running"


def test_canary_task_with_a_bad_timeout_exits_2(aws: None) -> None:
    with pytest.raises(SystemExit) as exited:
        tasks.canary(
            Context(Config(lazy=True)), role="backend", environment="staging", timeout="soon"
        )
    assert exited.value.code == 2


# --- bad input: nothing launched --------------------------------------------------------


def test_user_data_for_another_environment_is_refused_before_launch(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    production = user_data().replace(
        b"DEPLOYMENT_ENVIRONMENT=staging", b"DEPLOYMENT_ENVIRONMENT=dev"
    )
    with pytest.raises(BadInput, match="reports DEPLOYMENT_ENVIRONMENT=dev, not staging"):
        run(stubs, FakeTime(), content=production)
    assert canaries(ec2) == []


def test_environment_without_a_release_is_refused(aws: None, stubs: TelemetryStubs) -> None:
    with pytest.raises(BadInput, match="no backend AMI was released there"):
        run(stubs, FakeTime())


def test_roles_without_an_instrumented_app_are_refused(aws: None) -> None:
    with pytest.raises(BadInput, match="--role frontend: only the backend"):
        run_canary(make_config("frontend"), ENVIRONMENT, user_data())


def test_user_data_that_is_neither_cloud_config_nor_script_is_refused() -> None:
    with pytest.raises(BadInput, match="#cloud-config document or a #! script"):
        canary_user_data(b"Content-Type: multipart/mixed\n", 8000, 60)


# --- the IAM actions it needs ----------------------------------------------------------

# botocore's signing name, where IAM's action prefix differs.
IAM_PREFIX = {"monitoring": "cloudwatch"}


def test_the_canary_calls_exactly_the_actions_it_declares(
    released: str, stubs: TelemetryStubs, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    original = BaseClient._make_api_call

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        prefix = client.meta.service_model.signing_name
        calls.append((f"{IAM_PREFIX.get(prefix, prefix)}:{operation}", params))
        return original(client, operation, params)

    reused = ec2.run_instances(
        ImageId=released, MinCount=1, MaxCount=1, UserData=user_data().decode()
    )["Instances"][0]["InstanceId"]
    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    stubs.everything()
    stubs.everything()
    run(stubs, FakeTime())
    run(stubs, FakeTime(), content=b"", instance_id=reused)
    with pytest.raises(BadInput):  # an environment without a release lists where there are
        run_canary(make_config("backend"), "dev", user_data(), clients=stubs.factory)

    called = {action for action, _ in calls}
    declared = set(api_calls())
    assert called == declared - set(AUTHORISED_WITH_RUN_INSTANCES)
    [launch] = [params for action, params in calls if action == "ec2:RunInstances"]
    assert launch["TagSpecifications"]  # needs ec2:CreateTags on create
    assert launch["IamInstanceProfile"] == {"Name": "bakery-backend"}  # iam:PassRole
    documented = (REPO_ROOT / "docs" / "aws.md").read_text()
    assert all(f"`{action}`" in documented for action in declared), "docs/aws.md lists them"


def test_user_data_too_large_with_the_request_loop_is_refused() -> None:
    near_limit = b"#cloud-config\n#" + b"x" * (16 * 1024 - 200) + b"\n"
    with pytest.raises(BadInput, match="with the canary's request loop the user data is"):
        canary_user_data(near_limit, 8000, 60)


# --- what the canary asks AWS -----------------------------------------------------------


def test_metric_queries_use_the_agents_dimension_names() -> None:
    queries = metric_queries(SERVICE, ENVIRONMENT, 60)
    assert [q["MetricStat"]["Metric"]["MetricName"] for q in queries] == list(METRICS)
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        assert metric["Namespace"] == "ApplicationSignals"
        assert metric["Dimensions"] == [
            {"Name": "Service", "Value": SERVICE},
            {"Name": "Environment", "Value": ENVIRONMENT},
        ]


def test_trace_filter_names_the_service() -> None:
    assert trace_filter(SERVICE) == 'service("fastapi-backend")'


# --- the request loop the instance runs -------------------------------------------------


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_request_loop_script_sends_requests_to_the_app(tmp_path: Path) -> None:
    # A systemd-run double runs the command in the foreground, dropping its --options,
    # so the script's own quoting is what is exercised.
    double = tmp_path / "systemd-run"
    double.write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    double.chmod(0o755)
    server = http.server.HTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = tmp_path / "requests.sh"
        script.write_text(request_loop(server.server_address[1], 1))
        subprocess.run(
            ["sh", str(script)],
            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
            check=True,
            timeout=30,
        )
    finally:
        server.shutdown()
    assert {"/", "/health"} <= set(_CountingHandler.paths)


def test_a_launch_whose_reply_was_lost_leaves_no_running_instance(
    released: str, stubs: TelemetryStubs, ec2: Any
) -> None:
    """EC2 launched the canary but the reply never came: the canary finds the instance
    by its name and terminates it, rather than leaving it to run until it expires."""
    with (
        fail_calls_double(kind=LOST_REPLY, fail_at={"RunInstances"}),
        pytest.raises(OperationFailed, match="launching a canary instance"),
    ):
        run(stubs, FakeTime())
    assert states(ec2) == ["terminated"]
