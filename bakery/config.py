"""Typed, layered configuration: the single source of truth for every image.

Layers, last one wins: `config/defaults.yaml` -> `config/roles/<role>.yaml` ->
`config/targets/<target>.yaml` -> the user's `--config FILE` -> `--set key.path=value`.
Every value has one home here; templates never invent defaults of their own.
Errors name the layer (file or `--set`) that supplied the bad key.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import platform
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bakery import ROLES, TARGETS
from bakery.errors import BadInput, ConfigError
from bakery.onimage import ONIMAGE

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
# The on-image launch-settings module (stdlib only): its rules for BACKEND_URL and
# DB_HOST are the ones config defaults must meet, so it is loaded here, not copied.
LAUNCH_SETTINGS_FILE = ONIMAGE / "launch_settings.py"
APP_REQUIREMENTS = REPO_ROOT / "app/backend/requirements.txt"


def _load_launch_settings() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bakery_launch_settings", LAUNCH_SETTINGS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch_settings = _load_launch_settings()

Role = Literal["backend", "frontend", "database"]
Target = Literal["local", "aws"]
OsFamily = Literal["debian12", "al2023"]
# The CPU architecture of an image, as EC2 names it (DescribeImages' `architecture`).
Arch = Literal["x86_64", "arm64"]
ARCHES: tuple[Arch, ...] = ("x86_64", "arm64")

# Values that end up in env files, systemd units and nginx config: no spaces, quotes,
# `$`, `%`, backslashes or newlines, so that no file we write can be broken by them.
SafeToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"),
]
LogGroupName = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_./#-]+$")
]
LinuxUser = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._/-]*$")]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$")]
AccountId = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s\"'$`\\]+$")]
VersionString = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$")]


def _normalise_fingerprint(value: str) -> str:
    compact = value.replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}", compact):
        raise ValueError("must be a 40-hex-digit OpenPGP fingerprint (spaces allowed)")
    return compact


def _scalar_as_text(value: Any) -> Any:
    """Tag values are text; YAML reads `cost: 42` as a number, which is still meant as text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _image_accepts(check: Callable[[str], object]) -> Callable[[str], str]:
    """A validator refusing what the image's own launch-settings `check` would refuse."""

    def validate(value: str) -> str:
        try:
            check(value)
        except launch_settings.LaunchSettingsError as exc:
            raise ValueError(f"the image would refuse it: {exc}") from None
        return value

    return validate


# Users the image already has (or that own its system files): the app must not run as
# one of them, nor take one over when the bake creates its user.
SYSTEM_USERS = frozenset(
    {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
     "proxy", "www-data", "backup", "list", "irc", "nobody", "admin", "ec2-user", "nginx",
     "mysql", "cwagent", "sshd", "messagebus", "systemd-network", "systemd-resolve",
     "systemd-timesync", "_apt", "adm", "shutdown", "halt", "operator", "ftp"}
)  # fmt: skip


def _not_a_system_user(value: str) -> str:
    if value in SYSTEM_USERS:
        raise ValueError(f"{value!r} is a system user: give the app a user of its own, e.g. app")
    return value


# Folders the OS owns: installing the app there (and chown-ing it) would break the image.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
               "/dev", "/proc", "/sys", "/run", "/tmp", "/root", "/var/lib", "/var/log",
               "/var/cache", "/var/run", "/var/tmp", "/var/spool", "/opt/aws")  # fmt: skip
SYSTEM_DIR_PARENTS = ("/", "/opt", "/var", "/home", "/srv", "/mnt", "/media")


def _app_dir_of_its_own(value: str) -> str:
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError(f"{value!r} is not a plain absolute path (no '..', '.', '//' or '/' end)")
    if value in SYSTEM_DIR_PARENTS or any(
        value == d or value.startswith(d + "/") for d in SYSTEM_DIRS
    ):
        raise ValueError(f"{value!r} is a system folder: use a folder of its own, e.g. /opt/app")
    return value


# AWS allows 50 tags per AMI; bakery's own bakery:* tags (about 20) take the rest.
MAX_USER_TAGS = 25
GO_TEMPLATE = re.compile(r"\{\{|\}\}")


