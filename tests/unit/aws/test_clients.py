"""Clients: one retry policy, a checked region, credentials errors that say what to do."""

from __future__ import annotations

import botocore.retries.adaptive
import botocore.retries.standard
import pytest
from botocore.awsrequest import AWSResponse

from bakery.aws import clients
from bakery.errors import BadInput, OperationFailed

from .conftest import REGION


def test_clients_retry_adaptively_up_to_ten_attempts() -> None:
    ec2 = clients.ec2_client(REGION)
    retries = ec2.meta.config.retries
    # botocore reads max_attempts as retries: 10 retries after the first attempt.
    assert retries == {"mode": "adaptive", "total_max_attempts": 11}
    assert ec2.meta.region_name == REGION


def test_unknown_region_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"unknown AWS region 'mars-north-1'.*aws.region"):
        clients.ec2_client("mars-north-1")


def test_missing_credentials_say_how_to_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setattr("botocore.credentials.InstanceMetadataProvider.load", lambda self: None)
    monkeypatch.setattr("botocore.credentials.ContainerProvider.load", lambda self: None)
    with pytest.raises(BadInput, match="no AWS credentials found: set AWS_PROFILE"):
        clients.ssm_client(REGION)


def test_unknown_profile_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(BadInput, match=r"no-such-profile.*AWS_PROFILE"):
        clients.ec2_client(REGION)


def test_throttling_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Throttling answers, then success: the call succeeds on the third attempt.

    The answers come from a `before-send` hook, so no request leaves the process.
    """
    # Retry pacing (backoff, adaptive rate limiting) is botocore's; only retrying is ours.
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda *a: 0)
    monkeypatch.setattr(
        botocore.retries.adaptive.ClientRateLimiter, "on_sending_request", lambda *a, **k: None
    )
    ec2 = clients.ec2_client(REGION)
    attempts: list[int] = []

    def answer(request: object, **kwargs: object) -> AWSResponse:
        attempts.append(1)
        if len(attempts) < 3:
            body = (
                b"<Response><Errors><Error><Code>Throttling</Code><Message>Rate exceeded"
                b"</Message></Error></Errors><RequestID>r</RequestID></Response>"
            )
            return AWSResponse("https://ec2", 400, {}, _Raw(body))
        body = (
            b'<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            b"<requestId>r</requestId><regionInfo/></DescribeRegionsResponse>"
        )
        return AWSResponse("https://ec2", 200, {}, _Raw(body))

    ec2.meta.events.register("before-send.ec2.DescribeRegions", answer)
    result = ec2.describe_regions()
    assert len(attempts) == 3
    assert result["ResponseMetadata"]["RetryAttempts"] == 2


def test_aws_errors_become_bakery_errors() -> None:
    from botocore.exceptions import ClientError

    with (
        pytest.raises(OperationFailed, match=r"tagging: .*InvalidParameter"),
        clients.aws_errors("tagging"),
    ):
        raise ClientError({"Error": {"Code": "InvalidParameter", "Message": "x"}}, "CreateTags")
    with (
        pytest.raises(BadInput, match=r"refused the credentials.*AWS_PROFILE"),
        clients.aws_errors("listing"),
    ):
        raise ClientError({"Error": {"Code": "ExpiredToken", "Message": "x"}}, "DescribeImages")


class _Raw:
    """The smallest raw body AWSResponse can read."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: object) -> list[bytes]:
        return [self.body]

    def read(self) -> bytes:
        return self.body
