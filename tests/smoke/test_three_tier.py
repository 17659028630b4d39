"""The original three-instance system, end to end, from the images alone."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bakery.config import load_config
from bakery.local.vm import BootedVM
from tests.doubles.cloudwatch_agent.received import attributes_dict, decode_received
from tests.smoke.conftest import DATABASE_B, LAUNCH_ENV_RESOURCE_ATTRIBUTES, ThreeTier

pytestmark = pytest.mark.slow
RECEIVED = "/opt/aws/amazon-cloudwatch-agent/var/testdouble/received"
# The smoke's user data sets no LOG_GROUP_NAME: the baked default reaches the resource.
LOG_GROUP = load_config("backend", "local").service.log_group
# Nor DATABASE_SERVICE_NAME: the database dependency takes the configured name.
DATABASE_SERVICE_NAME = load_config("backend", "local").app.database_service_name
# The instrumentation that makes the app's database client spans on the image.
PYMYSQL_SCOPE = "opentelemetry.instrumentation.pymysql"
# The distro's runtime metrics (docs/application-signals.md, "Runtime metrics"): the
# system-metrics instrumentation's scope and the instruments the distro gives views to.
RUNTIME_SCOPE = "opentelemetry.instrumentation.system_metrics"
RUNTIME_METRICS = {
    "process.runtime.cpython.memory",
    "process.runtime.cpython.gc_count",
    "process.runtime.cpython.thread_count",
}
# Telemetry leaves the app every few seconds (the smoke launches with a 5 s metric interval).
ARRIVAL_TIMEOUT_S = 120
APP_UNIT = "fastapi-otel"


def _call(tier: ThreeTier, method: str, path: str, body: dict[str, Any] | None = None,
          attempts: int = 60) -> tuple[int, Any]:  # fmt: skip
    """An HTTP call through the frontend's nginx, retried while the tiers settle."""
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://127.0.0.1:{tier.frontend_http_port}{path}"
    last: Exception | None = None
    for _ in range(attempts):
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            if error.code not in (502, 503, 504):
                return error.code, None
            last = error
        except OSError as error:
            last = error
        time.sleep(3)
    raise AssertionError(f"{method} {path} never answered: {last}")


def _received(tier: ThreeTier, tmp_path: Any, signal: str) -> list[Any]:
    """What the backend's agent double received so far of one signal, decoded."""
    listing = tier.backend.ssh(
        f"sudo sh -c 'for f in {RECEIVED}/{signal}/*.pb; do base64 -w0 $f; echo; done'"
    )
    folder = tmp_path / signal
    folder.mkdir(exist_ok=True)
    for index, line in enumerate(listing.stdout.split()):
        (folder / f"{index:05d}.pb").write_bytes(base64.b64decode(line))
    return decode_received(folder, signal)


def _spans(tier: ThreeTier, tmp_path: Any) -> list[Any]:
    return _received(tier, tmp_path, "traces")


def _mysql_spans(requests: list[Any], service_name: str) -> list[dict[str, Any]]:
    """Attributes (plus the span name and its instrumentation scope as `scope`) of the
    MySQL client spans of one service."""
    found = []
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = attributes_dict(resource_spans.resource.attributes)
            if resource.get("service.name") != service_name:
                continue
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = attributes_dict(span.attributes)
                    if attributes.get("db.system") == "mysql":
                        found.append(attributes | {"name": span.name, "scope": scope.scope.name})
    return found


