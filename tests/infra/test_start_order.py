"""Start order: the backend app starts only once the CloudWatch agent answers on its OTLP
(4316) and sampling (2000) ports. The agent is stopped, the app restarted: the app must
stay in its start-up wait, then start once the agent is back, and say so in its log.
The app is restarted without its dependencies: its unit wants the agent, so a plain
restart would start the agent again.

This module restarts both units; test_telemetry.py (which runs after it) then proves the
restarted app still reaches the agent.
"""

from __future__ import annotations

from typing import Any

from guest import http_get, listens, poll, sudo_text

ROLES = {"backend"}

APP_UNIT = "fastapi-otel"
AGENT_UNIT = "amazon-cloudwatch-agent"
AGENT_PORTS = (4316, 2000)
# Generous: TCG guests are slow; the wait's own bound is otel.agent_wait_timeout_s.
STATE_TIMEOUT_S = 60
# The agent has answered since boot on a sound image; one that never listens (no
# Application Signals in its config) fails here at once, not after STATE_TIMEOUT_S.
AGENT_UP_TIMEOUT_S = 20
WAITED_LINE = "the CloudWatch agent answers on localhost:4316, localhost:2000 after"
# wait-for-agent prints to the unit's stdout, which systemd appends to the app's log.
APP_LOG = "/var/log/bakery/fastapi-otel.log"


def unit_state(host: Any, unit: str) -> str:
    """`ActiveState/SubState` of a unit, e.g. `activating/start-pre`."""
    output = host.check_output("systemctl show -p ActiveState -p SubState --value %s", unit)
    return "/".join(output.split())


def test_app_waits_for_the_agent_then_starts(host: Any, expect: dict[str, Any]) -> None:
    agent_up = poll(lambda: all(listens(host, port) for port in AGENT_PORTS), AGENT_UP_TIMEOUT_S, 2)
    assert agent_up, (
        f"the agent does not answer on ports {AGENT_PORTS} before the test, so the app "
        "never finishes waiting for it: is Application Signals on in the agent config "
        "(test_agent.py)?"
    )
    waits_logged = sudo_text(host, APP_LOG).count(WAITED_LINE)
    host.check_output("sudo systemctl stop %s", AGENT_UNIT)
    try:
        assert poll(lambda: not any(listens(host, port) for port in AGENT_PORTS), 30), (
            "the agent's ports still answer after it stopped"
        )
        # The app alone: its unit wants the agent, so a plain restart starts the agent
        # too, and a quick agent ends the wait before it is seen.
        host.check_output(
            "sudo systemctl restart --no-block --job-mode=ignore-dependencies %s", APP_UNIT
        )
        waiting = poll(lambda: unit_state(host, APP_UNIT) == "activating/start-pre", 30, 1)
        assert waiting, f"{APP_UNIT} is {unit_state(host, APP_UNIT)}, not waiting in start-pre"
        # Still waiting a moment later, and the app itself is not up.
        assert unit_state(host, APP_UNIT) == "activating/start-pre"
        assert http_get(host, f"http://127.0.0.1:{expect['app_port']}/health")[0] == 0
    finally:
        host.check_output("sudo systemctl start %s", AGENT_UNIT)

    running = poll(lambda: unit_state(host, APP_UNIT) == "active/running", STATE_TIMEOUT_S, 1)
    assert running, f"{APP_UNIT} is {unit_state(host, APP_UNIT)} after the agent came back"
    health = poll(
        lambda: http_get(host, f"http://127.0.0.1:{expect['app_port']}/health")[0] == 200,
        STATE_TIMEOUT_S,
    )
    assert health, "the restarted app does not answer /health"
    # The restart's wait, logged once it ended (an earlier start logged its own).
    assert sudo_text(host, APP_LOG).count(WAITED_LINE) == waits_logged + 1
