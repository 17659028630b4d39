"""Service level objectives from config: the role's `slo.objectives` as Application
Signals SLOs on its service in one environment, and a CloudWatch alarm per burn rate.

Each objective becomes one period-based SLO named `<service>-<environment>-<name>`
on the service's key attributes (Type `Service`, the service name, the environment
as the agent reports it: `deployment.environment`), with the objective's look-back
windows as the SLO's own `BurnRateConfigurations`; Application Signals then publishes
`BurnRate` (namespace `AWS/ApplicationSignals`, dimensions `SloName` and
`BurnRateWindowMinutes`), which the alarms watch.

Every run compares before it writes: an SLO is created when absent, updated when its
description (which carries a fingerprint of the wanted request) or its goal differs,
and left alone otherwise; alarms likewise. An SLO of that name whose description is not
bakery's is refused, never overwritten. What config no longer has is deleted: an SLO on
the service in the environment that is bakery's (its name, its description and its
`bakery:role` and `bakery:environment` tags say so) but no entry names, with its burn-rate
alarms, and a burn-rate alarm whose window left an entry; an SLO or alarm that is not
bakery's is never touched. Without `apply` nothing is written. Each SLO and alarm stands
alone (an SLO's alarms go before it), so a run cut off half-way is finished by the next.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import botocore.exceptions

from bakery.aws import tags
from bakery.aws.clients import aws_client, aws_errors, error_code
from bakery.aws.iam import APPLICATION_SIGNALS_ROLES
from bakery.aws.release import check_environment
from bakery.config import BakeryConfig, BurnRateAlarm, ServiceLevelObjective
from bakery.errors import BadInput

# Application Signals' own limit on an SLO name, and what it may hold.
MAX_SLO_NAME = 128
DESCRIPTION_PREFIX = "bakery: "
BURN_RATE_NAMESPACE = "AWS/ApplicationSignals"
BURN_RATE_METRIC = "BurnRate"
# One SLO report per call holds at most 50 SLOs (BatchGetServiceLevelObjectiveBudgetReport).
REPORT_BATCH = 50

Action = Literal["create", "update", "unchanged", "delete"]


@dataclass(frozen=True)
class SloClients:
    """The two APIs an SLO run uses (one region)."""

    application_signals: Any
    cloudwatch: Any


def slo_clients(region: str) -> SloClients:
    return SloClients(aws_client("application-signals", region), aws_client("cloudwatch", region))


@dataclass(frozen=True)
class SloChange:
    """What a run decided (and, with apply, did) for one SLO or one alarm."""

    kind: Literal["slo", "alarm"]
    name: str
    action: Action
    applied: bool
    detail: str


def slo_name(cfg: BakeryConfig, environment: str, objective: ServiceLevelObjective) -> str:
    """The SLO's name in Application Signals: unique per service and environment."""
    name = f"{cfg.service.name}-{environment}-{objective.name}"
    if len(name) > MAX_SLO_NAME or not name[-1].isalnum():
        raise BadInput(
            f"slo.objectives {objective.name}: the SLO name {name!r} is longer than "
            f"{MAX_SLO_NAME} characters: shorten the entry's name or service.name"
        )
    return name


def key_attributes(cfg: BakeryConfig, environment: str) -> dict[str, str]:
    """The service as Application Signals keys it (what ListServices returns)."""
    return {"Type": "Service", "Name": cfg.service.name, "Environment": environment}


def _indicator(
    cfg: BakeryConfig, environment: str, objective: ServiceLevelObjective
) -> dict[str, Any]:
    metric: dict[str, Any] = {
        "KeyAttributes": key_attributes(cfg, environment),
        "OperationName": objective.operation,
        "PeriodSeconds": objective.period_seconds,
    }
    if objective.latency is not None:
        metric |= {"MetricType": "LATENCY", "Statistic": objective.latency.statistic}
        threshold, comparison = objective.latency.threshold_ms, "LessThanOrEqualTo"
    else:
        assert objective.availability_percent is not None  # the config allows one of two
        metric |= {"MetricType": "AVAILABILITY"}
        threshold, comparison = objective.availability_percent, "GreaterThanOrEqualTo"
    return {
        "SliMetricConfig": metric,
        "MetricThreshold": float(threshold),
        "ComparisonOperator": comparison,
    }


def _goal(objective: ServiceLevelObjective) -> dict[str, Any]:
    return {
        "Interval": {
            "RollingInterval": {"DurationUnit": "DAY", "Duration": objective.interval_days}
        },
        "AttainmentGoal": float(objective.attainment_goal),
        "WarningThreshold": float(objective.warning_threshold),
    }