def test_users_round_trip_through_all_three_tiers(three_tier: ThreeTier, tmp_path: Any) -> None:
    status, created = _call(three_tier, "POST", "/api/users",
                            {"name": "Ada", "email": "ada@example.com"})  # fmt: skip
    assert status == 201, created
    user_id = created["id"]
    status, listed = _call(three_tier, "GET", "/api/users")
    assert status == 200 and any(user["id"] == user_id for user in listed)
    status, fetched = _call(three_tier, "GET", f"/api/users/{user_id}")
    assert status == 200 and fetched["email"] == "ada@example.com"
    status, _ = _call(three_tier, "DELETE", f"/api/users/{user_id}")
    assert status == 204
    status, _ = _call(three_tier, "GET", f"/api/users/{user_id}", attempts=1)
    assert status == 404

    # The backend's trace of the create call holds a MySQL client span to the database.
    deadline = time.monotonic() + 90
    db_spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not db_spans:
        time.sleep(5)
        db_spans = _mysql_spans(_spans(three_tier, tmp_path), three_tier.service_name)
    assert db_spans, "no database client span reached the agent"
    assert any("INSERT" in str(span.get("db.statement", span["name"])) for span in db_spans)
    peers = {str(span.get("net.peer.name") or span.get("server.address")) for span in db_spans}
    assert DATABASE_B in peers
    # The dependency is named from config (peer.service), and the distro's exporter turned
    # that into the RemoteService Application Signals shows, instead of `mysql`.
    assert {span.get("peer.service") for span in db_spans} == {DATABASE_SERVICE_NAME}
    assert {span.get("aws.remote.service") for span in db_spans} == {DATABASE_SERVICE_NAME}
    # They come from the PyMySQL instrumentation: the distro's SQLAlchemy one (0.65b0 wants
    # sqlalchemy < 2.1) skips itself next to the app's SQLAlchemy 2.1, as
    # docs/application-signals.md says. The name is set for either (DATABASE_SCOPES).
    assert {span["scope"] for span in db_spans} == {PYMYSQL_SCOPE}, db_spans


