"""Host-side pieces of the local bake and the gate that need no VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.errors import BadInput, OperationFailed
from bakery.local.build import _progress_line
from bakery.local.mirror import host_debian_mirror
from bakery.verify.launch import launch_env_file, launch_settings, user_data
from bakery.verify.suites import expectations, read_junit


def test_mirror_comes_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert host_debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"
    assert host_debian_mirror("bookworm-security", tmp_path) == "http://mirror.invalid/security"


def test_mirror_comes_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
    )
    assert host_debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"


def test_no_mirror_is_bad_input_saying_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"sources\.list"):
        host_debian_mirror("bookworm", tmp_path)


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


def test_junit_counts_and_names_failures(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="test_agent" name="test_active"/>'
        '<testcase classname="test_agent" name="test_ports"><failure message="x"/></testcase>'
        '<testcase classname="test_aws" name="test_imds"><skipped/></testcase>'
        '<testcase classname="test_backend" name="test_unit"><error message="y"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert read_junit(junit) == (1, 2, 1, ("test_agent.test_ports", "test_backend.test_unit"))


def test_progress_shows_packer_steps_and_provisioner_step_starts() -> None:
    assert _progress_line("==> qemu.image: Waiting for SSH to become available...") == (
        "packer: Waiting for SSH to become available..."
    )
    assert _progress_line("    qemu.image: seal: start (backend)") == "provisioner step: seal"
    assert _progress_line("==> qemu.image: Provisioning with shell script: /tmp/x") is None
    assert _progress_line("    qemu.image: seal: removed /etc/ssh/ssh_host_rsa_key") is None
