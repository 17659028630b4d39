"""appsignals-doctor against a fake instance root: a healthy backend passes, and each
broken part gives a FAIL row that names it and says how to fix it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from doctor_fakes import BOOT_TIME, PASSWORD, FakeInstance

from bakery.config import load_config
from bakery.packer import PackerVersion
from bakery.render import render_role


def diagnose(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    """Exit code and the --json document."""
    code = doctor.main(["--root", str(instance.root), "--json", *args], probes=instance.probes)
    return code, json.loads(capsys.readouterr().out)


def rows(document: dict[str, Any], status: str) -> dict[str, dict[str, str]]:
    return {row["check"]: row for row in document["checks"] if row["status"] == status}


def failures(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> dict[str, dict[str, str]]:
    """The FAIL rows of a run that must exit 1."""
    code, document = diagnose(doctor, instance, capsys)
    assert code == 1, document
    return rows(document, "FAIL")


def test_healthy_backend_passes_every_check(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    assert document["role"] == "backend" and document["ok"] is True
    assert [row["check"] for row in document["checks"] if row["status"] != "ok"] == []
    checks = {row["check"] for row in document["checks"]}
    assert {
        "agent service",
        "agent config translated",
        "agent region",
        "application_signals",
        "agent ports",
        "instance profile",
        "agent log",
        "fastapi-otel",
        "app /health",
        "launch settings",
    } <= checks


def test_health_is_asked_where_gunicorn_binds_with_several_workers(
    doctor: ModuleType,
    instance: FakeInstance,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    cfg = load_config("backend", "local", overrides=["app.workers=3", "app.port=8081"])
    stage = render_role(cfg, PackerVersion(1, 6, 6), tmp_path).stage
    instance.write(
        "etc/systemd/system/fastapi-otel.service",
        (stage / "rootfs/etc/systemd/system/fastapi-otel.service").read_text(),
    )
    instance.probes.http["http://127.0.0.1:8081/health"] = 503

    assert failures(doctor, instance, capsys)["app /health"]["detail"] == (
        "GET http://127.0.0.1:8081/health: 503"
    )


def test_table_lists_each_check_with_its_status(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    code = doctor.main(["--root", str(instance.root)], probes=instance.probes)
    out = capsys.readouterr().out

    assert code == 0
    assert out.splitlines()[1].split() == ["CHECK", "STATUS", "DETAIL"]
    assert any(line.startswith("agent service") and " ok " in line for line in out.splitlines())
    assert out.rstrip().endswith("result: ok")


def test_stopped_agent_fails_naming_the_agent(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.probes.unit_states["amazon-cloudwatch-agent.service"] = "inactive"

    failed = failures(doctor, instance, capsys)
    assert list(failed) == ["agent service"]
    assert "amazon-cloudwatch-agent.service is inactive" in failed["agent service"]["detail"]
    assert "systemctl restart amazon-cloudwatch-agent" in failed["agent service"]["fix"]


def test_missing_application_signals_fails_naming_it(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    config = instance.agent_config
    del config["logs"]["metrics_collected"]["application_signals"]
    instance.write(
        "opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.d/file_agent-config.json",
        json.dumps(config),
    )

    failed = failures(doctor, instance, capsys)
    assert list(failed) == ["application_signals"]
    assert "application_signals" in failed["application_signals"]["detail"]
    assert "logs.metrics_collected" in failed["application_signals"]["detail"]


def test_failed_app_service_fails_naming_fastapi_otel(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.probes.unit_states["fastapi-otel.service"] = "failed"
    instance.probes.http["http://127.0.0.1:8000/health"] = None

    failed = failures(doctor, instance, capsys)
    assert set(failed) == {"fastapi-otel", "app /health"}
    assert "fastapi-otel.service is failed" in failed["fastapi-otel"]["detail"]
    assert "journalctl -u fastapi-otel" in failed["fastapi-otel"]["fix"]
    assert "no answer" in failed["app /health"]["detail"]


def test_translation_from_an_earlier_boot_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.translate(boot_id="an-earlier-boot", region="us-east-1")

    failed = failures(doctor, instance, capsys)
    assert "earlier boot" in failed["agent config translated"]["detail"]


def test_real_agent_translation_is_judged_by_file_time(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.translate(boot_id=None, region="us-east-1")
    toml = instance.root / "opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.toml"

    assert diagnose(doctor, instance, capsys)[0] == 0
    before_boot = BOOT_TIME - 3600
    os.utime(toml, (before_boot, before_boot))
    failed = failures(doctor, instance, capsys)
    assert "before this boot" in failed["agent config translated"]["detail"]


def test_off_ec2_the_metadata_service_is_never_asked(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    assert instance.probes.metadata_asked == []
    checks = {row["check"]: row for row in document["checks"]}
    assert "onPremise" in checks["agent region"]["detail"]
    assert checks["instance profile"]["detail"] == "n/a (not on EC2)"


def test_on_ec2_a_config_translated_for_another_region_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.as_ec2(region="eu-west-1")

    detail = failures(doctor, instance, capsys)["agent region"]["detail"]
    assert "us-east-1" in detail and "eu-west-1" in detail


def test_on_ec2_without_an_instance_profile_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.as_ec2(region="us-east-1", instance_profile=False)

    failed = failures(doctor, instance, capsys)
    assert list(failed) == ["instance profile"]
    assert "CloudWatchAgentServerPolicy" in failed["instance profile"]["fix"]


def test_a_port_nobody_listens_on_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.listen(2000, 4315, 8000)

    assert failures(doctor, instance, capsys)["agent ports"]["detail"] == "not listening: 4316"


def test_credential_errors_in_the_agent_log_fail(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.write(
        "opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log",
        "2024-01-01T00:00:00Z E! cloudwatch: code: AccessDeniedException, message: denied\n",
    )

    assert "1 error line" in failures(doctor, instance, capsys)["agent log"]["detail"]


def test_other_agent_log_errors_only_warn(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.write(
        "opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log",
        "2024-01-01T00:00:00Z E! request timed out\n",
    )

    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    assert "agent log" in rows(document, "warn")


def test_without_launch_settings_the_defaults_are_a_warning(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.remove("etc/bakery/launch.env")

    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    assert "defaults are in use" in rows(document, "warn")["launch settings"]["detail"]


def test_a_bad_launch_setting_fails_and_the_password_is_never_shown(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    launch = instance.root / "etc/bakery/launch.env"
    instance.write_launch_env(launch.read_text() + "SERVICE_NAME=a,b\n")

    code = doctor.main(["--root", str(instance.root)], probes=instance.probes)
    out = capsys.readouterr().out

    assert code == 1
    assert "SERVICE_NAME is not valid" in out
    assert PASSWORD not in out


def test_a_password_others_can_read_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    (instance.root / "etc/bakery/launch.env").chmod(0o644)

    assert "others can read it" in failures(doctor, instance, capsys)["launch settings"]["detail"]


def test_database_without_a_password_fails(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.remove("etc/systemd/system/fastapi-otel.service")
    instance.write("etc/systemd/system/bakery-database-init.service", "[Service]\n")
    instance.write_launch_env("DB_NAME=appdb\nDB_USER=app\nLOG_GROUP_NAME=/aws/ec2/db\n")

    code, document = diagnose(doctor, instance, capsys)

    assert document["role"] == "database"
    assert code == 1
    assert "no app database or user" in rows(document, "FAIL")["launch settings"]["detail"]
    checks = {row["check"] for row in document["checks"]}
    assert {"mariadb", "bakery-database-init"} <= checks
    assert "agent ports" not in checks and "application_signals" not in checks


def test_role_option_overrides_the_installed_units(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.write_launch_env("BACKEND_URL=http://10.0.1.20:8000\nLOG_GROUP_NAME=/aws/fe\n")

    code, document = diagnose(doctor, instance, capsys, "--role", "frontend")

    assert code == 0
    assert document["role"] == "frontend"
    assert {"nginx", "bakery-frontend-config"} <= {row["check"] for row in document["checks"]}


def test_no_role_to_be_found_is_a_usage_error(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    instance.remove("etc/systemd/system/fastapi-otel.service")

    code = doctor.main(["--root", str(instance.root)], probes=instance.probes)

    assert code == 2
    assert "--role" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("shown", "state"),
    [
        ("ActiveState=active\nSubState=running\nNRestarts=0\n", "active"),
        ("ActiveState=failed\nSubState=failed\nNRestarts=5\n", "failed"),
        (
            "ActiveState=activating\nSubState=auto-restart\nNRestarts=3\n",
            "failing and restarting (3 restarts so far)",
        ),
        ("", "unknown"),
    ],
)
def test_unit_state_calls_a_crash_loop_what_it_is(
    doctor: ModuleType, monkeypatch: pytest.MonkeyPatch, shown: str, state: str
) -> None:
    """`Restart=always` keeps a broken app `activating` forever; the row must not read
    like "nearly up". systemctl's answer is given here, as `systemctl show` prints it."""
    asked: list[list[str]] = []

    def systemctl_show(argv: list[str], **_: Any) -> Any:
        asked.append(argv)
        return doctor.subprocess.CompletedProcess(argv, 0, stdout=shown, stderr="")

    monkeypatch.setattr(doctor.subprocess, "run", systemctl_show)
    assert doctor.SystemProbes().unit_state("fastapi-otel.service") == state
    assert asked[0][:2] == ["systemctl", "show"] and asked[0][-1] == "fastapi-otel.service"


