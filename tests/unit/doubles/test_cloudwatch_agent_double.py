"""Tests of the CloudWatch agent test double: its package, its ctl and its server.

The ctl and server run as they do on the image (separate python3 processes), from the
package's own files extracted with dpkg-deb -x, under CWAGENT_DOUBLE_ROOT instead of /opt.
Every network call stays on 127.0.0.1: the IMDS endpoint is always pointed at loopback.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.doubles.cloudwatch_agent.build_deb import (
    DEFAULT_SCHEMA_PATH,
    DOUBLE_VERSION,
    DebBuildError,
    build_deb,
)

REFERENCE_DIR = DEFAULT_SCHEMA_PATH.parent
SAMPLE_CONFIGS = [
    REFERENCE_DIR / "cloudwatch-agent-appsignals-sample.json",
    REFERENCE_DIR / "cloudwatch-agent-appsignals-testframework.json",
]
HOME_IN_PACKAGE = Path("opt/aws/amazon-cloudwatch-agent")
REPO_ROOT = Path(__file__).resolve().parents[3]
# The keywords the AWS distro's X-Ray sampler builds its objects from (its _SamplingRule,
# _SamplingTarget and _SamplingTargetResponse): any other key makes it drop the answer.
SAMPLER_RULE_KEYS = {
    "Attributes",
    "FixedRate",
    "HTTPMethod",
    "Host",
    "Priority",
    "ReservoirSize",
    "ResourceARN",
    "RuleARN",
    "RuleName",
    "ServiceName",
    "ServiceType",
    "URLPath",
    "Version",
}
SAMPLER_TARGET_KEYS = {"FixedRate", "Interval", "ReservoirQuota", "ReservoirQuotaTTL", "RuleName"}
SAMPLER_TARGETS_RESPONSE_KEYS = {
    "LastRuleModification",
    "SamplingTargetDocuments",
    "UnprocessedStatistics",
}

# Talks to loopback only, even when the environment sets an HTTP proxy.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def deb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg): cannot build the double")
    return build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture
def agent_home(deb_path: Path, tmp_path: Path) -> Path:
    """The package's files, unpacked as dpkg would lay them out, under a temporary root."""
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb_path), str(root)], check=True)
    return root / HOME_IN_PACKAGE


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CWAGENT_DOUBLE_", "AWS_EC2_METADATA_"))
    }
    env["CWAGENT_DOUBLE_ROOT"] = str(home)
    # Never let a test reach the real link-local metadata address.
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{closed_loopback_port()}"
    env.update(extra)
    return env


def run_ctl(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(home / "bin" / "amazon-cloudwatch-agent-ctl"), *args],
        env=agent_env(home, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def translation(home: Path) -> dict[str, Any]:
    """The translation record, from the YAML copy (the server reads the TOML one)."""
    record: dict[str, Any] = yaml.safe_load(
        (home / "etc" / "amazon-cloudwatch-agent.yaml").read_text(encoding="utf-8")
    )
    return record


def write_config(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


class FakeImdsHandler(http.server.BaseHTTPRequestHandler):
    """IMDSv2 as the ctl uses it: a PUT for a token, then a GET with that token."""

    token = "test-token"
    region = "eu-west-3"

    def do_PUT(self) -> None:
        self.answer(200 if self.path == "/latest/api/token" else 404, self.token)

    def do_GET(self) -> None:
        authorised = self.headers.get("X-aws-ec2-metadata-token") == self.token
        found = self.path == "/latest/meta-data/placement/region"
        self.answer(200 if authorised and found else 401, self.region)

    def answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_imds() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeImdsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@dataclass
class RunningAgent:
    home: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]

    def url(self, port_name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    @property
    def received(self) -> Path:
        return self.home / "var" / "testdouble" / "received"


def start_server(home: Path, **env: str) -> RunningAgent:
    """Start the server on free ports and wait until it reports them (or exits)."""
    ports = {
        "CWAGENT_DOUBLE_OTLP_GRPC_PORT": "0",
        "CWAGENT_DOUBLE_OTLP_HTTP_PORT": "0",
        "CWAGENT_DOUBLE_XRAY_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, str(home / "bin" / "amazon-cloudwatch-agent")],
        env=agent_env(home, **{**ports, **env}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = home / "var" / "testdouble" / "server.json"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists():
            return RunningAgent(home, process, json.loads(state.read_text())["ports"])
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"server did not come up (exit code {process.returncode})")


def stop_server(agent: RunningAgent) -> int:
    agent.process.send_signal(signal.SIGTERM)
    return agent.process.wait(timeout=15)


@pytest.fixture
def running_agent(agent_home: Path) -> Iterator[RunningAgent]:
    fetched = run_ctl(
        agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{SAMPLE_CONFIGS[0]}"
    )
    assert fetched.returncode == 0, fetched.stderr
    agent = start_server(agent_home)
    yield agent
    if agent.process.poll() is None:
        stop_server(agent)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _LOCAL.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def trace_request(service: str = "backend", environment: str = "dev") -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    attributes = [
        KeyValue(key="service.name", value=AnyValue(string_value=service)),
        KeyValue(key="deployment.environment", value=AnyValue(string_value=environment)),
    ]
    span = Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="GET /users",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attributes),
                scope_spans=[ScopeSpans(spans=[span])],
            )
        ]
    )