def _burn_rates(objective: ServiceLevelObjective) -> list[dict[str, int]]:
    windows = sorted(alarm.window_minutes for alarm in objective.burn_rate_alarms)
    return [{"LookBackWindowMinutes": window} for window in windows]


def slo_request(
    cfg: BakeryConfig, environment: str, objective: ServiceLevelObjective
) -> dict[str, Any]:
    """The parts of Create/UpdateServiceLevelObjective both take, description included:
    it ends in a fingerprint of the rest, so a changed objective shows as changed."""
    body = {
        "SliConfig": _indicator(cfg, environment, objective),
        "Goal": _goal(objective),
        "BurnRateConfigurations": _burn_rates(objective),
    }
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    what = "latency" if objective.latency is not None else "availability"
    description = (
        f"{DESCRIPTION_PREFIX}{what} of {objective.operation} on {cfg.service.name} in "
        f"{environment}, from config slo.objectives {objective.name} (spec {fingerprint})"
    )
    return {"Description": description[:1024], **body}


def _bakery_tags(cfg: BakeryConfig, environment: str) -> list[dict[str, str]]:
    values = {**cfg.aws.tags, tags.ROLE: cfg.role, tags.ENVIRONMENT: environment}
    return [{"Key": tag["Key"], "Value": tag["Value"]} for tag in tags.as_list(values)]


def _existing_slo(client: Any, name: str) -> dict[str, Any] | None:
    with aws_errors(f"reading SLO {name}"):
        try:
            response = client.get_service_level_objective(Id=name)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
    slo: dict[str, Any] = response["Slo"]
    return slo


def _slo_differs(existing: dict[str, Any], wanted: dict[str, Any]) -> str:
    """Why the SLO must be updated ('' when it need not)."""
    if existing.get("Description") != wanted["Description"]:
        return "its description or spec fingerprint differs"
    goal = existing.get("Goal", {})
    for key in ("AttainmentGoal", "WarningThreshold", "Interval"):
        if goal.get(key) != wanted["Goal"][key]:
            return f"Goal.{key} was changed outside bakery"
    sli = existing.get("Sli", {})
    for key in ("MetricThreshold", "ComparisonOperator"):
        if sli.get(key) != wanted["SliConfig"][key]:
            return f"Sli.{key} was changed outside bakery"
    burn = sorted(
        c.get("LookBackWindowMinutes", 0) for c in existing.get("BurnRateConfigurations", [])
    )
    if burn != [c["LookBackWindowMinutes"] for c in wanted["BurnRateConfigurations"]]:
        return "BurnRateConfigurations were changed outside bakery"
    return ""


def _plan_slo(
    client: Any, cfg: BakeryConfig, environment: str, objective: ServiceLevelObjective
) -> tuple[str, Action, str, dict[str, Any]]:
    name = slo_name(cfg, environment, objective)
    wanted = slo_request(cfg, environment, objective)
    existing = _existing_slo(client, name)
    if existing is None:
        return name, "create", f"{objective.operation}: new", wanted
    if not str(existing.get("Description", "")).startswith(DESCRIPTION_PREFIX):
        raise BadInput(
            f"slo.objectives {objective.name}: an SLO named {name} exists in "
            f"{cfg.aws.region} and is not bakery's (its description does not start with "
            f"{DESCRIPTION_PREFIX.strip()!r}): rename the entry or delete that SLO"
        )
    why = _slo_differs(existing, wanted)
    return name, ("update" if why else "unchanged"), why or objective.operation, wanted


def alarm_name(name: str, alarm: BurnRateAlarm) -> str:
    return f"{name}-burn-rate-{alarm.window_minutes}m"


def _alarm_prefix(name: str) -> str:
    return f"{name}-burn-rate-"


def alarm_request(
    cfg: BakeryConfig, environment: str, name: str, alarm: BurnRateAlarm
) -> dict[str, Any]:
    """PutMetricAlarm's request: the SLO's BurnRate over the window above the threshold."""
    return {
        "AlarmName": alarm_name(name, alarm),
        "AlarmDescription": (
            f"{DESCRIPTION_PREFIX}SLO {name} burns its error budget faster than "
            f"{alarm.threshold:g}x over {alarm.window_minutes} minutes"
        ),
        "Namespace": BURN_RATE_NAMESPACE,
        "MetricName": BURN_RATE_METRIC,
        "Dimensions": [
            {"Name": "SloName", "Value": name},
            {"Name": "BurnRateWindowMinutes", "Value": str(alarm.window_minutes)},
        ],
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "Threshold": float(alarm.threshold),
        "ComparisonOperator": "GreaterThanThreshold",
        # No data: no requests, so no budget burnt.
        "TreatMissingData": "notBreaching",
        "ActionsEnabled": bool(cfg.slo.alarm_actions),
        "AlarmActions": list(cfg.slo.alarm_actions),
        "Tags": _bakery_tags(cfg, environment),
    }