def _tags_fit_aws(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_USER_TAGS:
        raise ValueError(
            f"{len(tags)} tags: at most {MAX_USER_TAGS} (AWS allows 50 per AMI and bakery's "
            "own bakery:* tags need the rest)"
        )
    for key in tags:
        if key.lower().startswith("aws:"):
            raise ValueError(f"tag {key!r}: the aws: prefix is reserved by AWS")
        if key.startswith("bakery:"):
            raise ValueError(f"tag {key!r}: the bakery: prefix is bakery's own")
    return tags


Fingerprint = Annotated[str, AfterValidator(_normalise_fingerprint)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ServiceSettings(Section):
    """How the role's service shows up in Application Signals (launch time can override)."""

    name: SafeToken = Field(description="service.name resource attribute")
    deployment_environment: SafeToken = Field(
        description="deployment.environment resource attribute (production, staging, dev)"
    )
    log_group: LogGroupName = Field(description="CloudWatch Logs group for the role's logs")


class AppSettings(Section):
    """The application service on the image."""

    port: int = Field(ge=1, le=65535)
    user: Annotated[LinuxUser, AfterValidator(_not_a_system_user)] = Field(
        description="system user the app runs as (no login shell); not root or a system user"
    )
    dir: Annotated[AbsolutePath, AfterValidator(_app_dir_of_its_own)] = Field(
        description="install folder of the app and its venv (not a system folder)"
    )
    workers: int = Field(
        ge=1,
        le=32,
        description="app processes: 1 runs uvicorn alone; more run gunicorn with that many "
        "uvicorn workers, each with its own OpenTelemetry SDK",
    )
    database_service_name: SafeToken = Field(
        description="the backend's database dependency in Application Signals (peer.service "
        "on its database client spans); launch.env's DATABASE_SERVICE_NAME overrides it"
    )


class AgentSource(Section):
    """Where the CloudWatch agent package comes from and how it is verified."""

    url: HttpUrl
    signature_url: HttpUrl | None = None
    gpg_key_url: HttpUrl | None = None
    gpg_fingerprint: Fingerprint | None = None
    sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _must_be_verifiable(self) -> AgentSource:
        gpg_parts = (self.signature_url, self.gpg_key_url, self.gpg_fingerprint)
        signed = all(part is not None for part in gpg_parts)
        if not signed and self.sha256 is None:
            raise ValueError(
                "the agent package must be verifiable: set signature_url, gpg_key_url and "
                "gpg_fingerprint, or sha256"
            )
        if any(part is not None for part in gpg_parts) and not signed:
            raise ValueError("signature_url, gpg_key_url and gpg_fingerprint go together")
        return self


class AgentSettings(Section):
    """The CloudWatch agent: which package, from where, and the lowest acceptable version."""

    package: Literal["official", "test-double"] = Field(
        description="official: the signed AWS package; test-double: tests/doubles (local only)"
    )
    min_version: VersionString
    sources: dict[OsFamily, dict[Arch, AgentSource]] = Field(
        description="per OS family, then per architecture: the package and how to verify it"
    )


class OtelSettings(Section):
    """The AWS Distro for OpenTelemetry (Python) and the app's OTEL unit variables."""

    distro_version: VersionString = Field(description="aws-opentelemetry-distro pin")
    otlp_endpoint: HttpUrl = Field(description="the agent's OTLP/HTTP endpoint (port 4316)")
    sampling_endpoint: HttpUrl = Field(description="the agent's X-Ray sampling proxy (2000)")
    runtime_metrics: bool = Field(
        description="the distro's Python runtime metrics (memory, GC, threads, CPU) beside "
        "the Application Signals metrics (OTEL_AWS_APPLICATION_SIGNALS_RUNTIME_ENABLED)"
    )
    agent_wait_timeout_s: int = Field(
        ge=1,
        le=600,
        description="how long the app's start waits for the agent to answer on the OTLP and "
        "sampling ports before it starts without it",
    )

    def agent_addresses(self) -> list[str]:
        """HOST:PORT of the agent's OTLP and sampling endpoints: what the app's start waits for."""
        addresses = []
        for url in (self.otlp_endpoint, self.sampling_endpoint):
            parts = urlsplit(url)
            default_port = 443 if parts.scheme == "https" else 80
            addresses.append(f"{parts.hostname}:{parts.port or default_port}")
        return addresses

    def unit_variables(self) -> dict[str, str]:
        """The fixed OTEL variables of the app's systemd unit (its `Environment=` lines);
        the service name and deployment environment come at launch."""
        return {
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_AWS_APPLICATION_SIGNALS_ENABLED": "true",
            "OTEL_AWS_APPLICATION_SIGNALS_RUNTIME_ENABLED": str(self.runtime_metrics).lower(),
            "OTEL_PYTHON_DISTRO": "aws_distro",
            "OTEL_PYTHON_CONFIGURATOR": "aws_configurator",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "xray",
            "OTEL_TRACES_SAMPLER_ARG": f"endpoint={self.sampling_endpoint}",
            "OTEL_AWS_APPLICATION_SIGNALS_EXPORTER_ENDPOINT": f"{self.otlp_endpoint}/v1/metrics",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{self.otlp_endpoint}/v1/traces",
        }


class LaunchDefaults(Section):
    """Non-secret defaults for launch-time settings, so an image also boots alone.

    User data overrides them in /etc/bakery/launch.env. There is deliberately no
    password here: secrets only ever arrive at launch.
    """

    backend_url: Annotated[
        HttpUrl, AfterValidator(_image_accepts(launch_settings.backend_upstream))
    ] = Field(description="http://HOST[:PORT] of the backend (no https, path or query)")
    db_host: Annotated[SafeToken, AfterValidator(_image_accepts(launch_settings.checked_host))] = (
        Field(description="the database host: an IP address or a DNS name")
    )
    db_port: int = Field(ge=1, le=65535)
    db_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    db_user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,32}$")]


class SourceImageFilter(Section):
    """How to find the newest source AMI of one OS family and architecture (the
    architecture filter is the key it sits under: `aws.source_images.<os>.<arch>`)."""

    owners: list[Annotated[str, StringConstraints(pattern=r"^([0-9]{12}|amazon|self)$")]] = Field(
        min_length=1
    )
    name_pattern: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\s\"'$`\\]+$")]


