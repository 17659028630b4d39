"""The X-Ray sampling rule of a role's service in one environment, from config.

The backend's distro samples with X-Ray's remote sampler (`OTEL_TRACES_SAMPLER=xray`):
it polls the rules through the agent's proxy on port 2000 (`GetSamplingRules`, with
the instance role's `xray:GetSamplingRules`/`GetSamplingTargets`) and applies the
matching rule of lowest priority number. Without a rule of bakery's, X-Ray's `Default`
rule (priority 10000) keeps 1 trace a second and 5 % of the rest.

bakery keeps one rule per service and environment, `<service>-<environment>`: the
config's `sampling.environments.<env>` rate (else `sampling.default`), matched on
ServiceName = `service.name` and every other field `*`. The distro matches a rule's
Attributes against *span* attributes, never the resource's `deployment.environment`
(its `_SamplingRuleApplier.matches`), so a rule cannot pick an environment: two
environments of one service in one account and region share whichever rule wins.
The result names every other rule that also matches the service and would win, so a
run shows such a clash instead of hiding it.

Without `apply` nothing is written; a run that finds the rule as config wants it
writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bakery.aws import tags
from bakery.aws.clients import aws_client, aws_errors
from bakery.aws.iam import APPLICATION_SIGNALS_ROLES
from bakery.aws.release import check_environment
from bakery.config import BakeryConfig
from bakery.errors import BadInput

# X-Ray's limit on a rule name.
MAX_RULE_NAME = 32
# X-Ray's own rule, which every account has and nobody can delete.
DEFAULT_RULE = "Default"
# The rule fields bakery sets, beside the name; everything but the service is `*`.
MATCH_ALL = "*"

Action = Literal["create", "update", "unchanged"]


@dataclass(frozen=True)
class SamplingChange:
    """What a run decided (and, with apply, did) for the service's rule."""

    rule: str
    action: Action
    applied: bool
    reservoir_per_second: int
    fixed_rate_percent: float
    detail: str
    # Other rules that match the service too and win over bakery's (lower priority).
    overridden_by: tuple[str, ...]


def traced(configs: Sequence[BakeryConfig]) -> list[BakeryConfig]:
    """The configs of roles whose app sends traces (the others need no rule)."""
    return [cfg for cfg in configs if cfg.role in APPLICATION_SIGNALS_ROLES]


def rule_name(cfg: BakeryConfig, environment: str) -> str:
    name = f"{cfg.service.name}-{environment}"
    if len(name) > MAX_RULE_NAME:
        raise BadInput(
            f"the sampling rule name {name!r} is longer than X-Ray's {MAX_RULE_NAME} "
            "characters: shorten service.name or the environment's name"
        )
    return name


def wanted_rule(cfg: BakeryConfig, environment: str) -> dict[str, Any]:
    """The rule as CreateSamplingRule takes it (X-Ray's rule format version 1)."""
    rate = cfg.sampling.rate_for(environment)
    return {
        "RuleName": rule_name(cfg, environment),
        "ResourceARN": MATCH_ALL,
        "Priority": cfg.sampling.priority,
        "FixedRate": rate.fixed_rate_percent / 100,
        "ReservoirSize": rate.reservoir_per_second,
        "ServiceName": cfg.service.name,
        "ServiceType": MATCH_ALL,
        "Host": MATCH_ALL,
        "HTTPMethod": MATCH_ALL,
        "URLPath": MATCH_ALL,
        "Version": 1,
    }


# What UpdateSamplingRule can change, and so what "unchanged" compares.
_UPDATABLE = (
    "ResourceARN", "Priority", "FixedRate", "ReservoirSize", "ServiceName", "ServiceType",
    "Host", "HTTPMethod", "URLPath",
)  # fmt: skip


def wildcard_match(pattern: str, text: str) -> bool:
    """X-Ray's rule matching: `*` any run of characters, `?` one, the rest literal."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, text) is not None


def _rules(client: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with aws_errors("reading the X-Ray sampling rules"):
        for page in client.get_paginator("get_sampling_rules").paginate():
            found += [record["SamplingRule"] for record in page.get("SamplingRuleRecords", [])]
    return found


def _is_bakerys(client: Any, rule: dict[str, Any]) -> bool:
    with aws_errors(f"reading the tags of sampling rule {rule.get('RuleName')}"):
        found = client.list_tags_for_resource(ResourceARN=rule["RuleARN"]).get("Tags", [])
    return tags.ROLE in tags.as_dict(found)


def _bakery_tags(cfg: BakeryConfig, environment: str) -> list[dict[str, str]]:
    values = {**cfg.aws.tags, tags.ROLE: cfg.role, tags.ENVIRONMENT: environment}
    return [{"Key": tag["Key"], "Value": tag["Value"]} for tag in tags.as_list(values)]


def apply_sampling(
    cfg: BakeryConfig,
    environment: str,
    *,
    apply: bool = False,
    client: Callable[[str], Any] | None = None,
) -> SamplingChange:
    """Bring the service's sampling rule in the environment to what config says (with
    `apply`), or only say what would change."""
    check_environment(environment)
    xray = (client or (lambda region: aws_client("xray", region)))(cfg.aws.region)
    wanted = wanted_rule(cfg, environment)
    name = wanted["RuleName"]
    rules = _rules(xray)
    existing = next((rule for rule in rules if rule.get("RuleName") == name), None)
    overridden_by = tuple(
        sorted(
            str(rule.get("RuleName"))
            for rule in rules
            if rule.get("RuleName") not in (name, DEFAULT_RULE)
            and int(rule.get("Priority", 10000)) <= wanted["Priority"]
            and wildcard_match(str(rule.get("ServiceName", "")), cfg.service.name)
        )
    )
    if existing is None:
        action: Action = "create"
        detail = "new"
    else:
        if not _is_bakerys(xray, existing):
            raise BadInput(
                f"the X-Ray sampling rule {name} in {cfg.aws.region} is not bakery's (no "
                f"{tags.ROLE} tag): delete it, or rename the service"
            )
        changed = [key for key in _UPDATABLE if existing.get(key) != wanted[key]]
        action = "update" if changed else "unchanged"
        detail = f"{', '.join(changed)} differ" if changed else ""
    if apply and action == "create":
        with aws_errors(f"creating sampling rule {name}"):
            xray.create_sampling_rule(SamplingRule=wanted, Tags=_bakery_tags(cfg, environment))
    elif apply and action == "update":
        update = {"RuleName": name, **{key: wanted[key] for key in _UPDATABLE}}
        with aws_errors(f"updating sampling rule {name}"):
            xray.update_sampling_rule(SamplingRuleUpdate=update)
    rate = cfg.sampling.rate_for(environment)
    return SamplingChange(
        name,
        action,
        apply and action != "unchanged",
        rate.reservoir_per_second,
        rate.fixed_rate_percent,
        detail,
        overridden_by,
    )
