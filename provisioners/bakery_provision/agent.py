"""`install-agent`: the CloudWatch agent, verified before it is installed, and its config
translated at every boot rather than at bake time.

Translating during the bake would fix the build's region into the agent's TOML; instead
`bakery-agent-config.service` runs `amazon-cloudwatch-agent-ctl -a fetch-config` at each
boot, before the agent, in ec2 mode where the instance metadata service answers and
onPremise elsewhere. The agent is enabled but neither started nor configured here.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from bakery_provision.context import StepContext
from bakery_provision.download import fetch
from bakery_provision.errors import ProvisionError
from bakery_provision.files import install_copy, install_from_rootfs, write_text
from bakery_provision.services import enable, is_active, reload_units
from bakery_provision.signatures import check_gpg_signature, check_sha256
from bakery_provision.versions import version_at_least

AGENT_HOME = "/opt/aws/amazon-cloudwatch-agent"
VERSION_FILE = f"{AGENT_HOME}/bin/CWAGENT_VERSION"
AGENT_USER = "cwagent"
AGENT_UNIT = "amazon-cloudwatch-agent.service"
TRANSLATE_UNIT = "bakery-agent-config.service"
# Tells the first-boot translation where the agent JSON is (the path comes from the plan).
AGENT_ENV_FILE = "/etc/bakery/agent.env"
# Distros give log readers the adm group (nginx, MariaDB logs); the agent reads as cwagent.
LOG_READER_GROUP = "adm"
ROOTFS_FILES = (
    "/etc/systemd/system/bakery-agent-config.service",
    "/etc/systemd/system/amazon-cloudwatch-agent.service.d/10-bakery-agent-config.conf",
    "/usr/local/libexec/bakery/translate-agent-config",
    # The on-instance check of everything above (and of the role's services).
    "/usr/local/bin/appsignals-doctor",
)


def _on_image(ctx: StepContext, url: str) -> str:
    """file:// URLs name image paths (the stage's artifacts): resolve them under the root."""
    if url.startswith("file://"):
        return "file://" + str(ctx.path(urllib.parse.urlsplit(url).path))
    return url


def fetch_verified_package(ctx: StepContext) -> Path:
    """Download the agent package and refuse it unless it matches the plan's pins."""
    agent = ctx.plan.agent
    downloads = ctx.stage / "downloads"
    name = Path(urllib.parse.urlsplit(agent.url).path).name or "amazon-cloudwatch-agent"
    ctx.say(f"fetching {agent.url}")
    package = fetch(_on_image(ctx, agent.url), downloads / name)
    if agent.sha256:
        check_sha256(package, agent.sha256)
        ctx.say(f"sha256 of {name} matches the pin")
    if agent.signature_url and agent.gpg_key_url and agent.gpg_fingerprint:
        signature = fetch(_on_image(ctx, agent.signature_url), downloads / f"{name}.sig")
        key = fetch(_on_image(ctx, agent.gpg_key_url), downloads / "agent-signing-key.gpg")
        signer = check_gpg_signature(ctx.runner, package, signature, key, agent.gpg_fingerprint)
        ctx.say(f"GPG signature of {name} verified: signed by the pinned key {signer}")
    return package


def install_package(ctx: StepContext, package: Path) -> None:
    """Install the verified package unless this very version is installed already."""
    name, version = ctx.packages.local_package(package)
    if not ctx.plan.agent.is_test_double and not version_at_least(
        version, ctx.plan.agent.min_version
    ):
        raise ProvisionError(
            f"{package.name} is version {version}, older than {ctx.plan.agent.min_version}, the "
            "least with Application Signals: point agent.sources at a newer package"
        )
    installed = ctx.packages.installed_version(name)
    if installed == version:
        ctx.say(f"{name} {version} is already installed")
        return
    ctx.packages.install_local(package)
    ctx.say(f"installed {name} {version}" + (f" (replacing {installed})" if installed else ""))


def check_installed_version(ctx: StepContext) -> str:
    """The version the agent reports, held to the plan's minimum (not for the test double)."""
    version_file = ctx.path(VERSION_FILE)
    try:
        version = version_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvisionError(
            f"the agent package did not install {VERSION_FILE}: is it the CloudWatch agent?"
        ) from exc
    minimum = ctx.plan.agent.min_version
    if ctx.plan.agent.is_test_double:
        ctx.say(f"agent {version} is the TEST DOUBLE: minimum version {minimum} not checked")
    elif not version_at_least(version, minimum):
        raise ProvisionError(
            f"the installed agent is {version}, older than {minimum}, the least with "
            "Application Signals: point agent.sources at a newer package"
        )
    else:
        ctx.say(f"agent {version} >= {minimum}")
    return version


def let_agent_read_logs(ctx: StepContext) -> None:
    result = ctx.runner.run(["id", "-nG", AGENT_USER], check=False)
    if not result.ok:
        raise ProvisionError(
            f"the agent package created no {AGENT_USER} user, which its config runs as"
        )
    if LOG_READER_GROUP not in result.stdout.split():
        ctx.runner.run(["usermod", "-a", "-G", LOG_READER_GROUP, AGENT_USER])
        ctx.say(f"{AGENT_USER} joined group {LOG_READER_GROUP} to read the role's logs")


def install_first_boot_translation(ctx: StepContext) -> None:
    config_path = ctx.plan.agent.config_path
    install_copy(ctx, ctx.rootfs / config_path.lstrip("/"), config_path)
    write_text(
        ctx,
        AGENT_ENV_FILE,
        "# Written by the bake (install-agent): the agent config bakery-agent-config.service\n"
        "# translates at each boot.\n"
        f"AGENT_CONFIG={config_path}\n",
    )
    install_from_rootfs(ctx, ROOTFS_FILES)
    reload_units(ctx)
    enable(ctx, [TRANSLATE_UNIT, AGENT_UNIT])
    if is_active(ctx, AGENT_UNIT):
        # A package that starts the agent would run it with the build's identity.
        ctx.runner.run(["systemctl", "stop", AGENT_UNIT])
        ctx.say("stopped the agent: it first runs on the launched instance")


def run(ctx: StepContext) -> None:
    package = fetch_verified_package(ctx)
    install_package(ctx, package)
    check_installed_version(ctx)
    let_agent_read_logs(ctx)
    install_first_boot_translation(ctx)