InstanceType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]
AMI_NAME_FIELDS = ("role", "os", "arch", "timestamp", "inputs_hash")


def _check_ami_name_pattern(value: str) -> str:
    try:
        value.format(**{name: "x" for name in AMI_NAME_FIELDS})
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"not a name pattern ({exc}): use {{role}}, {{os}}, {{arch}}, {{timestamp}} or "
            "{inputs_hash} and no other braces"
        ) from None
    fields = set(re.findall(r"\{([^{}]*)\}", value))
    unknown = fields - set(AMI_NAME_FIELDS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {list(AMI_NAME_FIELDS)}")
    if not fields & {"timestamp", "inputs_hash"}:
        raise ValueError(
            "needs a unique part, {timestamp} or {inputs_hash}, or every build collides"
        )
    if not re.fullmatch(r"[A-Za-z0-9()\[\] ./'@_{}-]{3,128}", value):
        raise ValueError("AMI names allow 3-128 letters, digits and ()[] ./'@_- only")
    return value


class AwsSettings(Section):
    """The AWS side: source AMI, build instance, the AMI's guarantees and its release."""

    region: Region
    source_images: dict[OsFamily, dict[Arch, SourceImageFilter]]
    instance_types: dict[Arch, InstanceType] = Field(
        description="the build (and verification) instance type per architecture; a type "
        "of the other architecture is refused before the build (DescribeInstanceTypes)"
    )
    subnet_id: Annotated[str, StringConstraints(pattern=r"^subnet-[0-9a-f]{8,17}$")] | None = None
    security_group_id: Annotated[str, StringConstraints(pattern=r"^sg-[0-9a-f]{8,17}$")] | None = (
        None
    )
    instance_profile: SafeToken | None = None
    volume_size_gb: int = Field(ge=4, le=1024)
    ami_name_pattern: Annotated[str, AfterValidator(_check_ami_name_pattern)]
    encrypt: bool = Field(description="encrypt the AMI's snapshots (never turn off for prod)")
    kms_key_id: SafeToken | None = None
    imdsv2_required: bool
    # EC2 refuses deprecation times more than 10 years ahead.
    deprecate_after_days: int | None = Field(default=None, ge=1, le=3650)
    copy_regions: list[Region] = Field(default_factory=list)
    share_accounts: list[AccountId] = Field(default_factory=list)
    share_org_arns: list[
        Annotated[str, StringConstraints(pattern=r"^arn:aws[a-z-]*:organizations::[0-9]{12}:")]
    ] = Field(default_factory=list)
    tags: Annotated[
        dict[
            Annotated[str, StringConstraints(min_length=1, max_length=128)],
            Annotated[str, BeforeValidator(_scalar_as_text), StringConstraints(max_length=256)],
        ],
        AfterValidator(_tags_fit_aws),
    ] = Field(default_factory=dict)
    retention: int = Field(ge=1, description="verified AMIs kept per role and region by prune")
    ssm_prefix: Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9_.-]+)+$")]

    @model_validator(mode="after")
    def _kms_needs_encryption(self) -> AwsSettings:
        if self.kms_key_id and not self.encrypt:
            raise ValueError("kms_key_id is set but encrypt is false")
        return self