def test_a_request_is_followed_from_nginx_into_the_backend_trace(
    three_tier: ThreeTier, tmp_path: Any
) -> None:
    """docs/application-signals.md: nginx logs the client's traceparent and the backend's
    span (traceresponse); the backend continued that trace, and the agent has its span."""
    trace_id = "5b8efff798038103d269b633813fc60c"
    url = f"http://127.0.0.1:{three_tier.frontend_http_port}/api/health?followed"
    request = urllib.request.Request(
        url, headers={"traceparent": f"00-{trace_id}-eee19b7ec3c1b174-01"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        answered = response.headers["traceresponse"]
    logged = three_tier.frontend.ssh(
        "sudo grep -F 'GET /api/health?followed ' /var/log/nginx/access.log"
    ).stdout.splitlines()[-1]
    assert f" traceparent=00-{trace_id}-eee19b7ec3c1b174-01 " in logged, logged
    assert f" backend_trace={answered}" in logged, logged
    _, logged_trace, logged_span, _ = answered.split("-")
    assert logged_trace == trace_id

    deadline = time.monotonic() + 90
    found: list[Any] = []
    while time.monotonic() < deadline and not found:
        time.sleep(5)
        found = [
            span
            for request_ in _spans(three_tier, tmp_path)
            for resource_spans in request_.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
            if span.trace_id.hex() == trace_id and span.span_id.hex() == logged_span
        ]
    assert found, f"the backend span {logged_span} of trace {trace_id} never reached the agent"


def test_otel_settings_in_launch_env_reach_the_app_but_not_its_resource(
    three_tier: ThreeTier,
) -> None:
    """docs/launch-settings.md: any other OTEL_* line reaches the app and wins, while
    OTEL_RESOURCE_ATTRIBUTES always comes from SERVICE_NAME, DEPLOYMENT_ENVIRONMENT and
    LOG_GROUP_NAME (the log group Application Signals links the app's log lines from)."""
    environ = three_tier.backend.ssh(
        "sudo cat /proc/$(systemctl show -p MainPID --value fastapi-otel)/environ"
    )
    variables = dict(line.split("=", 1) for line in environ.stdout.split("\0") if "=" in line)
    assert variables.get("OTEL_METRIC_EXPORT_INTERVAL") == "5000", environ.stderr
    assert variables["OTEL_RESOURCE_ATTRIBUTES"] == (
        f"service.name={three_tier.service_name},deployment.environment={three_tier.environment},"
        f"aws.log.group.names={LOG_GROUP}"
    )
    assert LAUNCH_ENV_RESOURCE_ATTRIBUTES not in variables["OTEL_RESOURCE_ATTRIBUTES"]


def _runtime_metrics(requests: list[Any]) -> dict[str, set[tuple[str, str]]]:
    """Runtime metric name -> (service.name, deployment.environment) of the senders."""
    found: dict[str, set[tuple[str, str]]] = {}
    for request in requests:
        for resource_metrics in request.resource_metrics:
            resource = attributes_dict(resource_metrics.resource.attributes)
            sender = (
                str(resource.get("service.name")),
                str(resource.get("deployment.environment")),
            )
            for scope in resource_metrics.scope_metrics:
                if scope.scope.name == RUNTIME_SCOPE:
                    for metric in scope.metrics:
                        found.setdefault(metric.name, set()).add(sender)
    return found


def test_runtime_metrics_of_the_backend_reach_the_agent(
    three_tier: ThreeTier, tmp_path: Any
) -> None:
    """docs/application-signals.md, "Runtime metrics": on by default, under the launch-time
    service and environment."""
    wanted = {(three_tier.service_name, three_tier.environment)}
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    found: dict[str, set[tuple[str, str]]] = {}
    while time.monotonic() < deadline and not set(found) >= RUNTIME_METRICS:
        time.sleep(5)
        found = _runtime_metrics(_received(three_tier, tmp_path, "metrics"))
    missing = RUNTIME_METRICS - set(found)
    assert not missing, f"runtime metrics that never reached the agent: {sorted(missing)}"
    assert all(found[name] == wanted for name in RUNTIME_METRICS), found


def _worker_pids(tier: ThreeTier) -> tuple[int, set[int]]:
    """The configured worker count (gunicorn's `--workers`; 1 for uvicorn alone) and the
    pids of the app unit's processes other than its main one."""
    backend = tier.backend
    main = backend.ssh(f"systemctl show -p MainPID --value {APP_UNIT}").stdout.strip()
    cmdline = backend.ssh(f"sudo cat /proc/{main}/cmdline").stdout.split("\0")
    workers = int(cmdline[cmdline.index("--workers") + 1])
    if not any(part.endswith("gunicorn") for part in cmdline):
        return workers, set()
    cgroup = backend.ssh(f"systemctl show -p ControlGroup --value {APP_UNIT}").stdout.strip()
    procs = backend.ssh(f"cat /sys/fs/cgroup{cgroup}/cgroup.procs").stdout.split()
    return workers, {int(pid) for pid in procs} - {int(main)}


def _pids_that_sent(requests: list[Any], service_name: str, signal: str) -> set[int]:
    """process.pid of the resources of a service that sent server spans (traces) or
    runtime metrics (metrics)."""
    pids: set[int] = set()
    for request in requests:
        batches = request.resource_spans if signal == "traces" else request.resource_metrics
        for batch in batches:
            resource = attributes_dict(batch.resource.attributes)
            if resource.get("service.name") != service_name or "process.pid" not in resource:
                continue
            if signal == "traces":
                spans = (span for scope in batch.scope_spans for span in scope.spans)
                sent = any(span.kind == Span.SPAN_KIND_SERVER for span in spans)
            else:
                sent = any(scope.scope.name == RUNTIME_SCOPE for scope in batch.scope_metrics)
            if sent:
                pids.add(int(resource["process.pid"]))
    return pids


def _burst(tier: ThreeTier, path: str, requests: int = 48) -> set[int]:
    """Concurrent requests through the frontend, so every worker sharing the backend's
    listening socket gets some (sequential ones may all land on one); their statuses."""
    url = f"http://127.0.0.1:{tier.frontend_http_port}{path}"

    def get(_: int) -> int:
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    with ThreadPoolExecutor(12) as pool:
        return set(pool.map(get, range(requests)))


def test_spans_and_runtime_metrics_come_from_every_worker(
    three_tier: ThreeTier, tmp_path: Any
) -> None:
    """docs/application-signals.md, "Workers": with app.workers > 1 each gunicorn worker
    sets up its own SDK, so each one's server spans and runtime metrics reach the agent."""
    workers, pids = _worker_pids(three_tier)
    if workers == 1:
        pytest.skip("the backend image runs one uvicorn worker (app.workers: 1); bake it "
                    "with --set app.workers=2 to check every worker")  # fmt: skip
    assert len(pids) == workers, (workers, pids)
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    gaps: dict[str, set[int]] = {"traces": pids, "metrics": pids}
    while time.monotonic() < deadline and gaps:
        assert _burst(three_tier, "/api/health") == {200}
        time.sleep(5)
        gaps = {}
        for signal in ("traces", "metrics"):
            sent = _pids_that_sent(
                _received(three_tier, tmp_path, signal), three_tier.service_name, signal
            )
            if pids - sent:
                gaps[signal] = pids - sent
    assert not gaps, f"workers with nothing at the agent after {ARRIVAL_TIMEOUT_S}s: {gaps}"


# ---------------------------------------------------------------------------------------
# The on-instance doctor, on the running system: it passes on every tier, and when the
# backend breaks in the two ways the manual guide's troubleshooting covered (the agent
# stopped, the app failed) it fails naming that cause, and the fix it prints works.
# These run last: they break the backend (and mend it) after the round trip above.

DOCTOR = "sudo /usr/local/bin/appsignals-doctor --json"
APP_DIR = load_config("backend", "local").app.dir
INSTRUMENT = f"{APP_DIR}/venv/bin/opentelemetry-instrument"
APP_LOG = "/var/log/bakery/fastapi-otel.log"


def _doctor(vm: BootedVM) -> tuple[int, dict[str, dict[str, str]]]:
    """The doctor's exit code and its FAIL rows, by check name."""
    result = vm.ssh(DOCTOR)
    document = json.loads(result.stdout)
    failed = {row["check"]: row for row in document["checks"] if row["status"] == "FAIL"}
    return result.returncode, failed


def _doctor_until(vm: BootedVM, done: Callable[[int, dict[str, dict[str, str]]], bool],
                  timeout_s: float = 90) -> tuple[int, dict[str, dict[str, str]]]:  # fmt: skip
    """Ask the doctor again until `done` holds: units take a moment to stop and start."""
    deadline = time.monotonic() + timeout_s
    answer = _doctor(vm)
    while not done(*answer) and time.monotonic() < deadline:
        time.sleep(3)
        answer = _doctor(vm)
    return answer


def _passes(code: int, failed: dict[str, dict[str, str]]) -> bool:
    return code == 0 and not failed


def test_doctor_passes_on_every_tier(three_tier: ThreeTier) -> None:
    for vm in (three_tier.frontend, three_tier.backend, three_tier.database):
        code, failed = _doctor_until(vm, _passes)
        assert (code, failed) == (0, {}), vm.name


def test_doctor_names_a_stopped_agent_and_its_fix_works(three_tier: ThreeTier) -> None:
    backend = three_tier.backend
    assert backend.ssh("sudo systemctl stop amazon-cloudwatch-agent").returncode == 0

    code, failed = _doctor_until(backend, lambda code, failed: "agent service" in failed)
    assert code == 1
    assert "inactive" in failed["agent service"]["detail"], failed
    # Its ports go with it; nothing else is blamed.
    assert set(failed) <= {"agent service", "agent ports"}, failed

    fix = failed["agent service"]["fix"].split(";")[0]
    assert fix == "systemctl restart amazon-cloudwatch-agent"
    assert backend.ssh(f"sudo {fix}").returncode == 0
    assert _doctor_until(backend, _passes) == (0, {})


def test_doctor_names_a_failed_app_and_its_fix_works(three_tier: ThreeTier) -> None:
    backend = three_tier.backend
    # A venv that lost the OTEL distro's launcher: systemd cannot start the app, and
    # `Restart=always` keeps trying.
    backend.ssh(f"sudo mv {INSTRUMENT} {INSTRUMENT}.lost && sudo systemctl restart fastapi-otel")
    try:
        code, failed = _doctor_until(backend, lambda code, failed: "fastapi-otel" in failed)
        assert code == 1
        assert set(failed) == {"fastapi-otel", "app /health"}, failed
        assert "failing and restarting" in failed["fastapi-otel"]["detail"]
        assert failed["fastapi-otel"]["fix"].startswith("journalctl -u fastapi-otel -b")
        # The app's log, where the fix points, says why.
        assert INSTRUMENT in backend.ssh(f"sudo tail -n 20 {APP_LOG}").stdout
    finally:
        backend.ssh(f"sudo mv {INSTRUMENT}.lost {INSTRUMENT}")
    assert backend.ssh("sudo systemctl restart fastapi-otel").returncode == 0
    assert _doctor_until(backend, _passes) == (0, {})
