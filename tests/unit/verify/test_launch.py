"""bakery/verify/launch.py: launch-time settings and the user data that carries them."""

from __future__ import annotations

import json

import pytest

from bakery.config import load_config
from bakery.errors import OperationFailed
from bakery.verify.launch import launch_env_file, launch_settings, user_data
from bakery.verify.suites import expectations


def test_user_data_is_cloud_config_with_the_key_and_a_private_launch_file() -> None:
    text = user_data("ssh-ed25519 AAAA test", {"SERVICE_NAME": "checkout"})
    assert text.startswith("#cloud-config\n")
    document = json.loads(text.split("\n", 1)[1])
    assert document["ssh_authorized_keys"] == ["ssh-ed25519 AAAA test"]
    (launch,) = document["write_files"]
    assert launch["path"] == "/etc/bakery/launch.env" and launch["permissions"] == "0600"
    assert launch["content"] == 'SERVICE_NAME="checkout"\n'


def test_launch_env_quotes_values_and_refuses_newlines() -> None:
    assert launch_env_file({"DB_PASSWORD": 'a"b\\c'}) == 'DB_PASSWORD="a\\"b\\\\c"\n'
    with pytest.raises(OperationFailed):
        launch_env_file({"X": "two\nlines"})
    with pytest.raises(OperationFailed):
        launch_env_file({"BAD KEY": "x"})


def test_verification_settings_differ_from_baked_defaults() -> None:
    cfg = load_config("database", "local")
    settings = launch_settings(cfg)
    assert settings["SERVICE_NAME"] != cfg.service.name
    assert (
        settings["DB_PASSWORD"] and settings["DB_PASSWORD"] != launch_settings(cfg)["DB_PASSWORD"]
    )
    expected = expectations(cfg, settings)
    assert expected["db_password"] == settings["DB_PASSWORD"] and not expected["telemetry"]
    assert expectations(
        load_config("backend", "local"), launch_settings(load_config("backend", "local"))
    )["telemetry"]


def test_the_local_gate_audits_with_lynis_unless_the_minimum_is_set_to_0() -> None:
    # tests/infra/test_hardening.py skips the audit at 0.
    local = load_config("database", "local")
    assert expectations(local, launch_settings(local))["min_hardening_index"] == 80
    lowered = load_config("database", "local", overrides=["verify.min_hardening_index=0"])
    assert expectations(lowered, launch_settings(lowered))["min_hardening_index"] == 0