class LocalSettings(Section):
    """The local target: bakes in an LXC container or Packer's qemu builder on this
    machine; the gate boots each image in QEMU."""

    debian_suite: Literal["bookworm"]
    cpus: int = Field(ge=1, le=64)
    memory_mb: int = Field(ge=512, le=65536)
    disk_size_gb: int = Field(ge=2, le=256)
    accelerator: Literal["auto", "kvm", "tcg"]
    bake_in: Literal["auto", "container", "vm"] = Field(
        description="where the provisioner steps run: an LXC system container on the "
        "host's kernel (native speed), or a QEMU VM through Packer (the reference); auto: "
        "a container for the host's own architecture, a VM for another"
    )
    cache_dir: str = Field(min_length=1, description="base images and wheelhouses (relative: repo)")
    extra_ca_bundle: str | None = Field(
        default=None,
        description="PEM file or folder of *.crt trusted during the bake only (corporate proxy)",
    )
    arm64_firmware: AbsolutePath = Field(
        description="the UEFI firmware an arm64 guest boots (Debian's qemu-efi-aarch64)"
    )
    emulation_slowdown: int = Field(
        ge=1,
        le=20,
        description="how many times longer the SSH and boot waits are for an image of "
        "another architecture than this host's, which QEMU emulates (arm64 on x86_64)",
    )


class LocalMachine:
    """How QEMU emulates one architecture: its program, the Debian package that has it,
    the machine type and the CPU model (None: QEMU's default for the machine)."""

    def __init__(self, program: str, package: str, machine: str, cpu: str | None) -> None:
        self.program, self.package, self.machine, self.cpu = program, package, machine, cpu


# arm64 runs on QEMU's generic `virt` board with UEFI; its default CPU is a 32-bit
# Cortex-A15, so the CPU model is a 64-bit one: cortex-a72 (ARMv8.0, Debian's arm64
# baseline). `max` emulates pointer authentication's QARMA5 on every call and return:
# the arm64 kernel booted to its root-mount panic in 9.2-9.4 s under TCG with `max`,
# 1.7-1.9 s with cortex-a72, 2.4 s with `max,pauth-impdef=on`, 2.5 s with
# neoverse-n1 (Graviton2's core) on this host (one vCPU, two runs of max and a72).
LOCAL_MACHINES: dict[str, LocalMachine] = {
    "x86_64": LocalMachine("qemu-system-x86_64", "qemu-system-x86", "pc", None),
    "arm64": LocalMachine("qemu-system-aarch64", "qemu-system-arm", "virt", "cortex-a72"),
}
ARM64_FIRMWARE_PACKAGE = "qemu-efi-aarch64"
# This host's architecture in bakery's names (`uname -m` says aarch64 for arm64).
HOST_ARCH = {"aarch64": "arm64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())


class SshSettings(Section):
    """How bakery logs in to the machines it bakes on and verifies, on every target."""

    usernames: dict[OsFamily, LinuxUser] = Field(
        description="the default login user of each OS family's images (Debian: admin)"
    )
    build_timeout_s: int = Field(
        ge=10, le=3600, description="how long Packer waits for SSH on the build machine"
    )


class VerifySettings(Section):
    """Thresholds the verification gate holds images to."""

    max_exposure: float = Field(ge=0, le=10, description="systemd-analyze security ceiling")
    min_hardening_index: int = Field(
        ge=0, le=100, description="lowest lynis hardening index the gate accepts (0: any)"
    )
    boot_timeout_s: int = Field(
        ge=10, le=3600, description="how long a verification boot may take to answer SSH"
    )


# A one-line reason, written as a comment above the setting it explains on the image.
Reason = Annotated[str, StringConstraints(min_length=8, max_length=200)]
SettingValue = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9@.,:_/+-]+( [A-Za-z0-9@.,:_/+-]+)*$")
]


class HardeningSetting(Section):
    """One hardening setting: its value and why the image has it."""

    value: SettingValue | int
    why: Reason


class HardeningSettings(Section):
    """The `harden` bake step's settings (docs/hardening.md); every one has a reason."""

    sshd: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]+$")], HardeningSetting
    ] = Field(description="sshd_config keywords, in a drop-in read before any other")
    sysctl: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_*-]+)+$")],
        HardeningSetting,
    ] = Field(description="kernel parameters, applied at every boot by systemd-sysctl")
    disabled_modules: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+$")], Reason] = (
        Field(description="kernel modules never loaded (blacklisted, install /bin/false)")
    )
    login_defs: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]+$")], HardeningSetting
    ] = Field(description="/etc/login.defs keys: new users' umask, password ageing, hashing")
    packages: dict[
        OsFamily, dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.+-]+$")], Reason]
    ] = Field(description="per OS family: small packages whose hardening is worth their cost")
    shell_timeout: HardeningSetting = Field(
        description="seconds an idle interactive shell lives (TMOUT in /etc/profile)"
    )
    banner: Annotated[str, StringConstraints(min_length=20, max_length=400)] = Field(
        description="the legal notice in /etc/issue and /etc/issue.net"
    )


