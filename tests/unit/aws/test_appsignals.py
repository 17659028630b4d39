"""Enabling Application Signals: StartDiscovery once per region.

moto 5.2.5 does not implement the application-signals API (a client call would try
the real endpoint), so the client is wrapped in botocore's Stubber: it answers
before any request is sent and fails the test on any call not expected.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bakery.aws import appsignals
from bakery.errors import OperationFailed

from .conftest import make_config


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Stubber]:
    stubs: dict[str, Stubber] = {}

    def client(service: str, region: str) -> Any:
        assert service == "application-signals"
        real = boto3.client(service, region_name=region)
        stubs[region] = Stubber(real)
        stubs[region].activate()
        return real

    monkeypatch.setattr(appsignals, "aws_client", client)
    return stubs


def test_discovery_starts_once_per_region(
    stubbed: dict[str, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = Stubber.activate

    def activate(self: Stubber) -> None:
        original(self)
        self.add_response("start_discovery", {}, {})
        calls.append("start_discovery")

    monkeypatch.setattr(Stubber, "activate", activate)
    configs = [
        make_config("backend", "aws.copy_regions=['eu-west-1']"),
        make_config("frontend"),
        make_config("database"),
    ]
    assert appsignals.enable_application_signals(configs) == ["us-east-1", "eu-west-1"]
    assert calls == ["start_discovery", "start_discovery"]
    for stub in stubbed.values():
        stub.assert_no_pending_responses()


def test_missing_permission_is_an_operation_failure(
    stubbed: dict[str, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Stubber.activate

    def activate(self: Stubber) -> None:
        original(self)
        self.add_client_error(
            "start_discovery", "AccessDeniedException", "needs iam:CreateServiceLinkedRole"
        )

    monkeypatch.setattr(Stubber, "activate", activate)
    with pytest.raises(
        OperationFailed, match=r"enabling Application Signals in us-east-1.*AccessDenied"
    ):
        appsignals.enable_application_signals([make_config("backend")])
