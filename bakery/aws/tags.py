"""The tags bakery puts on AMIs, snapshots, test resources and launched instances, and
what they mean.

Tags are the state of the AWS side: an AMI's status (built, verified, rejected), the
environments it was promoted to, where a copy came from, and when a test resource
expires. Every key is a constant here so no module spells one differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import TagTypeDef

PREFIX = "bakery:"
ROLE = "bakery:role"
OS = "bakery:os"
# The image's CPU architecture (x86_64, arm64): images of one role and both arches
# live side by side, each released and pruned on its own (docs/aws.md).
ARCH = "bakery:arch"
INPUTS_HASH = "bakery:inputs-hash"
GIT_COMMIT = "bakery:git-commit"
PACKER_VERSION = "bakery:packer-version"
SOURCE_AMI = "bakery:source-ami"
BUILD_TIME = "bakery:build-time"
STATUS = "bakery:status"
# One build run (a uuid4 hex, fresh per build): on the AMI, its snapshots, the build
# instance and its volumes, so a failed run removes what it made and nothing else.
RUN_ID = "bakery:run-id"
FAILED_CHECKS = "bakery:failed-checks"
VERIFIED_AT = "bakery:verified-at"
# The lynis hardening index the gate measured (bakery/verify/hardening.py).
HARDENING_INDEX = "bakery:hardening-index"
COPIED_FROM = "bakery:copied-from"
COPIED_FROM_REGION = "bakery:copied-from-region"
PURPOSE = "bakery:purpose"
# On the snapshots of an AMI being deleted: its id, written before the deregister, so a
# delete that fails after it still finds them (`images.orphaned_snapshots`).
DELETING_WITH = "bakery:deleting-with"
EXPIRES_AT = "bakery:expires-at"
# On instances launched from a launch template: the environment they belong to.
ENVIRONMENT = "bakery:environment"
# One tag per environment, so promotions to several environments coexist; the value
# is when it happened (ISO 8601, UTC).
PROMOTED_PREFIX = "bakery:promoted-"
# Set on the AMI an environment was rolled back from: a second rollback skips it.
ROLLED_BACK_PREFIX = "bakery:rolled-back-"

BUILT = "built"
VERIFIED = "verified"
REJECTED = "rejected"

TEST_INSTANCE = "test-instance"

# EC2 tag values hold at most 256 characters.
MAX_VALUE = 256


def as_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """EC2's [{'Key': k, 'Value': v}] as {k: v}."""
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in tags or ()}


def as_list(tags: Mapping[str, str]) -> list[TagTypeDef]:
    """{k: v} as EC2's [{'Key': k, 'Value': v}], sorted so calls are deterministic."""
    return [{"Key": key, "Value": fit(value)} for key, value in sorted(tags.items())]


def fit(value: str) -> str:
    """A tag value cut to EC2's limit, with an ellipsis when something was cut."""
    return value if len(value) <= MAX_VALUE else value[: MAX_VALUE - 1] + "…"


def promoted_key(environment: str) -> str:
    return PROMOTED_PREFIX + environment


def rolled_back_key(environment: str) -> str:
    return ROLLED_BACK_PREFIX + environment


def promoted_environments(tags: Mapping[str, str]) -> list[str]:
    """The environments an image was promoted to, sorted."""
    return sorted(
        key.removeprefix(PROMOTED_PREFIX) for key in tags if key.startswith(PROMOTED_PREFIX)
    )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(moment: datetime) -> str:
    """A moment as the ISO 8601 UTC text bakery stores in tags, e.g. 2024-07-01T12:00:00Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime | None:
    """The moment in a bakery or EC2 timestamp, or None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