# What Application Signals accepts as an SLO name; bakery's own names are
# `<service>-<environment>-<entry name>`, so an entry name stays short.
SLO_ENTRY_NAME = r"^[a-z0-9][a-z0-9-]{0,46}[a-z0-9]$"
# An operation as Application Signals names it for an HTTP server: `GET /users`,
# `DELETE /users/{user_id}` (the route template, not a concrete path).
OPERATION_NAME = r"^[A-Z]+ /[A-Za-z0-9_./{}:-]*$"
SNS_TOPIC_ARN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$"


class SloLatency(Section):
    """A latency SLI: the operation's percentile must stay at or under the threshold."""

    statistic: Literal["p50", "p90", "p95", "p99"]
    threshold_ms: float = Field(gt=0, le=3_600_000)


class BurnRateAlarm(Section):
    """A CloudWatch alarm on the SLO's BurnRate metric over one look-back window."""

    window_minutes: int = Field(ge=1, le=10080, description="the burn rate's look-back window")
    threshold: float = Field(
        gt=0, le=10_000, description="alarm above this burn rate (1: the budget lasts exactly)"
    )


class ServiceLevelObjective(Section):
    """One period-based SLO on an operation of the role's service (Application Signals)."""

    name: Annotated[str, StringConstraints(pattern=SLO_ENTRY_NAME)] = Field(
        description="short name, unique in the role; the SLO is <service>-<environment>-<name>"
    )
    operation: Annotated[str, StringConstraints(max_length=255, pattern=OPERATION_NAME)] = Field(
        description="the operation as Application Signals names it, e.g. 'GET /users'"
    )
    latency: SloLatency | None = Field(default=None, description="a latency SLI, or ...")
    availability_percent: float | None = Field(
        default=None, gt=0, le=100, description="... an availability SLI: good periods reach it"
    )
    period_seconds: int = Field(default=60, ge=60, le=900, description="one SLI period")
    interval_days: int = Field(ge=1, le=365, description="rolling interval the goal covers")
    attainment_goal: float = Field(gt=0, lt=100, description="percent of good periods")
    warning_threshold: float = Field(
        default=50.0, gt=0, lt=100, description="warn below this percent of budget left"
    )
    burn_rate_alarms: list[BurnRateAlarm] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _one_indicator(self) -> ServiceLevelObjective:
        if (self.latency is None) == (self.availability_percent is None):
            raise ValueError(
                f"SLO {self.name!r}: give exactly one of latency (statistic, threshold_ms) "
                "or availability_percent"
            )
        windows = [alarm.window_minutes for alarm in self.burn_rate_alarms]
        if len(set(windows)) != len(windows):
            raise ValueError(f"SLO {self.name!r}: burn_rate_alarms repeat a window_minutes")
        return self


class SloSettings(Section):
    """The role's service level objectives, created by `invoke slo` (dry run by default)."""

    alarm_actions: list[Annotated[str, StringConstraints(pattern=SNS_TOPIC_ARN)]] = Field(
        default_factory=list, description="SNS topics a burn-rate alarm notifies"
    )
    objectives: list[ServiceLevelObjective] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> SloSettings:
        names = [objective.name for objective in self.objectives]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"SLO name(s) {repeated} used twice: each SLO needs its own name")
        return self


class SamplingRate(Section):
    """An X-Ray sampling rate: a reservoir per second, then a share of the rest."""

    reservoir_per_second: int = Field(ge=0, le=100_000, description="traces per second first")
    fixed_rate_percent: float = Field(ge=0, le=100, description="then this % of the rest")


ReleaseEnvironment = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class SamplingSettings(Section):
    """The X-Ray sampling rule `invoke sampling` keeps for the role's service."""

    priority: int = Field(ge=1, le=9999, description="X-Ray rule priority (lower wins)")
    default: SamplingRate = Field(description="environments not listed (X-Ray's own: 1 + 5 %)")
    environments: dict[ReleaseEnvironment, SamplingRate] = Field(default_factory=dict)

    def rate_for(self, environment: str) -> SamplingRate:
        return self.environments.get(environment, self.default)


# Settings bakery applies to AWS after a release, not to an image: changing one must
# not change an image's inputs hash (render.json leaves them out).
RELEASE_ONLY_SETTINGS = frozenset({"slo", "sampling"})


