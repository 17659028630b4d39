"""The service's X-Ray sampling rule per environment: created, updated, left alone,
refused when it is not bakery's, and the rules that would win over it named.

moto 5.2.5's X-Ray has no sampling rules: the client is wrapped in botocore's Stubber,
which checks every request and canned response against botocore's service model and
fails on any call not queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from invoke import Config, Context

from bakery.aws import sampling, tasks
from bakery.errors import BadInput, ConfigError

from .conftest import REGION, make_config

WHEN = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)
ACCOUNT = "123456789012"


class XRayDouble:
    """The X-Ray client under Stubber, handed out as bakery's client factory would."""

    def __init__(self) -> None:
        self.client = boto3.client("xray", region_name=REGION)
        self.stub = Stubber(self.client)
        self.stub.activate()

    def factory(self, region: str) -> Any:
        assert region == REGION
        return self.client

    def rules(self, *rules: dict[str, Any]) -> None:
        records = [
            {"SamplingRule": rule, "CreatedAt": WHEN, "ModifiedAt": WHEN}
            for rule in (default_rule(), *rules)
        ]
        self.stub.add_response("get_sampling_rules", {"SamplingRuleRecords": records}, {})

    def creates(self, rule: dict[str, Any]) -> None:
        """CreateSamplingRule is expected with `rule` and bakery's tags."""
        self.stub.add_response(
            "create_sampling_rule",
            {"SamplingRuleRecord": {"SamplingRule": stored(rule), "CreatedAt": WHEN}},
            {"SamplingRule": rule, "Tags": BAKERY_TAGS},
        )

    def tagged(self, rule: dict[str, Any], tags: dict[str, str]) -> None:
        self.stub.add_response(
            "list_tags_for_resource",
            {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
            {"ResourceARN": rule["RuleARN"]},
        )


def arn(name: str) -> str:
    return f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/{name}"


def default_rule() -> dict[str, Any]:
    """X-Ray's own rule, as every account has it: 1 a second, then 5 %."""
    return stored({
        "RuleName": "Default", "ResourceARN": "*", "Priority": 10000, "FixedRate": 0.05,
        "ReservoirSize": 1, "ServiceName": "*", "ServiceType": "*", "Host": "*",
        "HTTPMethod": "*", "URLPath": "*", "Version": 1,
    })  # fmt: skip


def stored(rule: dict[str, Any]) -> dict[str, Any]:
    return {**rule, "RuleARN": arn(rule["RuleName"]), "Attributes": {}}


@pytest.fixture
def xray() -> Iterator[XRayDouble]:
    made = XRayDouble()
    yield made
    made.stub.assert_no_pending_responses()


BAKERY_TAGS = [
    {"Key": "bakery:environment", "Value": "staging"},
    {"Key": "bakery:role", "Value": "backend"},
    {"Key": "project", "Value": "bakery"},
]


def test_staging_gets_every_request_scoped_to_the_service(xray: XRayDouble) -> None:
    cfg = make_config("backend")
    rule = sampling.wanted_rule(cfg, "staging")
    assert (rule["RuleName"], rule["ServiceName"], rule["FixedRate"], rule["ReservoirSize"]) == (
        "fastapi-backend-staging",
        "fastapi-backend",
        1.0,
        1,
    )
    xray.rules()
    xray.creates(rule)
    change = sampling.apply_sampling(cfg, "staging", apply=True, client=xray.factory)
    assert (change.action, change.applied, change.overridden_by) == ("create", True, ())


def test_an_environment_not_in_config_gets_x_rays_default_rate(xray: XRayDouble) -> None:
    cfg = make_config("backend")
    rule = sampling.wanted_rule(cfg, "production")
    defaults = default_rule()
    assert (rule["FixedRate"], rule["ReservoirSize"]) == (
        defaults["FixedRate"],
        defaults["ReservoirSize"],
    )
    xray.rules()
    change = sampling.apply_sampling(cfg, "production", client=xray.factory)
    assert (change.action, change.applied) == ("create", False)  # dry run: no create queued


def test_the_rule_as_config_wants_it_is_left_alone(xray: XRayDouble) -> None:
    cfg = make_config("backend")
    rule = stored(sampling.wanted_rule(cfg, "staging"))
    xray.rules(rule)
    xray.tagged(rule, {"bakery:role": "backend"})
    change = sampling.apply_sampling(cfg, "staging", apply=True, client=xray.factory)
    assert (change.action, change.applied) == ("unchanged", False)


def test_a_changed_rate_updates_the_rule(xray: XRayDouble) -> None:
    cfg = make_config("backend", "sampling.environments.staging.fixed_rate_percent=25")
    before = stored(sampling.wanted_rule(make_config("backend"), "staging"))
    xray.rules(before)
    xray.tagged(before, {"bakery:role": "backend"})
    wanted = sampling.wanted_rule(cfg, "staging")
    update = {k: wanted[k] for k in ("RuleName", *sampling._UPDATABLE)}
    xray.stub.add_response(
        "update_sampling_rule",
        {"SamplingRuleRecord": {"SamplingRule": stored(wanted)}},
        {"SamplingRuleUpdate": update},
    )
    change = sampling.apply_sampling(cfg, "staging", apply=True, client=xray.factory)
    assert (change.action, change.detail, change.fixed_rate_percent) == (
        "update",
        "FixedRate differ",
        25.0,
    )


def test_a_rule_of_that_name_that_is_not_bakerys_is_refused(xray: XRayDouble) -> None:
    cfg = make_config("backend")
    rule = stored(sampling.wanted_rule(cfg, "staging"))
    xray.rules(rule)
    xray.tagged(rule, {"team": "payments"})
    with pytest.raises(BadInput, match="is not bakery's"):
        sampling.apply_sampling(cfg, "staging", apply=True, client=xray.factory)


def test_rules_that_win_over_bakerys_are_named(xray: XRayDouble) -> None:
    cfg = make_config("backend")
    production = stored({**sampling.wanted_rule(cfg, "production"), "Priority": 900})
    health = stored({
        **sampling.wanted_rule(cfg, "staging"), "RuleName": "health-checks", "Priority": 10,
        "ServiceName": "fastapi-*", "URLPath": "/health",
    })  # fmt: skip
    other_service = stored({**health, "RuleName": "payments", "ServiceName": "payments"})
    xray.rules(production, health, other_service)
    change = sampling.apply_sampling(cfg, "staging", client=xray.factory)
    assert change.overridden_by == ("fastapi-backend-production", "health-checks")


def test_a_rule_name_over_x_rays_limit_is_bad_input() -> None:
    cfg = make_config("backend", "service.name=a-service-with-a-long-name")
    with pytest.raises(BadInput, match="longer than X-Ray's 32 characters"):
        sampling.wanted_rule(cfg, "production")


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [("*", "x", True), ("fastapi-?ackend", "fastapi-backend", True), ("a.b", "axb", False)],
)
def test_wildcards_match_as_x_ray_matches_them(pattern: str, text: str, matches: bool) -> None:
    assert sampling.wildcard_match(pattern, text) is matches