# --- the package ---------------------------------------------------------------------


def deb_field(deb: Path, field: str) -> str:
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_package_version_marks_it_as_a_test_double(deb_path: Path) -> None:
    assert deb_path.name == f"amazon-cloudwatch-agent_{DOUBLE_VERSION}_amd64.deb"
    assert deb_field(deb_path, "Package") == "amazon-cloudwatch-agent"
    assert "testdouble" in deb_field(deb_path, "Version")
    assert deb_field(deb_path, "Version") == DOUBLE_VERSION
    assert deb_field(deb_path, "Architecture") == "amd64"
    assert deb_field(deb_path, "Depends") == "python3, python3-jsonschema"
    assert "TEST DOUBLE" in deb_field(deb_path, "Description")


def test_the_arm64_double_differs_only_in_its_architecture(deb_path: Path, tmp_path: Path) -> None:
    arm64 = build_deb(tmp_path, architecture="arm64")
    assert arm64.name == f"amazon-cloudwatch-agent_{DOUBLE_VERSION}_arm64.deb"
    assert deb_field(arm64, "Architecture") == "arm64"
    for field in ("Package", "Version", "Depends", "Description"):
        assert deb_field(arm64, field) == deb_field(deb_path, field)
    listing = [
        subprocess.run(
            ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        for deb in (deb_path, arm64)
    ]
    assert listing[0] == listing[1]  # same files: the double has no compiled part


def test_a_double_for_an_architecture_bakery_does_not_bake_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DebBuildError, match="--arch i386"):
        build_deb(tmp_path, architecture="i386")


def test_package_installs_the_real_agent_layout(deb_path: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb_path)], capture_output=True, text=True, check=True
    )
    entries = {line.split()[-1].removeprefix(".") for line in listing.stdout.splitlines()}
    home = "/opt/aws/amazon-cloudwatch-agent"
    expected = {
        *(f"{home}/{name}/" for name in ("bin", "etc", "logs", "var", "doc")),
        f"{home}/bin/CWAGENT_VERSION",
        f"{home}/bin/amazon-cloudwatch-agent",
        f"{home}/bin/amazon-cloudwatch-agent-ctl",
        f"{home}/doc/amazon-cloudwatch-agent-schema.json",
        f"{home}/doc/TEST-DOUBLE",
        "/lib/systemd/system/amazon-cloudwatch-agent.service",
    }
    assert expected <= entries
    assert all(" root/root " in line for line in listing.stdout.splitlines())


def test_package_files_say_what_they_are(agent_home: Path) -> None:
    assert (agent_home / "bin" / "CWAGENT_VERSION").read_text().strip() == DOUBLE_VERSION
    assert "TEST DOUBLE" in (agent_home / "doc" / "TEST-DOUBLE").read_text()
    shipped = agent_home / "doc" / "amazon-cloudwatch-agent-schema.json"
    assert shipped.read_bytes() == DEFAULT_SCHEMA_PATH.read_bytes()
    for program in ("amazon-cloudwatch-agent", "amazon-cloudwatch-agent-ctl"):
        assert os.access(agent_home / "bin" / program, os.X_OK)


def test_unit_runs_the_server_and_restarts_it_on_failure(agent_home: Path) -> None:
    unit = (
        agent_home.parents[2] / "lib/systemd/system/amazon-cloudwatch-agent.service"
    ).read_text()
    assert "ExecStart=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent\n" in unit
    assert "Type=simple" in unit
    assert "User=cwagent" in unit
    assert "Restart=on-failure" in unit


