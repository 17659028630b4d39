"""The telemetry proof: requests to the app become spans that carry the launch-time
service.name and deployment.environment, and Application Signals metrics, all received
by the local agent. With the test double (local images) what it received is copied off
the instance and decoded; with the real agent (AWS) its log must show no export errors.
"""

from __future__ import annotations

import datetime
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from guest import (
    boot_time,
    copy_folder,
    http_get,
    listens,
    main_pid,
    poll,
    process_environment,
    sudo_exists,
    sudo_text,
    unit_processes,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.doubles.cloudwatch_agent.received import attributes_dict, decode_received

ROLES = {"backend"}

RECEIVED = "/opt/aws/amazon-cloudwatch-agent/var/testdouble/received"
AGENT_LOG = "/opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log"
# Where the app's log lines go (the unit's StandardOutput), and how a request's line
# reads: `... [trace_id=<32 hex> span_id=<16 hex>]: GET /health 200 0.4ms`.
APP_LOG = "/var/log/bakery/fastapi-otel.log"
REQUEST_LINE = re.compile(
    r"\[trace_id=(?P<trace_id>[0-9a-f]{32}) span_id=(?P<span_id>[0-9a-f]{16})\]: "
    r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) "
)
NO_TRACE = "0" * 32
# Spans leave the app every few seconds; metrics every OTEL_METRIC_EXPORT_INTERVAL
# (the gate launches with 5000 ms; the default is a minute).
ARRIVAL_TIMEOUT_S = 90
# The agent's OTLP/HTTP receiver, where the app sends spans and metrics. Its absence is
# looked for once (RECEIVER_TIMEOUT_S, for an agent still starting after
# test_start_order.py), so an agent that cannot receive fails each check at once, not
# after ARRIVAL_TIMEOUT_S of waiting for what can never arrive.
OTLP_HTTP_PORT = 4316
RECEIVER_TIMEOUT_S = 20
NO_RECEIVER = (
    f"nothing listens on the agent's OTLP port {OTLP_HTTP_PORT}, so no telemetry can "
    "arrive: is Application Signals on in the agent config (test_agent.py)?"
)
REQUESTS = ("/", "/health", "/users") * 4  # /users answers 503 without a database: a span too
# The operation whose telemetry is looked for: one of the requests above.
OPERATION = "GET /health"
# What Application Signals derives from each server span, per operation.
RED_METRICS = {"Latency", "Error", "Fault"}
# The distro's runtime metrics: the system-metrics instrumentation's scope, and the
# instruments the distro gives views to (aws_opentelemetry_configurator.py,
# _get_runtime_metric_views) as CPython names them.
RUNTIME_SCOPE = "opentelemetry.instrumentation.system_metrics"
RUNTIME_METRICS = {
    "process.runtime.cpython.memory",
    "process.runtime.cpython.gc_count",
    "process.runtime.cpython.thread_count",
}
APP_UNIT = "fastapi-otel"


@pytest.fixture(scope="module", autouse=True)
def telemetry_wanted(expect: dict[str, Any]) -> None:
    if not expect["telemetry"]:
        pytest.skip("the expect file says telemetry: false")


@pytest.fixture(scope="module")
def traffic(host: Any, expect: dict[str, Any]) -> list[int]:
    """Send the app a few requests; their statuses."""
    base = f"http://127.0.0.1:{expect['app_port']}"
    return [http_get(host, base + path)[0] for path in REQUESTS]


@pytest.fixture(scope="module")
def double_only(expect: dict[str, Any]) -> None:
    if expect["agent_package"] != "test-double":
        pytest.skip("the real agent forwards to AWS and keeps nothing to inspect here")


@pytest.fixture(scope="module")
def receiver_listens(host: Any) -> bool:
    """Whether the agent listens for the app's telemetry (asked once per module)."""
    return bool(poll(lambda: listens(host, OTLP_HTTP_PORT), RECEIVER_TIMEOUT_S, 2))


def received(host: Any, signal: str, local: Path) -> list[Any]:
    """What the double received so far for a signal, copied off the instance and decoded."""
    folder = Path(tempfile.mkdtemp(prefix=f"{signal}-", dir=local))
    if sudo_exists(host, f"{RECEIVED}/{signal}"):
        copy_folder(host, f"{RECEIVED}/{signal}", folder)
    return decode_received(folder, signal)


