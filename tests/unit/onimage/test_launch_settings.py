"""launch_settings.py, the module the boot-time programs share (and the host's config
checks load): instance metadata, the database password, systemd env files, EC2 detection."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import launch_settings
import pytest
from program_fakes import SECRET, fake_imds, fake_program, read_systemd_env_line, silent_endpoint


@pytest.fixture
def imds() -> Iterator[str]:
    with fake_imds() as endpoint:
        yield endpoint


@pytest.fixture
def silent() -> Iterator[str]:
    with silent_endpoint() as endpoint:
        yield endpoint


def test_imds_token_and_region_with_imdsv2(imds: str) -> None:
    assert launch_settings.imds_token(imds) == "token-123"
    assert launch_settings.imds_region(imds) == "eu-central-1"


def test_no_imds_gives_none_when_the_endpoint_never_answers(silent: str) -> None:
    assert launch_settings.imds_token(silent, timeout=0.5) is None


@pytest.mark.parametrize("value", ["plain", "with space", SECRET, "back\\slash", "$HOME"])
def test_env_file_lines_read_back_exactly(value: str) -> None:
    assert read_systemd_env_line(launch_settings.env_file_line("DB_PASSWORD", value)) == (
        "DB_PASSWORD",
        value,
    )


def test_password_from_launch_env_wins() -> None:
    environ = {"DB_PASSWORD": "s3cret", "DB_PASSWORD_SSM_PARAMETER": "/x"}
    assert launch_settings.resolve_db_password(environ) == ("s3cret", "DB_PASSWORD")
    assert launch_settings.resolve_db_password({}) == (None, "none")


def test_password_from_ssm_through_the_aws_cli(tmp_path: Path) -> None:
    args = tmp_path / "aws-args"
    aws = fake_program(tmp_path / "aws", f'echo "$@" > {args}\nprintf "%s\\n" "from-ssm"\n')
    password, source = launch_settings.resolve_db_password(
        {"DB_PASSWORD_SSM_PARAMETER": "/bakery/db/password"},
        which=lambda name: str(aws),
        region_lookup=lambda: "eu-west-1",
    )
    assert (password, source) == ("from-ssm", "SSM parameter /bakery/db/password")
    assert args.read_text().split() == [
        "ssm",
        "get-parameter",
        "--name",
        "/bakery/db/password",
        "--with-decryption",
        "--query",
        "Parameter.Value",
        "--output",
        "text",
        "--region",
        "eu-west-1",
    ]


def test_ssm_without_the_aws_cli_says_what_to_do() -> None:
    with pytest.raises(launch_settings.LaunchSettingsError, match="aws CLI is not installed"):
        launch_settings.resolve_db_password(
            {"DB_PASSWORD_SSM_PARAMETER": "/x"}, which=lambda name: None
        )


def test_ssm_failure_is_reported(tmp_path: Path) -> None:
    aws = fake_program(tmp_path / "aws", 'echo "AccessDeniedException: no" >&2\nexit 254\n')
    with pytest.raises(launch_settings.LaunchSettingsError, match="AccessDeniedException"):
        launch_settings.resolve_db_password(
            {"DB_PASSWORD_SSM_PARAMETER": "/x", "AWS_REGION": "us-east-1"},
            which=lambda name: str(aws),
        )


def test_private_files_are_written_0600(tmp_path: Path) -> None:
    target = tmp_path / "run" / "secret.env"
    launch_settings.write_private_file(str(target), "X=1\n")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_no_metadata_call_leaves_a_machine_whose_firmware_is_not_ec2(tmp_path: Path) -> None:
    vendor = tmp_path / "sys_vendor"
    vendor.write_text("QEMU\n")
    assert not launch_settings.looks_like_ec2((str(vendor), str(tmp_path / "absent")))
    vendor.write_text("Amazon EC2\n")
    assert launch_settings.looks_like_ec2((str(vendor),))
    xen_uuid = tmp_path / "uuid"
    xen_uuid.write_text("ec2e1916-9099-7caf-fd21-012345abcdef\n")
    assert launch_settings.looks_like_ec2((str(xen_uuid),))
