"""The backend: the FastAPI app under opentelemetry-instrument, run by a locked-down
system user, with the OTEL variables Application Signals needs and app.workers workers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from guest import (
    http_get,
    main_pid,
    process_environment,
    unit_processes,
    unit_variables,
)

ROLES = {"backend"}

APP_UNIT = "fastapi-otel"
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")
# What Application Signals needs of a Python app (shared/CONTEXT.md, "Facts").
FIXED_OTEL = {
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_AWS_APPLICATION_SIGNALS_ENABLED": "true",
    "OTEL_PYTHON_DISTRO": "aws_distro",
    "OTEL_PYTHON_CONFIGURATOR": "aws_configurator",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "xray",
}
# The agent's ports: without the traces endpoint spans go to 4318, where nothing listens.
AGENT_ENDPOINTS = {
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": r"http://(localhost|127\.0\.0\.1):4316/v1/traces",
    "OTEL_AWS_APPLICATION_SIGNALS_EXPORTER_ENDPOINT": (
        r"http://(localhost|127\.0\.0\.1):4316/v1/metrics"
    ),
    "OTEL_TRACES_SAMPLER_ARG": r"endpoint=http://(localhost|127\.0\.0\.1):2000",
}


def venv(expect: dict[str, Any], program: str) -> str:
    return f"{expect['app_dir']}/venv/bin/{program}"


def test_app_user_exists_without_a_login_shell(host: Any, expect: dict[str, Any]) -> None:
    user = host.user(expect["app_user"])
    assert user.exists
    assert user.shell in NOLOGIN_SHELLS


def test_venv_python_is_at_least_3_10(host: Any, expect: dict[str, Any]) -> None:
    version = host.check_output(
        "%s -c %s", venv(expect, "python"), "import sys; print('%d.%d' % sys.version_info[:2])"
    )
    assert tuple(int(part) for part in version.split(".")) >= (3, 10)


def test_distro_is_installed_at_the_pinned_version(host: Any, expect: dict[str, Any]) -> None:
    # The dist-info pip would read, read by the venv's own Python: `pip list` takes
    # ~12 s to start under TCG, this ~1 s.
    code = "import importlib.metadata as m; print(m.version('aws-opentelemetry-distro'))"
    result = host.run("%s -c %s", venv(expect, "python"), code)
    assert result.rc == 0, result.stderr  # PackageNotFoundError: not installed
    assert result.stdout.strip() == expect["distro_version"]


def test_app_service_runs_as_the_app_user(host: Any, expect: dict[str, Any]) -> None:
    service = host.service(APP_UNIT)
    assert service.is_enabled
    assert service.is_running
    status = host.check_output("sudo cat /proc/%s/status", str(main_pid(host, APP_UNIT)))
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids, "no Uid line in /proc/PID/status"
    app_uid = host.user(expect["app_user"]).uid
    assert (int(uids.group(1)), int(uids.group(2))) == (app_uid, app_uid)


def assert_application_signals_variables(variables: dict[str, str]) -> None:
    for name, value in FIXED_OTEL.items():
        assert variables.get(name) == value, name
    for name, pattern in AGENT_ENDPOINTS.items():
        assert re.fullmatch(pattern, variables.get(name, "")), f"{name}={variables.get(name)}"


def test_unit_sets_the_otel_variables_application_signals_needs(host: Any) -> None:
    assert_application_signals_variables(unit_variables(host, APP_UNIT))


def test_running_app_has_that_environment_and_the_launch_time_service(
    host: Any, expect: dict[str, Any]
) -> None:
    # What the process got: launch.env (an EnvironmentFile) could override the unit's.
    environment = process_environment(host, main_pid(host, APP_UNIT))
    assert_application_signals_variables(environment)
    assert environment.get("OTEL_RESOURCE_ATTRIBUTES") == (
        f"service.name={expect['service_name']},"
        f"deployment.environment={expect['deployment_environment']},"
        f"aws.log.group.names={expect['log_group']}"
    )


def app_workers(expect: dict[str, Any]) -> int:
    """`app.workers` of the image's config (older expect files lack it: one worker)."""
    return int(expect.get("app_workers", 1))


def test_app_runs_one_uvicorn_worker_without_reload(host: Any, expect: dict[str, Any]) -> None:
    if app_workers(expect) > 1:
        pytest.skip("app.workers > 1: gunicorn runs the workers (checked below)")
    cmdline = host.check_output(
        "sudo cat /proc/%s/cmdline | tr '\\0' ' '", str(main_pid(host, APP_UNIT))
    ).split()
    assert any(part.endswith("/uvicorn") for part in cmdline), cmdline
    assert "--reload" not in cmdline
    assert cmdline[cmdline.index("--workers") + 1] == "1"
    # One process in the unit: no reloader or worker supervisor forked beside it.
    assert len(unit_processes(host, APP_UNIT)) == 1


def test_app_runs_gunicorn_with_the_configured_uvicorn_workers(
    host: Any, expect: dict[str, Any]
) -> None:
    workers = app_workers(expect)
    if workers == 1:
        pytest.skip("app.workers is 1: uvicorn alone (checked above)")
    master = main_pid(host, APP_UNIT)
    cmdline = host.check_output("sudo cat /proc/%s/cmdline | tr '\\0' ' '", str(master)).split()
    assert any(part.endswith("/gunicorn") for part in cmdline), cmdline
    assert cmdline[cmdline.index("--workers") + 1] == str(workers)
    assert cmdline[cmdline.index("--worker-class") + 1] == "uvicorn_worker.UvicornWorker"
    # The master and one process per worker, nothing else; the distro defers to them.
    assert len(unit_processes(host, APP_UNIT)) == workers + 1
    environment = process_environment(host, master)
    assert environment.get("OTEL_AWS_PYTHON_DEFER_TO_WORKERS_ENABLED") == "true"


def test_health_answers_200(host: Any, expect: dict[str, Any]) -> None:
    status, body = http_get(host, f"http://127.0.0.1:{expect['app_port']}/health")
    assert status == 200, body


def test_app_unit_exposure_is_within_the_ceiling(host: Any, expect: dict[str, Any]) -> None:
    report = host.check_output("sudo systemd-analyze security --no-pager %s.service", APP_UNIT)
    match = re.search(rf"Overall exposure level for {APP_UNIT}\.service: ([0-9.]+)", report)
    assert match, report[-500:]
    assert float(match.group(1)) <= float(expect["max_exposure"])