def server_spans(requests: list[Any], operation: str) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) of the server spans of one operation."""
    found = []
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = attributes_dict(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    named = attributes_dict(span.attributes).get("aws.local.operation")
                    if span.kind == Span.SPAN_KIND_SERVER and named == operation:
                        found.append((resource, span))
    return found


def red_metrics(requests: list[Any], operation: str) -> dict[str, set[str]]:
    """Application Signals metric name -> the aws.local.service values seen for operation."""
    found: dict[str, set[str]] = {}
    for request in requests:
        for resource_metrics in request.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    data = getattr(metric, metric.WhichOneof("data") or "gauge")
                    for point in data.data_points:
                        attributes = attributes_dict(point.attributes)
                        if attributes.get("aws.local.operation") == operation:
                            service = str(attributes.get("aws.local.service"))
                            found.setdefault(metric.name, set()).add(service)
    return found


def test_the_app_answered(traffic: list[int]) -> None:
    assert set(traffic) <= {200, 503}, traffic
    assert 200 in traffic


@pytest.mark.usefixtures("double_only", "traffic")
def test_spans_carry_the_launch_time_service_and_environment(
    host: Any, expect: dict[str, Any], tmp_path: Path, receiver_listens: bool
) -> None:
    assert receiver_listens, NO_RECEIVER
    spans = poll(
        lambda: server_spans(received(host, "traces", tmp_path), OPERATION), ARRIVAL_TIMEOUT_S
    )
    assert spans, f"no {OPERATION} span reached the agent within {ARRIVAL_TIMEOUT_S}s"
    wanted = {
        "service.name": expect["service_name"],
        "deployment.environment": expect["deployment_environment"],
    }
    resources = [resource for resource, _ in spans]
    assert any(wanted.items() <= resource.items() for resource in resources), resources[0]


@pytest.mark.usefixtures("double_only", "traffic")
def test_application_signals_metrics_are_exported(
    host: Any, expect: dict[str, Any], tmp_path: Path, receiver_listens: bool
) -> None:
    assert receiver_listens, NO_RECEIVER
    metrics = poll(
        lambda: red_metrics(received(host, "metrics", tmp_path), OPERATION), ARRIVAL_TIMEOUT_S
    )
    assert metrics, (
        f"no Application Signals metrics for {OPERATION} reached the agent within "
        f"{ARRIVAL_TIMEOUT_S}s: is OTEL_METRIC_EXPORT_INTERVAL in the launch settings?"
    )
    assert set(metrics) >= RED_METRICS, sorted(metrics)
    assert all(services == {expect["service_name"]} for services in metrics.values()), metrics


def scope_metrics(requests: list[Any], scope_name: str) -> dict[str, set[str]]:
    """Metric name -> the service.name values of the resources that sent it, in one scope."""
    found: dict[str, set[str]] = {}
    for request in requests:
        for resource_metrics in request.resource_metrics:
            service = attributes_dict(resource_metrics.resource.attributes).get("service.name")
            for scope in resource_metrics.scope_metrics:
                if scope.scope.name == scope_name:
                    for metric in scope.metrics:
                        found.setdefault(metric.name, set()).add(str(service))
    return found


@pytest.mark.usefixtures("double_only", "traffic")
def test_runtime_metrics_are_exported(
    host: Any, expect: dict[str, Any], tmp_path: Path, receiver_listens: bool
) -> None:
    environment = process_environment(host, main_pid(host, APP_UNIT))
    if environment.get("OTEL_AWS_APPLICATION_SIGNALS_RUNTIME_ENABLED", "true") != "true":
        pytest.skip("runtime metrics are off (otel.runtime_metrics: false)")

    def runtime() -> dict[str, set[str]]:
        found = scope_metrics(received(host, "metrics", tmp_path), RUNTIME_SCOPE)
        return found if set(found) >= RUNTIME_METRICS else {}

    assert receiver_listens, NO_RECEIVER
    metrics = poll(runtime, ARRIVAL_TIMEOUT_S)
    assert metrics, (
        f"the runtime metrics {sorted(RUNTIME_METRICS)} did not reach the agent within "
        f"{ARRIVAL_TIMEOUT_S}s"
    )
    assert all(metrics[name] == {expect["service_name"]} for name in RUNTIME_METRICS), metrics


# Concurrent requests made on the instance, so the workers sharing the listening socket
# all get some: sequential ones can all land on the worker that woke first.
_BURST = """\
import sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(_):
    try:
        return opener.open(sys.argv[1], timeout=15).status
    except OSError:
        return 0
with ThreadPoolExecutor(16) as pool:
    print(sorted(set(pool.map(get, range(64)))))