# What DescribeAlarms returns of a PutMetricAlarm request, compared for "unchanged".
_ALARM_FIELDS = (
    "AlarmDescription", "Namespace", "MetricName", "Dimensions", "Statistic", "Period",
    "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
    "TreatMissingData", "ActionsEnabled", "AlarmActions",
)  # fmt: skip


def _plan_alarm(client: Any, wanted: dict[str, Any]) -> tuple[Action, str]:
    name = wanted["AlarmName"]
    with aws_errors(f"reading alarm {name}"):
        found = client.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])
    alarms = found.get("MetricAlarms", [])
    if not alarms:
        return "create", "new"
    changed = [key for key in _ALARM_FIELDS if alarms[0].get(key) != wanted[key]]
    return ("update", f"{', '.join(changed)} differ") if changed else ("unchanged", "")


def _bakerys_alarms(client: Any, name: str) -> list[str]:
    """The burn-rate alarms bakery made for the SLO `name`: named after it, with bakery's
    description, watching its BurnRate."""
    found: list[dict[str, Any]] = []
    with aws_errors(f"reading the burn-rate alarms of {name}"):
        for page in client.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=_alarm_prefix(name), AlarmTypes=["MetricAlarm"]
        ):
            found += page.get("MetricAlarms", [])
    watches = {"Name": "SloName", "Value": name}
    return sorted(
        alarm["AlarmName"]
        for alarm in found
        if str(alarm.get("AlarmDescription", "")).startswith(DESCRIPTION_PREFIX)
        and alarm.get("Namespace") == BURN_RATE_NAMESPACE
        and watches in alarm.get("Dimensions", [])
    )


def _delete_alarms(client: Any, names: list[str], apply: bool, why: str) -> list[SloChange]:
    if apply and names:
        with aws_errors(f"deleting the alarms {', '.join(names)}"):
            client.delete_alarms(AlarmNames=names)
    return [SloChange("alarm", name, "delete", apply, why) for name in names]


def _is_bakerys(client: Any, cfg: BakeryConfig, environment: str, summary: dict[str, Any]) -> bool:
    """Whether a listed SLO is one bakery made for this role and environment: its
    description starts with bakery's prefix and it carries bakery's two tags."""
    name = summary["Name"]
    existing = _existing_slo(client, name)
    if existing is None or not str(existing.get("Description", "")).startswith(DESCRIPTION_PREFIX):
        return False
    with aws_errors(f"reading the tags of SLO {name}"):
        listed = client.list_tags_for_resource(ResourceArn=summary["Arn"]).get("Tags", [])
    found = {tag["Key"]: tag["Value"] for tag in listed}
    return found.get(tags.ROLE) == cfg.role and found.get(tags.ENVIRONMENT) == environment


def _summaries(client: Any, cfg: BakeryConfig, environment: str) -> list[dict[str, Any]]:
    """ListServiceLevelObjectives on the service in the environment, every page."""
    summaries: list[dict[str, Any]] = []
    with aws_errors(f"listing the SLOs of {cfg.service.name} in {environment}"):
        for page in client.get_paginator("list_service_level_objectives").paginate(
            KeyAttributes=key_attributes(cfg, environment)
        ):
            summaries += page.get("SloSummaries", [])
    return summaries


def _removed_from_config(
    both: SloClients, cfg: BakeryConfig, environment: str, kept: set[str], apply: bool
) -> list[SloChange]:
    """Delete (with apply) bakery's SLOs on the service in the environment that config no
    longer names, each after its burn-rate alarms; what it decided."""
    client = both.application_signals
    summaries = _summaries(client, cfg, environment)
    prefix = f"{cfg.service.name}-{environment}-"
    changes: list[SloChange] = []
    for summary in sorted(summaries, key=lambda item: item["Name"]):
        name = summary["Name"]
        if name in kept or not name.startswith(prefix):
            continue
        if not _is_bakerys(client, cfg, environment, summary):
            continue
        why = "no longer in config slo.objectives"
        # The alarms first: were the SLO gone first, a run cut off here would leave them
        # with nothing left to find them by.
        alarms = _delete_alarms(both.cloudwatch, _bakerys_alarms(both.cloudwatch, name),
                                apply, f"its SLO {name} is {why}")  # fmt: skip
        if apply:
            with aws_errors(f"deleting SLO {name}"):
                client.delete_service_level_objective(Id=name)
        operation = summary.get("OperationName", "-")
        changes += [SloChange("slo", name, "delete", apply, f"{operation}: {why}"), *alarms]
    return changes


