"""SLOs from config: created, updated, left alone, refused, deleted once config drops
them (bakery's own only), and finished by a re-run.

moto 5.2.5 has no application-signals API: its client is wrapped in botocore's Stubber,
which checks every request (and every canned response) against botocore's service
model and fails on any call not queued. CloudWatch alarms go to moto's CloudWatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from invoke import Config, Context

from bakery.aws import slo, tasks
from bakery.config import BakeryConfig
from bakery.errors import BadInput, ConfigError, OperationFailed
from bakery.inputs import inputs_hash
from bakery.packer import PackerVersion
from bakery.render import render_role

from .conftest import REGION, make_config

CREATED = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)
LATENCY = "fastapi-backend-staging-list-users-latency"
AVAILABILITY = "fastapi-backend-staging-list-users-availability"


class SloDouble:
    """application-signals through Stubber, CloudWatch on moto, as SloClients."""

    def __init__(self) -> None:
        self.signals = boto3.client("application-signals", region_name=REGION)
        self.stub = Stubber(self.signals)
        self.stub.activate()
        self.cloudwatch = boto3.client("cloudwatch", region_name=REGION)

    def clients(self, region: str) -> slo.SloClients:
        assert region == REGION
        return slo.SloClients(self.signals, self.cloudwatch)

    def absent(self, name: str) -> None:
        self.stub.add_client_error(
            "get_service_level_objective",
            "ResourceNotFoundException",
            f"{name} not found",
            404,
            expected_params={"Id": name},
        )

    def present(self, name: str, request: dict[str, Any]) -> None:
        """Get answers with the SLO as Application Signals stores `request`."""
        self.stub.add_response(
            "get_service_level_objective", {"Slo": stored(name, request)}, {"Id": name}
        )

    def created(self, name: str, request: dict[str, Any], tags: list[dict[str, str]]) -> None:
        self.stub.add_response(
            "create_service_level_objective",
            {"Slo": stored(name, request)},
            {"Name": name, "Tags": tags, **request},
        )

    def all_new(self, cfg: BakeryConfig) -> None:
        """Every SLO of the config is absent, and is created as config wants it; then the
        listing shows them, and nothing else."""
        for name, request in requests_of(cfg).items():
            self.absent(name)
            self.created(name, request, bakery_tags(cfg))
        self.listing(cfg, *requests_of(cfg))

    def all_present(self, cfg: BakeryConfig, *also_listed: str) -> None:
        """Every SLO of the config is there as config wants it; the listing shows them
        and `also_listed`."""
        for name, request in requests_of(cfg).items():
            self.present(name, request)
        self.listing(cfg, *requests_of(cfg), *also_listed)

    def listed(
        self, cfg: BakeryConfig, name: str, reports: list[dict[str, Any]], when: Any = ANY
    ) -> str:
        """ListServiceLevelObjectives shows one SLO, and its budget report is `reports`."""
        arn = f"arn:aws:application-signals:{REGION}:123456789012:slo/{name}"
        self.stub.add_response(
            "list_service_level_objectives",
            {"SloSummaries": [{"Arn": arn, "Name": name, "OperationName": "GET /users"}]},
            {"KeyAttributes": slo.key_attributes(cfg, "staging")},
        )
        self.stub.add_response(
            "batch_get_service_level_objective_budget_report",
            {"Timestamp": CREATED, "Reports": reports, "Errors": []},
            {"Timestamp": when, "SloIds": [arn]},
        )
        return arn

    def listing(self, cfg: BakeryConfig, *names: str) -> None:
        """ListServiceLevelObjectives (an apply run's last read) shows these SLOs."""
        summaries = [
            {"Arn": arn_of(name), "Name": name, "OperationName": "GET /users"} for name in names
        ]
        self.stub.add_response(
            "list_service_level_objectives",
            {"SloSummaries": summaries},
            {"KeyAttributes": slo.key_attributes(cfg, "staging")},
        )

    def tagged(self, name: str, tags: list[dict[str, str]]) -> None:
        self.stub.add_response(
            "list_tags_for_resource", {"Tags": tags}, {"ResourceArn": arn_of(name)}
        )

    def deleted(self, name: str) -> None:
        self.stub.add_response("delete_service_level_objective", {}, {"Id": name})

    def updated(self, name: str, request: dict[str, Any]) -> None:
        self.stub.add_response(
            "update_service_level_objective",
            {"Slo": stored(name, request)},
            {"Id": name, **request},
        )


def arn_of(name: str) -> str:
    return f"arn:aws:application-signals:{REGION}:123456789012:slo/{name}"


def stored(name: str, request: dict[str, Any]) -> dict[str, Any]:
    """A GetServiceLevelObjective `Slo` for what Create/Update was given."""
    config = request["SliConfig"]
    metric = config["SliMetricConfig"]
    query = {
        "Id": "sli",
        "MetricStat": {
            "Metric": {"Namespace": "ApplicationSignals", "MetricName": "Latency"},
            "Period": metric["PeriodSeconds"],
            "Stat": metric.get("Statistic", "Average"),
        },
        "ReturnData": True,
    }
    return {
        "Arn": f"arn:aws:application-signals:{REGION}:123456789012:slo/{name}",
        "Name": name,
        "Description": request["Description"],
        "CreatedTime": CREATED,
        "LastUpdatedTime": CREATED,
        "Sli": {
            "SliMetric": {
                "KeyAttributes": metric["KeyAttributes"],
                "OperationName": metric["OperationName"],
                "MetricType": metric["MetricType"],
                "MetricDataQueries": [query],
            },
            "MetricThreshold": config["MetricThreshold"],
            "ComparisonOperator": config["ComparisonOperator"],
        },
        "EvaluationType": "PeriodBased",
        "Goal": request["Goal"],
        "BurnRateConfigurations": request["BurnRateConfigurations"],
    }


@pytest.fixture
def double(aws: None) -> Iterator[SloDouble]:
    made = SloDouble()
    yield made
    made.stub.assert_no_pending_responses()


def requests_of(cfg: BakeryConfig) -> dict[str, dict[str, Any]]:
    return {
        slo.slo_name(cfg, "staging", objective): slo.slo_request(cfg, "staging", objective)
        for objective in cfg.slo.objectives
    }


def bakery_tags(cfg: BakeryConfig) -> list[dict[str, str]]:
    return [
        {"Key": "bakery:environment", "Value": "staging"},
        {"Key": "bakery:role", "Value": cfg.role},
        *({"Key": k, "Value": v} for k, v in sorted(cfg.aws.tags.items())),
    ]


def alarms(double: SloDouble) -> dict[str, dict[str, Any]]:
    found = double.cloudwatch.describe_alarms()["MetricAlarms"]
    return {alarm["AlarmName"]: alarm for alarm in found}


def actions(changes: list[slo.SloChange]) -> list[tuple[str, str, bool]]:
    return [(change.name, change.action, change.applied) for change in changes]


def test_dry_run_says_create_and_writes_nothing(double: SloDouble) -> None:
    cfg = make_config("backend")
    double.absent(LATENCY)
    double.absent(AVAILABILITY)
    double.listing(cfg)
    changes = slo.apply_slos(cfg, "staging", clients=double.clients)
    assert actions(changes) == [
        (LATENCY, "create", False),
        (f"{LATENCY}-burn-rate-60m", "create", False),
        (AVAILABILITY, "create", False),
        (f"{AVAILABILITY}-burn-rate-60m", "create", False),
        (f"{AVAILABILITY}-burn-rate-360m", "create", False),
    ]
    assert alarms(double) == {}


def test_apply_creates_the_slos_on_the_service_and_their_burn_rate_alarms(
    double: SloDouble,
) -> None:
    cfg = make_config("backend")
    wanted = requests_of(cfg)
    double.all_new(cfg)
    changes = slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    assert [c.action for c in changes] == ["create"] * 5 and all(c.applied for c in changes)
    latency = wanted[LATENCY]["SliConfig"]
    assert latency["SliMetricConfig"] == {
        "KeyAttributes": {"Type": "Service", "Name": "fastapi-backend", "Environment": "staging"},
        "OperationName": "GET /users",
        "PeriodSeconds": 60,
        "MetricType": "LATENCY",
        "Statistic": "p99",
    }
    assert (latency["MetricThreshold"], latency["ComparisonOperator"]) == (
        500.0,
        "LessThanOrEqualTo",
    )
    assert wanted[AVAILABILITY]["BurnRateConfigurations"] == [
        {"LookBackWindowMinutes": 60},
        {"LookBackWindowMinutes": 360},
    ]
    alarm = alarms(double)[f"{AVAILABILITY}-burn-rate-360m"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == (
        "AWS/ApplicationSignals",
        "BurnRate",
        6.0,
    )
    assert alarm["Dimensions"] == [
        {"Name": "SloName", "Value": AVAILABILITY},
        {"Name": "BurnRateWindowMinutes", "Value": "360"},
    ]
    alarm_tags = double.cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
    assert {"Key": "bakery:role", "Value": "backend"} in alarm_tags


def test_a_second_run_leaves_everything_unchanged(double: SloDouble) -> None:
    cfg = make_config("backend")
    double.all_new(cfg)
    slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    double.all_present(cfg)  # and no create, update or delete queued: one would fail
    changes = slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    assert {c.action for c in changes} == {"unchanged"}
    assert not any(c.applied for c in changes)


def test_a_changed_threshold_updates_the_slo_and_its_alarm(double: SloDouble) -> None:
    before = make_config("backend")
    double.all_new(before)
    slo.apply_slos(before, "staging", apply=True, clients=double.clients)
    after = make_config(
        "backend",
        "slo.objectives=[{name: list-users-latency, operation: GET /users, latency: "
        "{statistic: p90, threshold_ms: 250}, interval_days: 7, attainment_goal: 99.5, "
        "burn_rate_alarms: [{window_minutes: 60, threshold: 10}]}]",
    )
    double.present(LATENCY, requests_of(before)[LATENCY])
    double.updated(LATENCY, requests_of(after)[LATENCY])
    double.listing(after, LATENCY)
    changes = slo.apply_slos(after, "staging", apply=True, clients=double.clients)
    assert actions(changes) == [
        (LATENCY, "update", True),
        (f"{LATENCY}-burn-rate-60m", "update", True),
    ]
    assert alarms(double)[f"{LATENCY}-burn-rate-60m"]["Threshold"] == 10.0


def test_a_goal_changed_by_hand_is_put_back(double: SloDouble) -> None:
    cfg = make_config("backend")
    wanted = requests_of(cfg)
    edited = {**wanted[LATENCY], "Goal": {**wanted[LATENCY]["Goal"], "AttainmentGoal": 90.0}}
    double.present(LATENCY, edited)
    double.present(AVAILABILITY, wanted[AVAILABILITY])
    double.listing(cfg, LATENCY, AVAILABILITY)
    changes = slo.apply_slos(cfg, "staging", clients=double.clients)
    assert changes[0].action == "update"
    assert "AttainmentGoal" in changes[0].detail


def test_a_failure_half_way_is_finished_by_the_next_run(double: SloDouble) -> None:
    cfg = make_config("backend")
    wanted = requests_of(cfg)
    double.absent(LATENCY)
    double.created(LATENCY, wanted[LATENCY], bakery_tags(cfg))
    double.absent(AVAILABILITY)
    double.stub.add_client_error(
        "create_service_level_objective", "ThrottlingException", "slow down", 429
    )
    with pytest.raises(OperationFailed, match=f"creating SLO {AVAILABILITY}.*Throttling"):
        slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    assert list(alarms(double)) == [f"{LATENCY}-burn-rate-60m"]

    double.present(LATENCY, wanted[LATENCY])
    double.absent(AVAILABILITY)
    double.created(AVAILABILITY, wanted[AVAILABILITY], bakery_tags(cfg))
    double.listing(cfg, LATENCY, AVAILABILITY)
    changes = slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    assert actions(changes) == [
        (LATENCY, "unchanged", False),
        (f"{LATENCY}-burn-rate-60m", "unchanged", False),
        (AVAILABILITY, "create", True),
        (f"{AVAILABILITY}-burn-rate-60m", "create", True),
        (f"{AVAILABILITY}-burn-rate-360m", "create", True),
    ]


def test_an_slo_that_is_not_bakerys_is_refused(double: SloDouble) -> None:
    cfg = make_config("backend")
    by_hand = {**requests_of(cfg)[LATENCY], "Description": "made in the console"}
    double.present(LATENCY, by_hand)
    with pytest.raises(BadInput, match=r"is not bakery's.*rename the entry or delete that SLO"):
        slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)


# Config without the availability entry: the SLO and its two alarms left config.
ONLY_LATENCY = (
    "slo.objectives=[{name: list-users-latency, operation: GET /users, latency: "
    "{statistic: p99, threshold_ms: 500}, interval_days: 7, attainment_goal: 99.0, "
    "burn_rate_alarms: [{window_minutes: 60, threshold: 14.4}]}]"
)


def applied_in_full(double: SloDouble) -> BakeryConfig:
    """The backend's SLOs and alarms as a first `--apply` makes them."""
    cfg = make_config("backend")
    double.all_new(cfg)
    slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    return cfg


def test_dry_run_says_delete_for_bakerys_slo_no_longer_in_config(double: SloDouble) -> None:
    before = applied_in_full(double)
    after = make_config("backend", ONLY_LATENCY)
    double.all_present(after, AVAILABILITY)
    double.present(AVAILABILITY, requests_of(before)[AVAILABILITY])
    double.tagged(AVAILABILITY, bakery_tags(before))  # and no delete queued: one would fail
    changes = slo.apply_slos(after, "staging", clients=double.clients)
    assert actions(changes)[2:] == [
        (AVAILABILITY, "delete", False),
        (f"{AVAILABILITY}-burn-rate-360m", "delete", False),
        (f"{AVAILABILITY}-burn-rate-60m", "delete", False),
    ]
    assert "no longer in config" in changes[2].detail
    assert len(alarms(double)) == 3


def test_apply_deletes_a_removed_slo_and_its_burn_rate_alarms(double: SloDouble) -> None:
    before = applied_in_full(double)
    after = make_config("backend", ONLY_LATENCY)
    double.all_present(after, AVAILABILITY)
    double.present(AVAILABILITY, requests_of(before)[AVAILABILITY])
    double.tagged(AVAILABILITY, bakery_tags(before))
    double.deleted(AVAILABILITY)
    changes = slo.apply_slos(after, "staging", apply=True, clients=double.clients)
    assert actions(changes) == [
        (LATENCY, "unchanged", False),
        (f"{LATENCY}-burn-rate-60m", "unchanged", False),
        (AVAILABILITY, "delete", True),
        (f"{AVAILABILITY}-burn-rate-360m", "delete", True),
        (f"{AVAILABILITY}-burn-rate-60m", "delete", True),
    ]
    assert list(alarms(double)) == [f"{LATENCY}-burn-rate-60m"]


def test_removing_every_objective_deletes_bakerys_slos(double: SloDouble) -> None:
    before = applied_in_full(double)
    after = make_config("backend", "slo.objectives=[]")
    double.listing(after, LATENCY, AVAILABILITY)
    for name in (AVAILABILITY, LATENCY):  # in name order
        double.present(name, requests_of(before)[name])
        double.tagged(name, bakery_tags(before))
        double.deleted(name)
    changes = slo.apply_slos(after, "staging", apply=True, clients=double.clients)
    assert actions(changes) == [
        (AVAILABILITY, "delete", True),
        (f"{AVAILABILITY}-burn-rate-360m", "delete", True),
        (f"{AVAILABILITY}-burn-rate-60m", "delete", True),
        (LATENCY, "delete", True),
        (f"{LATENCY}-burn-rate-60m", "delete", True),
    ]
    assert alarms(double) == {}


def test_slos_and_alarms_that_are_not_bakerys_are_never_deleted(double: SloDouble) -> None:
    cfg = applied_in_full(double)
    wanted = requests_of(cfg)
    by_hand = "fastapi-backend-staging-by-hand"
    other_role = "fastapi-backend-staging-other-role"
    other_environment = "fastapi-backend-staging-other-environment"
    # An alarm named as bakery names them, on the hand-made SLO, but made by hand.
    double.cloudwatch.put_metric_alarm(
        AlarmName=f"{by_hand}-burn-rate-60m", Namespace="AWS/ApplicationSignals",
        MetricName="BurnRate", Dimensions=[{"Name": "SloName", "Value": by_hand}],
        Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    for name, request in wanted.items():
        double.present(name, request)
    # The service in the environment has four SLOs config does not name. "payments-slo"
    # is not named after the service and environment: it is not even read.
    double.listing(cfg, *wanted, by_hand, other_environment, other_role, "payments-slo")
    double.present(by_hand, {**wanted[AVAILABILITY], "Description": "made in the console"})
    double.present(other_environment, wanted[AVAILABILITY])
    production = [{"Key": "bakery:environment", "Value": "production"},
                  {"Key": "bakery:role", "Value": "backend"}]  # fmt: skip
    double.tagged(other_environment, production)
    double.present(other_role, wanted[AVAILABILITY])
    frontend = [{"Key": "bakery:environment", "Value": "staging"},
                {"Key": "bakery:role", "Value": "frontend"}]  # fmt: skip
    double.tagged(other_role, frontend)
    # No delete is queued: Stubber fails the run on any.
    changes = slo.apply_slos(cfg, "staging", apply=True, clients=double.clients)
    assert {c.action for c in changes} == {"unchanged"}
    assert f"{by_hand}-burn-rate-60m" in alarms(double)
    assert len(alarms(double)) == 4


def test_a_deletion_cut_off_after_the_alarms_is_finished_by_the_next_run(
    double: SloDouble,
) -> None:
    before = applied_in_full(double)
    after = make_config("backend", ONLY_LATENCY)
    for attempt in ("cut off", "again"):
        double.all_present(after, AVAILABILITY)
        double.present(AVAILABILITY, requests_of(before)[AVAILABILITY])
        double.tagged(AVAILABILITY, bakery_tags(before))
        if attempt == "cut off":
            double.stub.add_client_error(
                "delete_service_level_objective", "ThrottlingException", "slow down", 429
            )
            with pytest.raises(OperationFailed, match=f"deleting SLO {AVAILABILITY}"):
                slo.apply_slos(after, "staging", apply=True, clients=double.clients)
            # Its alarms went first; the SLO, still listed, leads the next run to it.
            assert list(alarms(double)) == [f"{LATENCY}-burn-rate-60m"]
    double.deleted(AVAILABILITY)
    changes = slo.apply_slos(after, "staging", apply=True, clients=double.clients)
    assert actions(changes)[2:] == [(AVAILABILITY, "delete", True)]


def test_a_window_removed_from_an_entry_deletes_its_alarm_only(double: SloDouble) -> None:
    before = applied_in_full(double)
    one_window = (
        "slo.objectives=[{name: list-users-availability, operation: GET /users, "
        "availability_percent: 99.9, interval_days: 7, attainment_goal: 99.0, "
        "burn_rate_alarms: [{window_minutes: 60, threshold: 14.4}]}]"
    )
    after = make_config("backend", one_window)
    double.present(AVAILABILITY, requests_of(before)[AVAILABILITY])
    double.updated(AVAILABILITY, requests_of(after)[AVAILABILITY])
    double.listing(after, AVAILABILITY)  # the latency SLO: gone by hand, in this story
    changes = slo.apply_slos(after, "staging", apply=True, clients=double.clients)
    assert actions(changes) == [
        (AVAILABILITY, "update", True),
        (f"{AVAILABILITY}-burn-rate-60m", "unchanged", False),
        (f"{AVAILABILITY}-burn-rate-360m", "delete", True),
    ]
    assert sorted(alarms(double)) == [f"{AVAILABILITY}-burn-rate-60m", f"{LATENCY}-burn-rate-60m"]


def test_roles_without_a_service_or_objectives_make_no_call() -> None:
    def no_clients(region: str) -> slo.SloClients:
        raise AssertionError("no AWS call expected")

    assert slo.apply_slos(make_config("frontend"), "staging", clients=no_clients) == []


def test_listing_shows_budget_status_and_what_config_has_not_made(double: SloDouble) -> None:
    cfg = make_config("backend")
    arn = f"arn:aws:application-signals:{REGION}:123456789012:slo/{LATENCY}"
    report = {"Arn": arn, "Name": LATENCY, "BudgetStatus": "OK", "Attainment": 99.7}
    double.listed(cfg, LATENCY, [report], when=CREATED)
    found = slo.list_slos(cfg, "staging", CREATED, clients=double.clients)
    assert found == [slo.SloStatus(LATENCY, "GET /users", True, "OK", 99.7)]
    assert slo.missing_from_account(cfg, "staging", found) == [AVAILABILITY]


def test_slo_task_prints_the_plan_as_a_dry_run(
    double: SloDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(slo, "slo_clients", double.clients)
    double.absent(LATENCY)
    double.absent(AVAILABILITY)
    double.listing(make_config("backend"))
    tasks.slo(Context(Config(lazy=True)), role=["backend"], environment="staging")
    out = capsys.readouterr().out
    assert "dry run: nothing changed" in out and "would create" in out
    assert LATENCY in out


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "{name: a1, operation: GET /users, availability_percent: 99, latency: "
            "{statistic: p99, threshold_ms: 5}, interval_days: 7, attainment_goal: 99}",
            "give exactly one of latency",
        ),
        (
            "{name: a1, operation: /users, availability_percent: 99, interval_days: 7, "
            "attainment_goal: 99}",
            "slo.objectives.0.operation",
        ),
        (
            "{name: a1, operation: GET /users, availability_percent: 99, interval_days: 7, "
            "attainment_goal: 100}",
            "slo.objectives.0.attainment_goal",
        ),
    ],
)
def test_a_bad_objective_names_the_setting(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        make_config("backend", f"slo.objectives=[{entry}]")
    assert caught.value.source == "--set slo.objectives"


def test_two_objectives_with_one_name_are_refused() -> None:
    entry = (
        "{name: a1, operation: GET /users, availability_percent: 99, interval_days: 7, "
        "attainment_goal: 99}"
    )
    with pytest.raises(ConfigError, match=r"\['a1'\] used twice"):
        make_config("backend", f"slo.objectives=[{entry}, {entry}]")


def test_changing_an_slo_or_sampling_does_not_change_the_images_inputs(tmp_path: Path) -> None:
    base = make_config("backend")
    changed = make_config(
        "backend", "slo.alarm_actions=[arn:aws:sns:us-east-1:123456789012:oncall]",
        "sampling.default.fixed_rate_percent=50",
    )  # fmt: skip
    hashes = [
        inputs_hash(render_role(cfg, PackerVersion(1, 6, 6), tmp_path / str(n)))
        for n, cfg in enumerate((base, changed))
    ]
    assert hashes[0] == hashes[1]
    changed_image = make_config("backend", "app.port=8080")
    assert (
        inputs_hash(render_role(changed_image, PackerVersion(1, 6, 6), tmp_path / "2"))
        != (hashes[0])
    )


def test_release_with_slo_applies_the_objectives_after_promoting(
    double: SloDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps: list[str] = []
    monkeypatch.setattr(tasks, "promote", lambda cfg, env, **_: steps.append(f"promote {env}"))
    monkeypatch.setattr(slo, "slo_clients", double.clients)
    original = double.signals.get_service_level_objective

    def get(**request: Any) -> Any:
        steps.append(f"get {request['Id']}")
        return original(**request)

    monkeypatch.setattr(double.signals, "get_service_level_objective", get)
    cfg = make_config("backend")
    double.all_new(cfg)
    tasks.release(Context(Config(lazy=True)), "staging", role=["backend"], slo=True)
    assert steps == ["promote staging", f"get {LATENCY}", f"get {AVAILABILITY}"]
    assert len(alarms(double)) == 3
    assert "created" in capsys.readouterr().out


def test_slo_task_applies_then_shows_the_status(
    double: SloDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke slo --apply`, then `invoke slo --status`."""
    monkeypatch.setattr(slo, "slo_clients", double.clients)
    cfg = make_config("backend")
    double.all_new(cfg)
    tasks.slo(Context(Config(lazy=True)), role=["backend"], environment="staging", apply=True)
    out = capsys.readouterr().out
    assert "(applied)" in out and out.count("created") == 5
    double.listed(cfg, LATENCY, [])
    tasks.slo(Context(Config(lazy=True)), role=["backend"], environment="staging", status=True)
    captured = capsys.readouterr()
    assert LATENCY in captured.out and "unknown" in captured.out
    assert f"not created yet: {AVAILABILITY}" in captured.err


def test_slo_task_refuses_status_with_apply(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        tasks.slo(
            Context(Config(lazy=True)), role=["backend"], environment="staging", apply=True,
            status=True,
        )  # fmt: skip
    assert caught.value.code == 2
    assert "--status only reads" in capsys.readouterr().err
