"""The CloudWatch agent: the right package, a valid config translated at this boot with
the launch-time log group, the service running, and (backend) Application Signals on."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
from guest import boot_id, boot_time, listens, mtime, sudo_exists, sudo_lines, sudo_text
from guest import version_at_least as at_least
from roles import ALL

ROLES = ALL

AGENT_HOME = "/opt/aws/amazon-cloudwatch-agent"
VERSION_FILE = f"{AGENT_HOME}/bin/CWAGENT_VERSION"
TOML = f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.toml"
YAML = f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.yaml"
CONFIG_DIR = f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.d"
VALIDATION_LOG = f"{AGENT_HOME}/logs/configuration-validation.log"
TEST_DOUBLE_MARK = "+bakery.testdouble"


def agent_config(host: Any) -> dict[str, Any]:
    """The JSON config the agent runs with: the one fetch-config stored."""
    [name] = sudo_lines(host, f"ls {CONFIG_DIR}")
    return dict(json.loads(sudo_text(host, f"{CONFIG_DIR}/{name}")))


def test_agent_package_is_installed_at_the_expected_version(
    host: Any, expect: dict[str, Any], record_testsuite_property: Any
) -> None:
    assert host.package("amazon-cloudwatch-agent").is_installed
    version = host.file(VERSION_FILE).content_string.strip()
    record_testsuite_property("agent_version", version)
    if expect["agent_package"] == "test-double":
        assert version.endswith(TEST_DOUBLE_MARK), f"{version} is not the test double"
        # Not a silent pass: the report says the minimum was not held against a real agent.
        warnings.warn(
            f"the agent is the TEST DOUBLE {version}: minimum version "
            f"{expect['agent_min_version']} not checked",
            stacklevel=1,
        )
    else:
        assert TEST_DOUBLE_MARK not in version, "the test double must never ship"
        assert at_least(version, expect["agent_min_version"]), (
            f"agent {version} is older than {expect['agent_min_version']}"
        )


def test_agent_config_passed_the_agents_own_validation(host: Any) -> None:
    # fetch-config writes the TOML and YAML only once the JSON passed validation.
    for translated in (TOML, YAML):
        assert host.run("sudo test -s %s", translated).rc == 0, f"{translated} is missing"
    assert len(sudo_lines(host, f"ls {CONFIG_DIR}")) == 1
    if sudo_exists(host, VALIDATION_LOG):
        assert "E!" not in sudo_text(host, VALIDATION_LOG)


def test_agent_config_was_translated_at_this_boot(host: Any, expect: dict[str, Any]) -> None:
    toml = sudo_text(host, TOML)
    if expect["agent_package"] == "test-double":
        recorded = re.search(r'^boot_id = "([^"]*)"', toml, re.M)
        assert recorded, f"{TOML} records no boot id"
        assert recorded.group(1) == boot_id(host)
    else:
        assert mtime(host, TOML) >= boot_time(host), f"{TOML} is older than this boot"


def test_agent_ships_logs_to_the_launch_time_log_group(host: Any, expect: dict[str, Any]) -> None:
    files = agent_config(host)["logs"]["logs_collected"]["files"]["collect_list"]
    assert files
    assert {entry["log_group_name"] for entry in files} == {expect["log_group"]}


@pytest.mark.roles("backend")
def test_backend_agent_config_turns_on_application_signals(host: Any) -> None:
    config = agent_config(host)
    assert "application_signals" in config["traces"]["traces_collected"]
    assert "application_signals" in config["logs"]["metrics_collected"]


def test_agent_service_is_enabled_and_running(host: Any) -> None:
    translation = host.service("bakery-agent-config")
    assert translation.is_enabled
    assert translation.systemd_properties["Result"] == "success"
    agent = host.service("amazon-cloudwatch-agent")
    assert agent.is_enabled
    assert agent.is_running


@pytest.mark.roles("backend")
@pytest.mark.parametrize("port", [4316, 2000], ids=["otlp-http-4316", "xray-sampling-2000"])
def test_backend_agent_listens_for_the_app(host: Any, port: int) -> None:
    assert listens(host, port)
