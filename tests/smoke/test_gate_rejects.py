"""The gate rejects an image that breaks a promise: here, a backend whose agent config
has lost `application_signals` (what the original manual guide shipped).

The image is broken at launch, before the agent config is translated, by user data
that strips the setting from the baked file; then the very suites the gate runs are
run against it (all but the lynis audit, which this breakage does not touch). They
must fail, and fail naming the cause, doctor included; the start-order and telemetry
checks fail at once, naming the agent's silent ports, instead of waiting for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.local.vm import booted, end_stale_boots
from bakery.verify.launch import launch_settings
from bakery.verify.suites import read_junit, run_suites
from tests.smoke.conftest import SMOKE_WORK, _image, accelerator_for

pytestmark = pytest.mark.slow
AGENT_CONFIG = "/opt/aws/amazon-cloudwatch-agent/etc/bakery/agent-config.json"
# Runs in cloud-init.service; bakery-agent-config.service translates only after it.
DROP_APPLICATION_SIGNALS = (
    "python3 -c \"import json; p='" + AGENT_CONFIG + "'; c=json.load(open(p)); "
    "c.pop('traces', None); c['logs'].pop('metrics_collected', None); "
    "json.dump(c, open(p, 'w'))\""
)


def test_gate_rejects_a_backend_without_application_signals(tmp_path: Path) -> None:
    end_stale_boots(SMOKE_WORK)
    # No lynis audit here: it proves nothing about this breakage, takes ~5 min under TCG,
    # and the gate ran it on this very image in `invoke build`.
    cfg = load_config("backend", "local", overrides=["verify.min_hardening_index=0"])
    settings = launch_settings(cfg)
    junit = tmp_path / "junit.xml"
    with booted(
        _image("backend"),
        "broken-backend",
        settings,
        SMOKE_WORK,
        accelerator_for(cfg),
        cfg.local.cpus,
        cfg.local.memory_mb,
        cfg.verify.boot_timeout_s,
        user=cfg.ssh_username,
        bootcmd=[DROP_APPLICATION_SIGNALS],
    ) as vm:
        result = run_suites(vm.ssh_target, cfg, settings, junit)
    passed, failed, _, failures = read_junit(junit)
    output = junit.with_suffix(".txt").read_text()
    assert result.returncode != 0 and failed > 0, output[-2000:]
    failing = " ".join(failures)
    assert "test_backend_agent_config_turns_on_application_signals" in failing
    assert "test_doctor" in failing  # the on-instance doctor names it too
    # Start order and telemetry name the agent's silent ports at once, without waiting.
    assert "the agent does not answer on ports (4316, 2000)" in output, output[-2000:]
    assert "nothing listens on the agent's OTLP port 4316" in output, output[-2000:]
    assert passed > 0  # the rest of the image still keeps its promises