def _add_to_launch_env(instance: FakeInstance, lines: str) -> None:
    launch = instance.root / "etc/bakery/launch.env"
    instance.write_launch_env(launch.read_text() + lines)


def test_otel_tuning_in_launch_env_is_fine_and_named(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same value as the unit's is no override either.
    _add_to_launch_env(instance, "OTEL_METRIC_EXPORT_INTERVAL=5000\nOTEL_TRACES_SAMPLER=xray\n")

    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    otel = rows(document, "ok")["OTEL settings"]
    assert otel["detail"].endswith("tuned by /etc/bakery/launch.env: OTEL_METRIC_EXPORT_INTERVAL")


def test_otel_override_of_the_agent_wiring_fails_naming_it(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_to_launch_env(
        instance, "OTEL_TRACES_SAMPLER=always_on\nOTEL_AWS_APPLICATION_SIGNALS_ENABLED=false\n"
    )

    failed = failures(doctor, instance, capsys)
    assert list(failed) == ["OTEL settings"]
    assert (
        "OTEL_AWS_APPLICATION_SIGNALS_ENABLED, OTEL_TRACES_SAMPLER"
        in failed["OTEL settings"]["detail"]
    )
    assert "systemctl restart fastapi-otel" in failed["OTEL settings"]["fix"]


def test_otel_resource_attributes_in_launch_env_warn_that_they_are_ignored(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_to_launch_env(instance, "OTEL_RESOURCE_ATTRIBUTES=service.name=other\n")

    code, document = diagnose(doctor, instance, capsys)

    assert code == 0
    warned = rows(document, "warn")
    assert list(warned) == ["OTEL settings"]
    assert "SERVICE_NAME and DEPLOYMENT_ENVIRONMENT" in warned["OTEL settings"]["fix"]