"""


def worker_pids(host: Any) -> set[int]:
    """The pids of the app's workers: every process of the unit but gunicorn's master."""
    return set(unit_processes(host, APP_UNIT)) - {main_pid(host, APP_UNIT)}


def resource_pids(requests: list[Any], kind: str) -> set[int]:
    """process.pid of the resources that sent server spans (`spans`) or runtime metrics."""
    pids = set()
    for request in requests:
        if kind == "spans":
            for resource_spans in request.resource_spans:
                spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
                if any(span.kind == Span.SPAN_KIND_SERVER for span in spans):
                    pids.add(attributes_dict(resource_spans.resource.attributes).get("process.pid"))
        else:
            for resource_metrics in request.resource_metrics:
                scopes = {scope.scope.name for scope in resource_metrics.scope_metrics}
                if RUNTIME_SCOPE in scopes:
                    pids.add(
                        attributes_dict(resource_metrics.resource.attributes).get("process.pid")
                    )
    return {int(pid) for pid in pids if pid is not None}


@pytest.mark.usefixtures("double_only", "traffic")
def test_spans_and_metrics_come_from_every_worker(
    host: Any, expect: dict[str, Any], tmp_path: Path, receiver_listens: bool
) -> None:
    workers = int(expect.get("app_workers", 1))
    if workers == 1:
        pytest.skip("app.workers is 1: one process sends everything")
    assert receiver_listens, NO_RECEIVER
    pids = worker_pids(host)
    assert len(pids) == workers, pids
    url = f"http://127.0.0.1:{expect['app_port']}/health"

    def missing() -> dict[str, set[int]]:
        host.check_output("python3 -c %s %s", _BURST, url)
        seen = {
            "spans": resource_pids(received(host, "traces", tmp_path), "spans"),
            "runtime metrics": resource_pids(received(host, "metrics", tmp_path), "metrics"),
        }
        return {kind: pids - found for kind, found in seen.items() if pids - found}

    gaps = missing()
    deadline_rounds = ARRIVAL_TIMEOUT_S // 5
    while gaps and deadline_rounds > 0:
        time.sleep(5)
        deadline_rounds -= 1
        gaps = missing()
    assert not gaps, f"workers that sent nothing of a kind within {ARRIVAL_TIMEOUT_S}s: {gaps}"


def request_lines(host: Any) -> list[re.Match[str]]:
    """The app log's request lines, parsed."""
    lines = sudo_text(host, APP_LOG).splitlines()
    return [match for line in lines if (match := REQUEST_LINE.search(line))]


@pytest.mark.usefixtures("traffic")
def test_request_log_lines_carry_a_trace_id(host: Any) -> None:
    # Log correlation on: a line written inside a request names that request's trace.
    method, path = OPERATION.split(" ", 1)
    lines = [m for m in request_lines(host) if (m["method"], m["path"]) == (method, path)]
    assert lines, f"no {OPERATION} line in {APP_LOG}"
    assert all(m["trace_id"] != NO_TRACE for m in lines), [m.group(0) for m in lines]


@pytest.mark.usefixtures("double_only", "traffic")
def test_the_trace_of_a_request_is_found_in_the_app_log(
    host: Any, tmp_path: Path, receiver_listens: bool
) -> None:
    # The trace ids the agent received for the operation's server spans (sampled
    # requests only: the X-Ray sampler drops some) are the ones on the app's lines.
    assert receiver_listens, NO_RECEIVER
    spans = poll(
        lambda: server_spans(received(host, "traces", tmp_path), OPERATION), ARRIVAL_TIMEOUT_S
    )
    assert spans, f"no {OPERATION} span reached the agent within {ARRIVAL_TIMEOUT_S}s"
    exported = {span.trace_id.hex() for _, span in spans}
    logged = {m["trace_id"] for m in request_lines(host)}
    assert exported <= logged, sorted(exported - logged)


def test_real_agent_log_shows_no_errors_since_boot(
    host: Any, expect: dict[str, Any], traffic: list[int]
) -> None:
    if expect["agent_package"] == "test-double":
        pytest.skip("the test double exports nothing; its received data is checked instead")
    assert sudo_exists(host, AGENT_LOG)
    booted = boot_time(host)
    errors = [
        line
        for line in sudo_text(host, AGENT_LOG).splitlines()
        if re.search(r"\bE!", line) and logged_at(line) >= booted
    ]
    assert errors == []


def logged_at(line: str) -> float:
    """The time of an agent log line (`2024-05-01T10:00:00Z E! ...`), 0 if it has none."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z", line)
    if not match:
        return 0.0
    stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
