"""`install-frontend`: nginx serving the static page and proxying `/api/` to the backend,
whose address comes at launch: `bakery-frontend-config.service` writes the upstream from
BACKEND_URL before nginx starts, at every boot."""

from __future__ import annotations

from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.files import copy_tree, install_from_rootfs, read_env_file, remove_path
from bakery_provision.packages import package_names
from bakery_provision.services import enable, reload_units

WEB_ROOT = "/var/www/bakery"
UPSTREAM_WRITER = "/usr/local/libexec/bakery/write-nginx-upstream"
UPSTREAM_FILE = "/etc/nginx/conf.d/bakery-upstream.conf"
CONFIG_UNIT = "bakery-frontend-config.service"
NGINX_UNIT = "nginx.service"
NGINX_LOGS = ("/var/log/nginx/access.log", "/var/log/nginx/error.log")
LOG_READER_GROUP = "adm"
ROOTFS_FILES = (
    "/etc/nginx/nginx.conf",
    "/etc/nginx/conf.d/bakery.conf",
    "/etc/logrotate.d/nginx",
    "/etc/systemd/system/bakery-frontend-config.service",
    "/etc/systemd/system/nginx.service.d/10-bakery-frontend-config.conf",
    UPSTREAM_WRITER,
    "/usr/local/libexec/bakery/write-rum-snippet",
)
# The distros' default sites; our nginx.conf includes neither folder's leftovers.
DISTRO_DEFAULT_SITES = (
    "/etc/nginx/sites-enabled/default",
    "/etc/nginx/sites-available/default",
    "/etc/nginx/conf.d/default.conf",
)


def write_bake_time_upstream(ctx: StepContext) -> None:
    """The upstream from the defaults, so that `nginx -t` passes now (rewritten at boot)."""
    defaults = read_env_file(ctx.path("/etc/bakery/defaults.env"))
    if "BACKEND_URL" not in defaults:
        raise ProvisionError("/etc/bakery/defaults.env has no BACKEND_URL: re-render the stage")
    ctx.runner.run(
        [str(ctx.path(UPSTREAM_WRITER)), "--output", str(ctx.path(UPSTREAM_FILE))],
        env={"BACKEND_URL": defaults["BACKEND_URL"]},
    )


def let_log_readers_in(ctx: StepContext) -> None:
    """The agent (in group adm) ships nginx's logs: make the existing ones group-readable."""
    existing = [str(ctx.path(log)) for log in NGINX_LOGS if ctx.path(log).is_file()]
    if existing:
        ctx.runner.run(["chgrp", LOG_READER_GROUP, *existing])
        ctx.runner.run(["chmod", "g+r", *existing])


def run(ctx: StepContext) -> None:
    installed = ctx.packages.install(package_names(ctx.plan.os, "nginx"))
    ctx.say("installed " + ", ".join(installed) if installed else "nginx is installed")
    copy_tree(ctx, ctx.artifacts / "app", WEB_ROOT)
    for site in DISTRO_DEFAULT_SITES:
        if remove_path(ctx, site):
            ctx.say(f"removed the distro's default site {site}")
    install_from_rootfs(ctx, ROOTFS_FILES)
    write_bake_time_upstream(ctx)
    let_log_readers_in(ctx)
    ctx.runner.run(["nginx", "-t", "-q"])
    ctx.say("nginx -t: configuration is valid")
    reload_units(ctx)
    enable(ctx, [CONFIG_UNIT, NGINX_UNIT])