class BakeryConfig(Section):
    """The merged configuration for one role on one target."""

    role: Role
    target: Target
    os: OsFamily
    arch: Arch = Field(description="the image's CPU architecture: x86_64 or arm64 (Graviton)")
    service: ServiceSettings
    app: AppSettings
    agent: AgentSettings
    otel: OtelSettings
    launch: LaunchDefaults
    aws: AwsSettings
    local: LocalSettings
    ssh: SshSettings
    verify: VerifySettings
    hardening: HardeningSettings
    slo: SloSettings
    sampling: SamplingSettings

    @model_validator(mode="after")
    def _fits_target(self) -> BakeryConfig:
        for key, table in (
            ("agent.sources", self.agent.sources),
            ("aws.source_images", self.aws.source_images),
        ):
            if self.os not in table:
                raise ValueError(f"{key} has no entry for os {self.os!r}")
            if self.arch not in table[self.os]:
                raise ValueError(
                    f"{key}.{self.os} has no entry for arch {self.arch!r}: add one, or "
                    f"choose an arch it has ({', '.join(sorted(table[self.os]))})"
                )
        if self.arch not in self.aws.instance_types:
            raise ValueError(f"aws.instance_types has no entry for arch {self.arch!r}")
        if self.os not in self.ssh.usernames:
            raise ValueError(f"ssh.usernames has no entry for os {self.os!r}")
        return self

    @property
    def agent_source(self) -> AgentSource:
        return self.agent.sources[self.os][self.arch]

    @property
    def source_image(self) -> SourceImageFilter:
        return self.aws.source_images[self.os][self.arch]

    @property
    def local_machine(self) -> LocalMachine:
        """How the local target's QEMU runs this image's architecture."""
        return LOCAL_MACHINES[self.arch]

    @property
    def local_wait_factor(self) -> int:
        """1 for an image of this host's architecture; local.emulation_slowdown for one
        QEMU must emulate, whose boots take that much longer under TCG."""
        return 1 if self.arch == HOST_ARCH else self.local.emulation_slowdown

    @property
    def instance_type(self) -> str:
        """The instance type that builds and verifies this role's image of this arch."""
        return self.aws.instance_types[self.arch]

    @property
    def ssh_username(self) -> str:
        """The login user of this role's images, for the build and for verification."""
        return self.ssh.usernames[self.os]


def app_distro_version(requirements: Path = APP_REQUIREMENTS) -> str | None:
    """The aws-opentelemetry-distro version the app's hashed requirements pin."""
    try:
        text = requirements.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^aws-opentelemetry-distro==([0-9][0-9.]*)", text, re.M)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------
# Loading

# Bounds of what a settings file may be: far above any real config, far below harm.
MAX_DEPTH = 32
MAX_EXPANDED_NODES = 20_000
MAX_LAYER_BYTES = 1024 * 1024
# Characters no setting may hold: control characters (newlines, NUL, escape sequences)
# break every line-based file bakery writes; `{{ }}` would be run by Packer's Go templates
# (tags, AMI names); lone surrogates cannot be written as UTF-8.
FORBIDDEN_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]|\{\{|\}\}")


