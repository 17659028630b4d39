"""What bakery's boot-time scripts share: the instance metadata service (IMDSv2), the
database password from the launch settings (DB_PASSWORD, or DB_PASSWORD_SSM_PARAMETER
read with the aws CLI), the rules launch settings must meet (BACKEND_URL, DB_HOST) and
writing values into systemd environment files.

The scripts beside this module import it; the host's bakery.config loads this same file
to hold config defaults to the same rules, so the image never refuses what the config
accepted. It runs with the image's /usr/bin/python3 (3.9 on Amazon Linux 2023): standard
library only. Nothing here prints a password.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

IMDS_ENDPOINT = "http://169.254.169.254"
# Off EC2 nothing answers; waiting longer would only delay every boot there.
IMDS_TIMEOUT_S = 2.0
SSM_TIMEOUT_S = 60


class LaunchSettingsError(Exception):
    """A launch setting is missing or unusable; the message says what to put where."""


HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def checked_host(host: str) -> str:
    """`host` as nginx and the database client take it: an IPv4 or IPv6 address (bare,
    IPv6 shown in brackets) or a DNS name. No CIDR, port, path or anything else."""
    try:
        address = ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
    except ValueError:
        if not HOSTNAME.match(host):
            raise LaunchSettingsError(f"{host!r} is not a host name or an IP address") from None
        return host
    return f"[{address}]" if address.version == 6 else str(address)


def backend_upstream(url: str) -> str:
    """`host:port` for nginx's upstream, from BACKEND_URL: http://HOST[:PORT][/] only."""
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LaunchSettingsError(f"BACKEND_URL {url!r} is not a URL: {exc}") from exc
    if parts.scheme != "http":
        raise LaunchSettingsError(f"BACKEND_URL {url!r} must start with http://")
    if parts.username or parts.password:
        raise LaunchSettingsError(f"BACKEND_URL {url!r} must not carry a user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise LaunchSettingsError(
            f"BACKEND_URL {url!r} must have no path, query or fragment: /api/ maps to its root"
        )
    host = parts.hostname or ""
    if not host:
        raise LaunchSettingsError(f"BACKEND_URL {url!r} has no host")
    try:
        shown = checked_host(host)
    except LaunchSettingsError:
        raise LaunchSettingsError(f"BACKEND_URL {url!r}: {host!r} is not a host name") from None
    return f"{shown}:{port or 80}"


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