def test_maintainer_scripts_create_cwagent_but_leave_the_service_alone(
    deb_path: Path, tmp_path: Path
) -> None:
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb_path), str(control)], check=True)
    postinst = (control / "postinst").read_text()
    assert "useradd --system" in postinst
    assert "getent passwd cwagent" in postinst  # idempotent
    assert "systemctl enable" not in postinst
    assert "systemctl start" not in postinst
    assert "systemctl stop amazon-cloudwatch-agent.service" in (control / "prerm").read_text()


def test_package_build_is_deterministic(deb_path: Path, tmp_path: Path) -> None:
    again = build_deb(tmp_path / "again")
    assert again.read_bytes() == deb_path.read_bytes()


def test_build_without_schema_says_where_to_find_it(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg)")
    with pytest.raises(DebBuildError, match="--schema"):
        build_deb(tmp_path / "out", tmp_path / "missing-schema.json")


def test_build_cli_prints_the_package_path(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg)")
    result = subprocess.run(
        [sys.executable, "-m", "tests.doubles.cloudwatch_agent.build_deb", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_file()


# --- the ctl -------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLE_CONFIGS, ids=lambda path: path.stem)
def test_fetch_config_accepts_reference_configs(agent_home: Path, sample: Path) -> None:
    result = run_ctl(agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{sample}")

    assert result.returncode == 0, result.stderr
    stored = agent_home / "etc" / "amazon-cloudwatch-agent.d" / f"file_{sample.name}"
    assert stored.read_bytes() == sample.read_bytes()
    record = translation(agent_home)
    assert record["testdouble"]["version"] == DOUBLE_VERSION
    assert record["testdouble"]["mode"] == "onPremise"
    assert (
        record["testdouble"]["boot_id"]
        == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    )
    assert record["application_signals"] == {"traces": True, "metrics": True}
    toml_text = (agent_home / "etc" / "amazon-cloudwatch-agent.toml").read_text()
    assert f'boot_id = "{record["testdouble"]["boot_id"]}"' in toml_text
    assert "amazon-cloudwatch-agent.toml" in result.stdout


def test_fetch_config_prefers_the_configured_region(agent_home: Path, fake_imds: str) -> None:
    result = run_ctl(
        agent_home,
        "-a",
        "fetch-config",
        "-m",
        "ec2",
        "-c",
        f"file:{SAMPLE_CONFIGS[0]}",
        AWS_EC2_METADATA_SERVICE_ENDPOINT=fake_imds,
    )

    assert result.returncode == 0, result.stderr
    record = translation(agent_home)["testdouble"]
    assert (record["region"], record["region_source"], record["imds"]) == (
        "us-east-1",
        "config",
        "reachable",
    )


def test_fetch_config_takes_the_region_from_imds_on_ec2(
    agent_home: Path, fake_imds: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, "app.json", {"traces": {"traces_collected": {"application_signals": {}}}}
    )

    result = run_ctl(
        agent_home,
        "-a",
        "fetch-config",
        "-m",
        "auto",
        "-c",
        f"file:{config}",
        AWS_EC2_METADATA_SERVICE_ENDPOINT=fake_imds,
    )

    assert result.returncode == 0, result.stderr
    record = translation(agent_home)
    assert record["testdouble"]["mode"] == "ec2"
    assert (record["testdouble"]["region"], record["testdouble"]["region_source"]) == (
        "eu-west-3",
        "imds",
    )
    assert record["application_signals"] == {"traces": True, "metrics": False}


def test_fetch_config_on_ec2_without_imds_records_unknown_region_and_warns(
    agent_home: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, "app.json", {"logs": {"metrics_collected": {"application_signals": {}}}}
    )

    result = run_ctl(agent_home, "-a", "fetch-config", "-m", "ec2", "-c", f"file:{config}")

    assert result.returncode == 0, result.stderr
    record = translation(agent_home)["testdouble"]
    assert (record["region"], record["imds"]) == ("unknown", "unreachable")
    assert "W!" in result.stderr
    assert (
        "W! [ctl] no instance metadata service"
        in (agent_home / "logs" / "amazon-cloudwatch-agent.log").read_text()
    )


def test_fetch_config_skips_imds_when_disabled(agent_home: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "app.json", {"traces": {"traces_collected": {"application_signals": {}}}}
    )

    result = run_ctl(
        agent_home,
        "-a",
        "fetch-config",
        "-m",
        "ec2",
        "-c",
        f"file:{config}",
        AWS_EC2_METADATA_DISABLED="true",
    )

    assert result.returncode == 0, result.stderr
    assert translation(agent_home)["testdouble"]["imds"] == "disabled"


@pytest.mark.parametrize(
    ("content", "expected_error"),
    [
        ('{"traces": {"traces_collected": {"application_signals": "yes"}}}', "is not of type"),
        ('{"traces": {"traces_collected": {}}}', "/traces/traces_collected:"),
        ('{"traces": ', "not valid JSON"),
    ],
    ids=["wrong-type", "empty-traces", "not-json"],
)
def test_fetch_config_rejects_invalid_config(
    agent_home: Path, tmp_path: Path, content: str, expected_error: str
) -> None:
    config = tmp_path / "bad.json"
    config.write_text(content, encoding="utf-8")

    result = run_ctl(agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{config}")

    assert result.returncode == 1
    assert "validation" in result.stderr
    assert expected_error in (agent_home / "logs" / "configuration-validation.log").read_text()
    assert not (agent_home / "etc" / "amazon-cloudwatch-agent.toml").exists()


def test_fetch_config_replaces_previous_configs(agent_home: Path) -> None:
    for sample in SAMPLE_CONFIGS:
        assert (
            run_ctl(
                agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{sample}"
            ).returncode
            == 0
        )

    stored = sorted(p.name for p in (agent_home / "etc" / "amazon-cloudwatch-agent.d").iterdir())
    assert stored == [f"file_{SAMPLE_CONFIGS[1].name}"]


def test_fetch_config_with_s_enables_and_restarts_the_service(
    agent_home: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "systemctl-calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n', encoding="utf-8")
    fake.chmod(0o755)

    result = run_ctl(
        agent_home,
        "-a",
        "fetch-config",
        "-m",
        "onPremise",
        "-s",
        "-c",
        f"file:{SAMPLE_CONFIGS[0]}",
        CWAGENT_DOUBLE_SYSTEMCTL=str(fake),
    )

    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "enable amazon-cloudwatch-agent.service",
        "restart amazon-cloudwatch-agent.service",
    ]


def test_remove_config_all_forgets_the_translation(agent_home: Path) -> None:
    run_ctl(agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{SAMPLE_CONFIGS[0]}")

    result = run_ctl(agent_home, "-a", "remove-config", "-c", "all")

    assert result.returncode == 0, result.stderr
    assert not (agent_home / "etc" / "amazon-cloudwatch-agent.toml").exists()
    assert not (agent_home / "etc" / "amazon-cloudwatch-agent.d").exists()


def test_status_of_a_fresh_install_is_stopped_and_not_configured(agent_home: Path) -> None:
    result = run_ctl(agent_home, "-a", "status")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": "stopped",
        "starttime": "",
        "configstatus": "not configured",
        "version": DOUBLE_VERSION,
    }


def test_status_reports_a_running_configured_agent(running_agent: RunningAgent) -> None:
    status = json.loads(run_ctl(running_agent.home, "-a", "status").stdout)

    assert status["status"] == "running"
    assert status["configstatus"] == "configured"
    assert status["starttime"]
    assert status["version"] == DOUBLE_VERSION


# --- the server ----------------------------------------------------------------------


def test_server_refuses_to_start_without_a_translated_config(agent_home: Path) -> None:
    process = subprocess.run(
        [sys.executable, str(agent_home / "bin" / "amazon-cloudwatch-agent")],
        env=agent_env(agent_home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert process.returncode == 1
    assert (
        "no translated configuration"
        in (agent_home / "logs" / "amazon-cloudwatch-agent.log").read_text()
    )


def test_server_opens_no_ports_when_application_signals_is_off(agent_home: Path) -> None:
    assert (
        run_ctl(agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", "default").returncode
        == 0
    )

    agent = start_server(agent_home)
    try:
        assert agent.ports == {}
    finally:
        stop_server(agent)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_otlp_http_stores_traces_that_decode_back(
    running_agent: RunningAgent, compress: bool
) -> None:
    pytest.importorskip("opentelemetry.proto", reason="pip install opentelemetry-proto")
    from tests.doubles.cloudwatch_agent.received import decode_received, resource_attributes

    sent = trace_request()
    body = sent.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"

    status, response_headers, response_body = post(
        running_agent.url("otlp_http", "/v1/traces"), body, headers
    )

    assert status == 200
    assert response_headers["Content-Type"] == "application/x-protobuf"
    assert response_body == b""
    received = decode_received(running_agent.received / "traces")
    assert received == [sent]
    assert resource_attributes(received) == [
        {"service.name": "backend", "deployment.environment": "dev"}
    ]


def test_otlp_http_keeps_only_the_newest_bodies(agent_home: Path) -> None:
    assert (
        run_ctl(
            agent_home, "-a", "fetch-config", "-m", "onPremise", "-c", f"file:{SAMPLE_CONFIGS[0]}"
        ).returncode
        == 0
    )
    agent = start_server(agent_home, CWAGENT_DOUBLE_MAX_FILES="3")
    try:
        for _ in range(5):
            status, _, _ = post(
                agent.url("otlp_http", "/v1/metrics"),
                b"",
                {"Content-Type": "application/x-protobuf"},
            )
            assert status == 200
    finally:
        stop_server(agent)

    kept = sorted(p.name.split("-", 1)[0] for p in (agent.received / "metrics").glob("*.pb"))
    assert kept == ["0000000003", "0000000004", "0000000005"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected_status"),
    [
        ("/v1/traces", b"{}", {"Content-Type": "application/json"}, 415),
        ("/v1/traces", b"\x0a\xff", {"Content-Type": "application/x-protobuf"}, 400),
        (
            "/v1/traces",
            b"x",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            400,
        ),
        ("/v1/profiles", b"", {"Content-Type": "application/x-protobuf"}, 404),
    ],
    ids=["json", "not-protobuf", "bad-gzip", "unknown-path"],
)
def test_otlp_http_rejects_what_it_cannot_store(
    running_agent: RunningAgent,
    path: str,
    body: bytes,
    headers: dict[str, str],
    expected_status: int,
) -> None:
    status, _, _ = post(running_agent.url("otlp_http", path), body, headers)

    assert status == expected_status
    assert not (running_agent.received / "traces").exists()


def test_xray_sampling_rules_sample_everything(running_agent: RunningAgent) -> None:
    status, _, body = post(
        running_agent.url("xray", "/GetSamplingRules"), b"{}", {"Content-Type": "application/json"}
    )

    assert status == 200
    records = json.loads(body)["SamplingRuleRecords"]
    rule = records[0]["SamplingRule"]
    assert set(rule) <= SAMPLER_RULE_KEYS
    assert (rule["RuleName"], rule["Version"], rule["FixedRate"], rule["ReservoirSize"]) == (
        "Default",
        1,
        1.0,
        1,
    )
    assert all(
        rule[key] == "*" for key in ("ServiceName", "ServiceType", "Host", "HTTPMethod", "URLPath")
    )
    assert rule["RuleARN"].startswith("arn:aws:xray:")


def test_xray_sampling_targets_grant_the_default_rule(running_agent: RunningAgent) -> None:
    statistics = {
        "SamplingStatisticsDocuments": [
            {
                "RuleName": "Default",
                "ClientID": "0123456789abcdef01234567",
                "Timestamp": time.time(),
                "RequestCount": 3,
                "BorrowCount": 1,
                "SampledCount": 3,
            }
        ]
    }

    status, _, body = post(
        running_agent.url("xray", "/SamplingTargets"),
        json.dumps(statistics).encode(),
        {"Content-Type": "application/json"},
    )

    assert status == 200
    answer = json.loads(body)
    assert set(answer) <= SAMPLER_TARGETS_RESPONSE_KEYS
    assert answer["UnprocessedStatistics"] == []
    assert answer["LastRuleModification"] < time.time()
    [target] = answer["SamplingTargetDocuments"]
    assert set(target) <= SAMPLER_TARGET_KEYS
    assert (target["RuleName"], target["FixedRate"]) == ("Default", 1.0)


def test_otlp_grpc_port_counts_connections_and_bytes(running_agent: RunningAgent) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    with socket.create_connection(
        ("127.0.0.1", running_agent.ports["otlp_grpc"]), timeout=5
    ) as sock:
        sock.sendall(preface)

    stats_path = running_agent.home / "var" / "testdouble" / "otlp-grpc.json"
    deadline = time.monotonic() + 10
    while not stats_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = json.loads(stats_path.read_text())
    assert (stats["connections"], stats["bytes"]) == (1, len(preface))


def test_server_stops_cleanly_on_sigterm(running_agent: RunningAgent) -> None:
    assert stop_server(running_agent) == 0

    assert not (running_agent.home / "var" / "testdouble" / "server.json").exists()
    assert json.loads(run_ctl(running_agent.home, "-a", "status").stdout)["status"] == "stopped"
    log = (running_agent.home / "logs" / "amazon-cloudwatch-agent.log").read_text()
    assert "I! stopped" in log


def test_server_starts_from_the_translation_of_this_boot(running_agent: RunningAgent) -> None:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    log = (running_agent.home / "logs" / "amazon-cloudwatch-agent.log").read_text()

    assert "mode=onPremise region=us-east-1 translated at" in log
    assert f"(boot {boot_id})" in log
