"""How a verification boot is launched, on every target: launch-time settings that are
deliberately not the baked defaults, delivered as standard cloud-init user data (EC2
user data on AWS, a NoCloud seed locally)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence

from bakery.config import BakeryConfig
from bakery.errors import OperationFailed


def launch_settings(cfg: BakeryConfig) -> dict[str, str]:
    """Launch-time settings for a verification boot: deliberately not the baked defaults,
    so the checks prove the values arrived at launch."""
    settings = {
        "SERVICE_NAME": f"{cfg.service.name}-verify",
        "DEPLOYMENT_ENVIRONMENT": "verify",
    }
    if cfg.role == "backend":
        # Export Application Signals metrics every 5 s instead of 60 s, so the telemetry
        # proof does not wait a minute; an SDK setting users may tune the same way.
        settings["OTEL_METRIC_EXPORT_INTERVAL"] = "5000"
    if cfg.role == "frontend":
        settings["BACKEND_URL"] = "http://127.0.0.1:8000"
    if cfg.role == "database":
        settings.update(
            DB_NAME=cfg.launch.db_name,
            DB_USER=cfg.launch.db_user,
            DB_PASSWORD=secrets.token_urlsafe(18),
        )
    return settings


def launch_env_file(settings: Mapping[str, str]) -> str:
    """KEY=VALUE lines for /etc/bakery/launch.env, quoted for systemd's EnvironmentFile."""
    lines = []
    for key, value in sorted(settings.items()):
        if not key.replace("_", "").isalnum() or "\n" in value:
            raise OperationFailed(f"launch setting {key!r} cannot go into an env file")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def user_data(
    public_key: str | None, settings: Mapping[str, str], bootcmd: Sequence[str] = ()
) -> str:
    """Standard cloud-init user data: the launch-time settings file, and the test key
    where no key pair provides it (on EC2 the launch's KeyName does)."""
    document: dict[str, object] = {
        "write_files": [
            {
                "path": "/etc/bakery/launch.env",
                "owner": "root:root",
                "permissions": "0600",
                "content": launch_env_file(settings),
            }
        ],
    }
    if public_key:
        document["ssh_authorized_keys"] = [public_key]
    if bootcmd:
        document["bootcmd"] = list(bootcmd)
    # JSON is YAML: no YAML emitter needed, and nothing in it can be misquoted.
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"