def apply_slos(
    cfg: BakeryConfig,
    environment: str,
    *,
    apply: bool = False,
    clients: Callable[[str], SloClients] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> list[SloChange]:
    """Bring the role's SLOs and burn-rate alarms in the environment to what config
    says (with `apply`), or only say what would change (without): create, update, leave
    alone, and delete bakery's own that config no longer has. The first failure raises;
    what was done before it stays done, and a re-run finishes the rest."""
    check_environment(environment)
    objectives = cfg.slo.objectives
    # Without objectives, only a role with a service in Application Signals can have
    # SLOs left over from config; the others make no call.
    if not objectives and cfg.role not in APPLICATION_SIGNALS_ROLES:
        return []
    both = (clients or slo_clients)(cfg.aws.region)
    changes: list[SloChange] = []
    for objective in objectives:
        name, action, detail, wanted = _plan_slo(
            both.application_signals, cfg, environment, objective
        )
        if apply and action == "create":
            with aws_errors(f"creating SLO {name}"):
                both.application_signals.create_service_level_objective(
                    Name=name, Tags=_bakery_tags(cfg, environment), **wanted
                )
        elif apply and action == "update":
            with aws_errors(f"updating SLO {name}"):
                both.application_signals.update_service_level_objective(Id=name, **wanted)
        changes.append(SloChange("slo", name, action, apply and action != "unchanged", detail))
        progress(f"SLO {name}: {action}")
        for alarm in objective.burn_rate_alarms:
            request = alarm_request(cfg, environment, name, alarm)
            alarm_action, why = _plan_alarm(both.cloudwatch, request)
            if apply and alarm_action != "unchanged":
                with aws_errors(f"writing alarm {request['AlarmName']}"):
                    both.cloudwatch.put_metric_alarm(**request)
            written = apply and alarm_action != "unchanged"
            detail = why or f"burn rate > {alarm.threshold:g}"
            changes.append(SloChange("alarm", request["AlarmName"], alarm_action, written, detail))
        # A window that left the entry: its alarm goes (the SLO stays).
        wanted_alarms = {alarm_name(name, alarm) for alarm in objective.burn_rate_alarms}
        stale = [a for a in _bakerys_alarms(both.cloudwatch, name) if a not in wanted_alarms]
        changes += _delete_alarms(both.cloudwatch, stale, apply,
                                  "its window is no longer in config burn_rate_alarms")  # fmt: skip
    kept = {slo_name(cfg, environment, objective) for objective in objectives}
    changes += _removed_from_config(both, cfg, environment, kept, apply)
    return changes


@dataclass(frozen=True)
class SloStatus:
    """One SLO of the service in the environment, as Application Signals reports it now."""

    name: str
    operation: str
    from_config: bool
    budget_status: str
    attainment: float | None


def list_slos(
    cfg: BakeryConfig,
    environment: str,
    now: datetime,
    *,
    clients: Callable[[str], SloClients] | None = None,
) -> list[SloStatus]:
    """The SLOs on the service in the environment, with their budget status at `now`."""
    check_environment(environment)
    client = (clients or slo_clients)(cfg.aws.region).application_signals
    summaries = _summaries(client, cfg, environment)
    reports: dict[str, dict[str, Any]] = {}
    arns = [summary["Arn"] for summary in summaries]
    for start in range(0, len(arns), REPORT_BATCH):
        with aws_errors("reading the SLOs' budget reports"):
            found = client.batch_get_service_level_objective_budget_report(
                Timestamp=now, SloIds=arns[start : start + REPORT_BATCH]
            )
        reports |= {report["Arn"]: report for report in found.get("Reports", [])}
    ours = {slo_name(cfg, environment, objective) for objective in cfg.slo.objectives}
    return [
        SloStatus(
            summary["Name"],
            summary.get("OperationName", "-"),
            summary["Name"] in ours,
            reports.get(summary["Arn"], {}).get("BudgetStatus", "unknown"),
            reports.get(summary["Arn"], {}).get("Attainment"),
        )
        for summary in sorted(summaries, key=lambda item: item["Name"])
    ]


def missing_from_account(
    cfg: BakeryConfig, environment: str, found: Sequence[SloStatus]
) -> list[str]:
    """The config's SLOs that the listing did not show (not applied yet)."""
    listed = {status.name for status in found}
    names = [slo_name(cfg, environment, objective) for objective in cfg.slo.objectives]
    return [name for name in names if name not in listed]
