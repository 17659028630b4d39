"""What bakery's boot-time scripts share: the instance metadata service (IMDSv2), the
database password from the launch settings (DB_PASSWORD, or DB_PASSWORD_SSM_PARAMETER
read with the aws CLI) and writing values into systemd environment files.

The scripts beside this module import it. It runs with the image's /usr/bin/python3 (3.9
on Amazon Linux 2023): standard library only. Nothing here prints a password.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

IMDS_ENDPOINT = "http://169.254.169.254"
# Off EC2 nothing answers; waiting longer would only delay every boot there.
IMDS_TIMEOUT_S = 2.0
SSM_TIMEOUT_S = 60


class LaunchSettingsError(Exception):
    """A launch setting is missing or unusable; the message says what to put where."""


def _imds_request(request: urllib.request.Request, timeout: float) -> str | None:
    # Link-local: a proxy from the environment must never see these calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.read().decode("ascii").strip() or None
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError):
        return None


# Where the firmware says who made the machine: EC2 says so on Nitro and Xen alike.
DMI_FILES = ("/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/bios_vendor",
             "/sys/class/dmi/id/product_uuid", "/sys/hypervisor/uuid")  # fmt: skip


def looks_like_ec2(files: tuple[str, ...] = DMI_FILES) -> bool:
    """True when the firmware identifies an EC2 instance.

    Asked before any metadata call, so that a VM elsewhere (a local bake, a laptop)
    never sends a packet towards 169.254.169.254 and never waits for it to time out.
    """
    for path in files:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read().strip().lower()
        except OSError:
            continue
        if "amazon" in text or text.startswith("ec2"):
            return True
    return False


def imds_token(endpoint: str = IMDS_ENDPOINT, timeout: float = IMDS_TIMEOUT_S) -> str | None:
    """An IMDSv2 session token; None off EC2 or when no metadata service answers in time."""
    if endpoint == IMDS_ENDPOINT and not looks_like_ec2():
        return None
    request = urllib.request.Request(
        f"{endpoint}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    return _imds_request(request, timeout)


def imds_region(endpoint: str = IMDS_ENDPOINT, timeout: float = IMDS_TIMEOUT_S) -> str | None:
    """The instance's region from IMDSv2, or None off EC2."""
    token = imds_token(endpoint, timeout)
    if token is None:
        return None
    request = urllib.request.Request(
        f"{endpoint}/latest/meta-data/placement/region",
        headers={"X-aws-ec2-metadata-token": token},
    )
    return _imds_request(request, timeout)


def resolve_db_password(
    environ: Mapping[str, str],
    which: Callable[[str], str | None] = shutil.which,
    region_lookup: Callable[[], str | None] = imds_region,
) -> tuple[str | None, str]:
    """(password, where it came from); (None, "none") when launch settings give none.

    DB_PASSWORD wins; else DB_PASSWORD_SSM_PARAMETER is read (with decryption) through
    the aws CLI with the instance role. Raises LaunchSettingsError when that cannot work.
    """
    password = environ.get("DB_PASSWORD", "")
    if password:
        return password, "DB_PASSWORD"
    parameter = environ.get("DB_PASSWORD_SSM_PARAMETER", "").strip()
    if not parameter:
        return None, "none"
    aws = which("aws")
    if aws is None:
        raise LaunchSettingsError(
            f"DB_PASSWORD_SSM_PARAMETER={parameter} is set, but the aws CLI is not installed "
            "on this image: put DB_PASSWORD in /etc/bakery/launch.env instead"
        )
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or region_lookup()
    if not region:
        raise LaunchSettingsError(
            "cannot tell the region to read DB_PASSWORD_SSM_PARAMETER from (no instance "
            "metadata service): set AWS_REGION in /etc/bakery/launch.env"
        )
    command = [
        aws,
        "ssm",
        "get-parameter",
        "--name",
        parameter,
        "--with-decryption",
        "--query",
        "Parameter.Value",
        "--output",
        "text",
        "--region",
        region,
    ]
    env = {**os.environ, "AWS_PAGER": ""}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SSM_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchSettingsError(f"reading SSM parameter {parameter} failed: {exc}") from exc
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise LaunchSettingsError(
            f"reading SSM parameter {parameter} in {region} failed: {reason} (does the "
            "instance role allow ssm:GetParameter and kms:Decrypt on it?)"
        )
    value = result.stdout[:-1] if result.stdout.endswith("\n") else result.stdout
    if not value:
        raise LaunchSettingsError(f"SSM parameter {parameter} is empty")
    return value, f"SSM parameter {parameter}"


def env_file_line(key: str, value: str) -> str:
    """KEY=value quoted so that systemd's EnvironmentFile= reads back exactly value."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise LaunchSettingsError(f"{key} contains a line break or NUL: not supported")
    if "'" not in value:
        # Single quotes: systemd takes everything up to the next quote literally.
        return f"{key}='{value}'\n"
    escaped = "".join("\\" + char if char in '"\\`$' else char for char in value)
    return f'{key}="{escaped}"\n'


def write_private_file(path: str, text: str) -> None:
    """Write a root-only (0600) file atomically, e.g. a secret under /run/bakery."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    scratch = f"{path}.tmp"
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(scratch, path)