class LayerProblem(Exception):
    """A settings file is not acceptable YAML for bakery; carries the line and key."""

    def __init__(self, problem: str, line: int | None = None, key: str = "") -> None:
        self.problem, self.line, self.key = problem, line, key
        super().__init__(problem)


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses nesting past MAX_DEPTH while composing (PyYAML's
    composer recurses: 20,000 levels would crash it)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LayerProblem(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_tree(root: yaml.Node) -> None:
    """Refuse duplicate keys (the later one would silently win) and aliases that expand
    past MAX_EXPANDED_NODES (an alias bomb), before anything is constructed."""
    sizes: dict[int, int] = {}

    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in in_progress:
            raise LayerProblem(
                "an alias refers to the value that holds it (a loop)", node.start_mark.line + 1
            )
        if id(node) not in sizes:
            in_progress.add(id(node))
            total = 1
            if isinstance(node, yaml.MappingNode):
                total += sum(size(k) + size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                total += sum(size(item) for item in node.value)
            sizes[id(node)] = min(total, MAX_EXPANDED_NODES + 1)
            in_progress.discard(id(node))
        return sizes[id(node)]

    if size(root) > MAX_EXPANDED_NODES:
        raise LayerProblem(
            f"expands to more than {MAX_EXPANDED_NODES} values (YAML aliases): write it out"
        )

    def walk(node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> None:
        if id(node) in seen:
            return
        seen = seen | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                here = (*path, key)
                if key in first and key_node.tag != "tag:yaml.org,2002:merge":
                    raise LayerProblem(
                        f"duplicate key (first at line {first[key]}): the later one would "
                        "silently replace it; keep one",
                        key_node.start_mark.line + 1,
                        ".".join(here),
                    )
                first.setdefault(key, key_node.start_mark.line + 1)
                walk(value_node, here, seen)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, str(index)), seen)

    walk(root, (), set())


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document with bakery's bounds; raises LayerProblem or yaml.YAMLError."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _forbidden_text(data: Any, path: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(key path, what is wrong) for the first string that holds forbidden text."""
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(data, Mapping):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    elif isinstance(data, str):
        found = FORBIDDEN_TEXT.search(data)
        if found:
            what = found.group()
            shown = repr(what) if what in ("{{", "}}") else f"U+{ord(what):04X}"
            return (
                ".".join(path),
                f"holds {shown}: control characters, lone surrogates and "
                "{{ }} (Packer templates) are not allowed in any setting",
            )
        return None
    for key, value in items:
        here = (*path, str(key))
        if isinstance(key, str):
            problem = _forbidden_text(key, here)
            if problem:
                return problem
        problem = _forbidden_text(value, here)
        if problem:
            return problem
    return None


class Layer:
    """One layer of settings and the name users know it by (a file path or `--set k`)."""

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self.name = name
        self.data = data


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_layer(path: Path, *, required: bool) -> Layer | None:
    """Read one YAML layer; a missing optional layer is None."""
    name = _display(path)
    if not path.exists():
        if required:
            raise ConfigError(name, "", "file not found: check the path given to --config")
        return None
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            # /dev/zero or a FIFO would be read forever
            raise ConfigError(name, "", "not a regular file: give a YAML file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_LAYER_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_LAYER_BYTES:
        raise ConfigError(name, "", f"larger than {MAX_LAYER_BYTES} bytes: not a settings file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            name,
            "",
            f"not UTF-8 text (byte {raw[exc.start]:#04x} at line {line}): save it as UTF-8",
        ) from None
    data = _parse_layer(name, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(name, "", "must be a mapping of settings at the top level")
    for injected in ("role", "target"):
        if injected in data:
            raise ConfigError(
                name, injected, f"is chosen on the command line (--{injected}), not in a file"
            )
    return Layer(name, data)


def _parse_layer(name: str, text: str, key: str = "") -> Any:
    # Merging mutates what it is given: each caller gets its own copy of the parse.
    return copy.deepcopy(_parse_layer_once(name, text, key))


# One validate or build loads each role with each target: the same few files, parsed
# once each (the bounded pure-Python loader costs ~20 ms per file).
@functools.lru_cache(maxsize=32)
def _parse_layer_once(name: str, text: str, key: str) -> Any:
    try:
        data = load_yaml_text(text)
    except LayerProblem as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise ConfigError(name, exc.key, f"{where}{exc.problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            name, "", f"invalid YAML at line {line}: character {exc.character!r} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(name, "", f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(name, "", f"nested deeper than {MAX_DEPTH} levels") from None
    problem = _forbidden_text(data)
    if problem:
        raise ConfigError(name, ".".join(p for p in (key, problem[0]) if p), problem[1])
    return data


def parse_override(assignment: str) -> Layer:
    """Turn `--set key.path=value` into a layer; the value is read as a YAML scalar/list."""
    label = f"--set {assignment}"
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(label, "", "expected KEY.PATH=VALUE, e.g. --set local.cpus=2")
    parts = key.strip().split(".")
    if any(not part for part in parts):
        raise ConfigError(label, key, "empty segment in the key path")
    _check_path_exists(label, parts)
    value = _parse_layer(f"--set {key}", raw, key) if raw.strip() else ""
    data: dict[str, Any] = {}
    cursor = data
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return Layer(f"--set {key}", data)


def _check_path_exists(label: str, parts: list[str]) -> None:
    """Reject `--set` paths that name no setting, listing what exists at that level."""
    node: Any = BakeryConfig
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, _DictOf):  # agent.sources.<os>.<arch>: any key, then its value
            node = node.value_type
        elif node is dict:  # aws.tags.<key>: any key, then a plain value
            node = None
        elif isinstance(node, type) and issubclass(node, BaseModel):
            if depth == 0 and part in ("role", "target"):
                raise ConfigError(label, here, f"is chosen with --{part}, not --set")
            fields = node.model_fields
            if part not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(label, here, f"no such setting (known here: {known})")
            node = _section_type(fields[part].annotation)
        else:
            raise ConfigError(label, here, "no such setting: its parent is a plain value")


class _DictOf:
    """A dict field whose values are sections or dicts of sections (e.g.
    agent.sources.<os>.<arch>): what one key below it holds."""

    def __init__(self, value_type: Any) -> None:
        self.value_type = value_type


def _section_type(annotation: Any) -> Any:
    """What a field holds, for walking `--set` paths: a model, `dict`, `_DictOf` or None."""
    if getattr(annotation, "__origin__", None) is dict:
        value_type = annotation.__args__[1]
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            return _DictOf(value_type)
        inner = _section_type(value_type)
        if isinstance(inner, _DictOf):
            return _DictOf(inner)
        return dict
    candidates: Iterable[Any] = getattr(annotation, "__args__", None) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def merge_layers(layers: Iterable[Layer]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Deep-merge layers (mappings merge, everything else replaces) and remember who set what."""
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}

    def merge(
        target: dict[str, Any], incoming: Mapping[str, Any], prefix: tuple[str, ...], name: str
    ) -> None:
        for key, value in incoming.items():
            path = (*prefix, str(key))
            origin[path] = name
            if isinstance(value, Mapping) and isinstance(target.get(key), dict):
                merge(target[key], value, path, name)
            elif isinstance(value, Mapping):
                target[key] = {}
                merge(target[key], value, path, name)
            else:
                target[key] = value

    for layer in layers:
        merge(merged, layer.data, (), layer.name)
    return merged, origin


def _blame(origin: Mapping[tuple[str, ...], str], loc: tuple[str, ...]) -> str:
    """The layer that set the deepest existing prefix of `loc`."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    return "config (merged)"


def load_config(
    role: str,
    target: str,
    user_file: Path | None = None,
    overrides: Iterable[str] = (),
    config_dir: Path = CONFIG_DIR,
) -> BakeryConfig:
    """Load the layered configuration for one role and target, or raise ConfigError."""
    if role not in ROLES:
        raise BadInput(f"--role {role}: unknown role; choose from {', '.join(ROLES)}")
    if target not in TARGETS:
        raise BadInput(f"--target {target}: unknown target; choose from {', '.join(TARGETS)}")
    layers = [
        read_layer(config_dir / "defaults.yaml", required=True),
        read_layer(config_dir / "roles" / f"{role}.yaml", required=False),
        read_layer(config_dir / "targets" / f"{target}.yaml", required=False),
    ]
    if user_file is not None:
        layers.append(read_layer(user_file, required=True))
    layers.extend(parse_override(item) for item in overrides)
    present = [layer for layer in layers if layer is not None]
    merged, origin = merge_layers(present)
    merged["role"], merged["target"] = role, target
    try:
        config = BakeryConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key: check the spelling against `invoke schema`"
        elif first["type"] == "missing":
            message = "required setting is missing"
        elif first["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif first["type"] == "string_pattern_mismatch":
            message = f"{first['input']!r} is not allowed here ({message})"
        return _raise_located(origin, loc, message, len(exc.errors()))
    pinned = app_distro_version()
    if pinned is not None and config.otel.distro_version != pinned:
        raise ConfigError(
            _blame(origin, ("otel", "distro_version")),
            "otel.distro_version",
            f"{config.otel.distro_version!r} differs from aws-opentelemetry-distro=={pinned} "
            "that app/backend/requirements.txt pins (the bake installs that file with "
            "--require-hashes and would fail): change both together",
        )
    if config.target == "aws" and config.agent.package == "test-double":
        raise ConfigError(
            _blame(origin, ("agent", "package")),
            "agent.package",
            "the CloudWatch agent test double never ships in an AWS image: use 'official'",
        )
    bundle = config.local.extra_ca_bundle
    if config.target == "local" and bundle and not Path(bundle).exists():
        raise ConfigError(
            _blame(origin, ("local", "extra_ca_bundle")),
            "local.extra_ca_bundle",
            f"{bundle} does not exist: point it at a PEM file or a folder of *.crt, or null",
        )
    if config.target == "local" and config.os == "al2023":
        raise ConfigError(
            _blame(origin, ("os",)),
            "os",
            "al2023 cannot be baked locally (its packages are not reachable from here): "
            "use os debian12 for --target local, or bake al2023 with --target aws",
        )
    return config


def _raise_located(
    origin: Mapping[tuple[str, ...], str], loc: tuple[str, ...], message: str, count: int
) -> BakeryConfig:
    more = f" (and {count - 1} more problem(s))" if count > 1 else ""
    raise ConfigError(_blame(origin, loc), ".".join(loc), message + more)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one config layer (a file in config/, a --config file): every
    key optional at every depth, since a layer sets only what it changes; unknown keys
    and wrong types are still errors."""
    schema = BakeryConfig.model_json_schema()
    schema["title"] = "bakery configuration layer"
    schema["properties"].pop("role", None)
    schema["properties"].pop("target", None)

    def drop_required(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("required", None)
            for value in node.values():
                drop_required(value)
        elif isinstance(node, list):
            for item in node:
                drop_required(item)

    drop_required(schema)
    return schema
