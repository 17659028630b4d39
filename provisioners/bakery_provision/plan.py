"""The bake plan (`bake.json`, written by the host's renderer) as typed, checked data."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery_provision.errors import ProvisionError

ROLES = ("backend", "frontend", "database")
OS_FAMILIES = ("debian12", "al2023")
AGENT_PACKAGES = ("official", "test-double")


@dataclass(frozen=True)
class AgentPlan:
    """Where the CloudWatch agent package comes from and how it is verified."""

    package: str
    url: str
    signature_url: str | None
    gpg_key_url: str | None
    gpg_fingerprint: str | None
    sha256: str | None
    min_version: str
    config_path: str

    @property
    def is_test_double(self) -> bool:
        return self.package == "test-double"


@dataclass(frozen=True)
class AppPlan:
    """The application service: its system user, install folder and port."""

    user: str
    dir: str
    port: int


@dataclass(frozen=True)
class BakePlan:
    """Everything the steps need to know; nothing in it is secret."""

    role: str
    target: str
    os: str
    stage: str
    agent: AgentPlan
    app: AppPlan
    otel_distro_version: str
    steps: tuple[str, ...]
    # The `harden` step's settings, as config's `hardening` section (only it reads them).
    hardening: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BakePlan:
        try:
            agent = data["agent"]
            app = data["app"]
            plan = cls(
                role=str(data["role"]),
                target=str(data["target"]),
                os=str(data["os"]),
                stage=str(data["stage"]),
                agent=AgentPlan(
                    package=str(agent["package"]),
                    url=_required_text(agent, "url", "agent.url"),
                    signature_url=agent.get("signature_url"),
                    gpg_key_url=agent.get("gpg_key_url"),
                    gpg_fingerprint=agent.get("gpg_fingerprint"),
                    sha256=agent.get("sha256"),
                    min_version=str(agent["min_version"]),
                    config_path=str(agent["config_path"]),
                ),
                app=AppPlan(user=str(app["user"]), dir=str(app["dir"]), port=int(app["port"])),
                otel_distro_version=str(data["otel"]["distro_version"]),
                steps=tuple(str(step) for step in data["steps"]),
                hardening=dict(data.get("hardening") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(
                f"the bake plan lacks or mistypes {exc}: re-render it with the host's bakery"
            ) from exc
        plan.check()
        return plan

    def check(self) -> None:
        """Refuse a plan the steps could not carry out safely."""
        if self.role not in ROLES:
            raise ProvisionError(f"bake plan: unknown role {self.role!r} (one of {ROLES})")
        if self.os not in OS_FAMILIES:
            raise ProvisionError(f"bake plan: unknown os {self.os!r} (one of {OS_FAMILIES})")
        if self.agent.package not in AGENT_PACKAGES:
            raise ProvisionError(f"bake plan: unknown agent package {self.agent.package!r}")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", self.app.user):
            raise ProvisionError(f"bake plan: {self.app.user!r} is not a valid user name")
        if not re.fullmatch(r"/[A-Za-z0-9._/-]+", self.app.dir) or ".." in self.app.dir:
            raise ProvisionError(f"bake plan: app dir {self.app.dir!r} is not a plain path")
        signed = all((self.agent.signature_url, self.agent.gpg_key_url, self.agent.gpg_fingerprint))
        if not self.agent.sha256 and not signed:
            raise ProvisionError(
                "bake plan: the agent package has neither a sha256 nor GPG data to verify it"
            )


def _required_text(section: dict[str, Any], key: str, name: str) -> str:
    value = section[key]
    if not isinstance(value, str) or not value:
        raise ProvisionError(
            f"the bake plan has no {name}: render it with the build's artifacts (bakery build)"
        )
    return value


def load_plan(path: Path) -> BakePlan:
    """Read and check bake.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvisionError(f"cannot read the bake plan {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ProvisionError(f"the bake plan {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProvisionError(f"the bake plan {path} must be a JSON object")
    return BakePlan.from_dict(data)
