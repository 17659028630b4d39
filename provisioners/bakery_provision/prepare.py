"""`prepare`: a settled system ready to install from: cloud-init done, the bake CA trusted
(if the host build brought one), fresh package lists, the tools verification needs, and
the launch-time settings every role's units read."""

from __future__ import annotations

import time
from pathlib import Path

from bakery_provision.context import StepContext
from bakery_provision.files import install_copy, install_from_rootfs
from bakery_provision.packages import package_names

# Where each distro takes extra CAs from, and the command that rebuilds its bundle.
BAKE_CA_ANCHORS = {
    "debian12": (
        "/usr/local/share/ca-certificates/bakery-bake-ca.crt",
        ["update-ca-certificates"],
    ),
    "al2023": (
        "/etc/pki/ca-trust/source/anchors/bakery-bake-ca.pem",
        ["update-ca-trust", "extract"],
    ),
}
BAKE_CA_ARTIFACT = "ca/bake-ca.pem"

# The local base image keeps the package lists its build fetched at native speed on the
# host, and stamps when (bakery/local/base_image.py); under emulation `apt-get update`
# costs tens of seconds per role. Older lists are fetched again: the archive drops
# superseded packages, so stale lists would name files that are gone.
APT_LISTS_STAMP = "/var/lib/apt/lists/bakery-fetched-at"
APT_LISTS_FRESH_S = 12 * 3600

# Non-secret defaults of the launch settings, rendered from config; user data adds
# /etc/bakery/launch.env at launch. The module holds what the first-boot scripts share.
ROOTFS_FILES = (
    "/etc/bakery/defaults.env",
    "/usr/local/libexec/bakery/launch_settings.py",
)


def wait_for_cloud_init(ctx: StepContext) -> None:
    """cloud-init may still be installing or writing files when Packer connects."""
    if not ctx.runner.exists("cloud-init"):
        ctx.say("cloud-init is not installed: nothing to wait for")
        return
    ctx.say("waiting for cloud-init to finish")
    result = ctx.runner.run(["cloud-init", "status", "--wait"], check=False, timeout=1800)
    if result.returncode == 0:
        ctx.say("cloud-init is done")
    else:
        # 2 is "done with recoverable errors"; neither stops the bake, but say it.
        detail = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
        ctx.say(f"cloud-init finished with exit code {result.returncode}: {detail[0]}")


def https_sources(ctx: StepContext) -> list[str]:
    """What this bake fetches over HTTPS: the agent's URLs and the image's apt sources.
    The rest (file://, or http:// apt sources whose InRelease gpg checks) needs no CA."""
    agent = ctx.plan.agent
    urls = [agent.url, agent.signature_url, agent.gpg_key_url]
    found = [url for url in urls if url and url.startswith("https://")]
    apt = ctx.path("/etc/apt")
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*"))]:
        if path.is_file() and "https://" in path.read_text(encoding="utf-8", errors="replace"):
            found.append(_relative(ctx, path))
    return found


def _relative(ctx: StepContext, path: Path) -> str:
    return "/" + path.relative_to(ctx.root).as_posix()


def trust_bake_ca(ctx: StepContext) -> None:
    """Trust a corporate proxy's CA for the bake only; `seal` removes it again."""
    source = ctx.artifacts / BAKE_CA_ARTIFACT
    if not source.is_file():
        ctx.say("no bake CA in the artifacts: using the system trust store as it is")
        return
    if not https_sources(ctx):
        # Under emulation each update-ca-certificates run (here, and `--fresh` in seal)
        # costs tens of seconds; a CA nothing uses is not worth them.
        ctx.say("bake CA not trusted: this bake fetches nothing over HTTPS")
        return
    anchor, refresh = BAKE_CA_ANCHORS[ctx.plan.os]
    if install_copy(ctx, source, anchor):
        ctx.runner.run(refresh)
        ctx.say(f"trusting the bake CA until the image is sealed ({anchor})")
    else:
        ctx.say("bake CA already trusted")


def package_lists_age_s(ctx: StepContext) -> float | None:
    """Seconds since the base image's build fetched the apt lists; None when unknown."""
    try:
        fetched = float(ctx.path(APT_LISTS_STAMP).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    age = time.time() - fetched
    return age if age >= 0 else None  # a stamp from the future: a clock to distrust


def run(ctx: StepContext) -> None:
    wait_for_cloud_init(ctx)
    trust_bake_ca(ctx)
    age = package_lists_age_s(ctx)
    if age is not None and age < APT_LISTS_FRESH_S:
        ctx.say(f"package lists fetched {age / 60:.0f} min ago by the base image: kept")
    else:
        ctx.say("refreshing package lists")
        ctx.packages.refresh()
    if ctx.runner.exists("gpg"):
        ctx.say("gpg is present")
    else:
        installed = ctx.packages.install(package_names(ctx.plan.os, "gpg"))
        ctx.say("installed " + ", ".join(installed))
    install_from_rootfs(ctx, ROOTFS_FILES)
