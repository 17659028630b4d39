"""Every boto3 client bakery uses is built here: one retry policy, checked region and
credentials, and AWS errors turned into bakery errors a user can act on.

The region comes from the typed config (`aws.region`, or `--set aws.region=...`), never
from AWS_REGION: the region decides the source AMI, the SSM parameters and the build
record, so it has exactly one home. Credentials come from the usual boto3 chain.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import botocore.exceptions

from bakery.errors import BadInput, OperationFailed

# boto3, botocore's session and its loader are imported where a client is made: they
# take about half a second, which every `invoke` run (even `invoke build` with nothing
# to do on the local target) would otherwise pay.
if TYPE_CHECKING:
    import boto3.session
    import botocore.config
    import botocore.loaders
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient


# Adaptive mode adds client-side rate limiting on top of retries, so a prune of many
# images or a burst of tagging backs off instead of failing on RequestLimitExceeded.
@functools.cache
def retry_config() -> botocore.config.Config:
    import botocore.config

    return botocore.config.Config(
        retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra="bakery"
    )


CREDENTIALS_HINT = (
    "set AWS_PROFILE to a profile in ~/.aws/config (run `aws sso login --profile NAME` "
    "first for SSO), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an "
    "instance role provides credentials"
)

# Error codes that mean "who you are" is wrong, not that the operation failed.
_AUTH_ERRORS = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "RequestExpired",
    }
)


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region botocore knows for EC2, across partitions (offline: bundled data)."""
    import boto3.session

    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)


def check_region(region: str) -> str:
    """The region itself, or BadInput when botocore does not know it."""
    if region not in known_regions():
        raise BadInput(
            f"unknown AWS region {region!r}: set aws.region (or --set aws.region=eu-west-1) "
            "to a region such as us-east-1; a region newer than this boto3 needs an upgrade"
        )
    return region


@functools.cache
def _model_loader() -> botocore.loaders.Loader:
    """One loader for every session: parsing EC2's service model takes a quarter second."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def _session() -> boto3.session.Session:
    """A fresh session (credentials are resolved anew) sharing the parsed service models."""
    import boto3.session
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _model_loader())
    try:
        session = boto3.session.Session(botocore_session=core)
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise BadInput(f"{exc}: {CREDENTIALS_HINT}") from exc
    if credentials is None:
        raise BadInput(f"no AWS credentials found: {CREDENTIALS_HINT}")
    return session


Service = Literal["ec2", "ssm", "application-signals", "autoscaling", "cloudwatch", "xray"]


def aws_client(service: Service, region: str) -> Any:
    """A client for `service` in `region` with bakery's retry policy."""
    session = _session()
    return session.client(service, region_name=check_region(region), config=retry_config())


def ec2_client(region: str) -> EC2Client:
    """The EC2 client for one region."""
    client: EC2Client = aws_client("ec2", region)
    return client


def autoscaling_client(region: str) -> Any:
    """The Auto Scaling client for one region (prune reads its launch configurations)."""
    return aws_client("autoscaling", region)


def ssm_client(region: str) -> SSMClient:
    """The SSM client for one region."""
    client: SSMClient = aws_client("ssm", region)
    return client


def error_code(exc: botocore.exceptions.ClientError) -> str:
    """The AWS error code of a ClientError ('' when the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn boto errors raised while doing `action` into BadInput or OperationFailed."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        raise BadInput(f"{action}: no AWS credentials found: {CREDENTIALS_HINT}") from exc
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in _AUTH_ERRORS:
            raise BadInput(
                f"{action}: AWS refused the credentials ({exc}): {CREDENTIALS_HINT}"
            ) from exc
        raise OperationFailed(f"{action}: {exc}") from exc
    except botocore.exceptions.WaiterError as exc:
        raise OperationFailed(f"{action}: gave up waiting: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise OperationFailed(f"{action}: {exc}") from exc