def test_sampling_task_prints_the_rule_and_what_wins_over_it(
    xray: XRayDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config("backend")
    monkeypatch.setattr(sampling, "aws_client", lambda service, region: xray.factory(region))
    xray.rules(stored({**sampling.wanted_rule(cfg, "production"), "Priority": 900}))
    tasks.sampling(Context(Config(lazy=True)), role=["backend"], environment="staging")
    captured = capsys.readouterr()
    assert "dry run: nothing changed" in captured.out and "would create" in captured.out
    assert "fastapi-backend-production also match" in captured.err


def test_release_with_sampling_applies_the_rule_after_promoting(
    xray: XRayDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps: list[str] = []
    monkeypatch.setattr(tasks, "promote", lambda cfg, env, **_: steps.append(f"promote {env}"))
    original = xray.client.create_sampling_rule

    def create(**request: Any) -> Any:
        steps.append("create_sampling_rule")
        return original(**request)

    monkeypatch.setattr(xray.client, "create_sampling_rule", create)
    monkeypatch.setattr(sampling, "aws_client", lambda service, region: xray.factory(region))
    rule = sampling.wanted_rule(make_config("backend"), "staging")
    xray.rules()
    xray.creates(rule)
    tasks.release(Context(Config(lazy=True)), "staging", role=["backend"], sampling=True)
    assert steps == ["promote staging", "create_sampling_rule"]
    assert "created" in capsys.readouterr().out


def test_sampling_task_applies_the_rule(
    xray: XRayDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sampling, "aws_client", lambda service, region: xray.factory(region))
    rule = sampling.wanted_rule(make_config("backend"), "staging")
    xray.rules()
    xray.creates(rule)
    tasks.sampling(Context(Config(lazy=True)), role=["backend"], environment="staging", apply=True)
    out = capsys.readouterr().out
    assert "(applied)" in out and "created" in out and "fastapi-backend-staging" in out


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("sampling.environments.staging.fixed_rate_percent=150", "fixed_rate_percent"),
        ("sampling.default.reservoir_per_second=-1", "sampling.default.reservoir_per_second"),
        ("sampling.environments={Staging: {reservoir_per_second: 1, fixed_rate_percent: 5}}",
         "sampling.environments.Staging"),
    ],
)  # fmt: skip
def test_a_bad_sampling_setting_names_the_key(setting: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config("backend", setting)
    assert key in caught.value.key_path
    assert caught.value.source.startswith("--set sampling.")


def test_roles_that_send_no_traces_get_no_rule(
    xray: XRayDouble, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sampling, "aws_client", lambda service, region: xray.factory(region))
    xray.rules()  # the backend's run only: no call for the frontend or the database
    tasks.sampling(Context(Config(lazy=True)), environment="staging")
    captured = capsys.readouterr()
    assert "frontend: sends no traces" in captured.err
    assert "database: sends no traces" in captured.err
    assert "fastapi-backend-staging" in captured.out
    assert "frontend-nginx" not in captured.out
