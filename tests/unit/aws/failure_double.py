"""A double for AWS failing part-way: botocore event hooks on every client bakery builds
(`bakery.aws.clients.aws_client`) that record each call and make one of them fail the
way AWS and the network do.

- throttled: AWS's throttling error, as botocore raises it once its retries are spent;
- denied: AccessDenied (UnauthorizedOperation on EC2); the call is not applied;
- lost-reply: a read timeout *after* AWS applied the call (an `after-call` hook), so
  the caller cannot tell whether its write happened.

Only bakery's clients are hooked: what a test arranges with its own boto3 clients is
neither recorded nor failed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import botocore.exceptions

from bakery.aws import clients

from .operations import operation_on_stack

THROTTLED = "throttled"
DENIED = "denied"
LOST_REPLY = "lost-reply"

# Operations that only read: a lost reply to one is the same as a refused one.
_READ_PREFIXES = ("Describe", "Get", "List")


@dataclass(frozen=True)
class Call:
    """One AWS API call a bakery client made."""

    service: str
    operation: str
    region: str
    request: dict[str, Any] = field(default_factory=dict, compare=False)  # as serialized
    # The multi-step operation on the caller's stack (operations.py), "" for none.
    operation_of: str = field(default="", compare=False)

    @property
    def writes(self) -> bool:
        return not self.operation.startswith(_READ_PREFIXES)

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}"


def injected_error(kind: str, call: Call) -> Exception:
    """The exception botocore raises for `kind` on `call`."""
    if kind == LOST_REPLY:
        return botocore.exceptions.ReadTimeoutError(
            endpoint_url=f"https://{call.service}.{call.region}.amazonaws.com/"
        )
    ec2 = call.service == "ec2"
    code, message = {
        THROTTLED: ("RequestLimitExceeded" if ec2 else "ThrottlingException", "Rate exceeded"),
        DENIED: (
            "UnauthorizedOperation" if ec2 else "AccessDeniedException",
            f"not authorized to perform: {call.service}:{call.operation} (injected)",
        ),
    }[kind]
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}}, call.operation
    )


@dataclass
class FailingCallsDouble:
    """Records bakery's AWS calls; fails the call number `fail_index` (0-based) with
    `kind`, or the first call of each operation in `fail_operations` (an operation
    name, or `Operation@region` for its calls in one region)."""

    fail_index: int | None = None
    kind: str = THROTTLED
    fail_operations: Collection[str] = ()
    calls: list[Call] = field(default_factory=list)
    failed: list[Call] = field(default_factory=list)
    _lost: dict[int, Call] = field(default_factory=dict)

    def _should_fail(self, index: int, call: Call) -> bool:
        if index == self.fail_index:
            return True
        names = {call.operation, f"{call.operation}@{call.region}"}
        named = names & set(self.fail_operations)
        return bool(named) and all(
            names.isdisjoint({done.operation, f"{done.operation}@{done.region}"})
            for done in self.failed
        )

    def before_call(self, call: Call, context: dict[str, Any]) -> None:
        index = len(self.calls)
        self.calls.append(call)
        if not self._should_fail(index, call):
            return
        self.failed.append(call)
        if self.kind == LOST_REPLY and call.writes:
            self._lost[id(context)] = call  # let AWS apply it; lose the reply
            return
        raise injected_error(self.kind, call)

    def after_call(self, context: dict[str, Any]) -> None:
        call = self._lost.pop(id(context), None)
        if call is not None:
            raise injected_error(LOST_REPLY, call)


_REAL_CLIENT: Callable[..., Any] = clients.aws_client
_ACTIVE: list[FailingCallsDouble] = []
# One client per service and region for every block: building one costs more than the
# calls a test makes with it, and bakery's clients keep no state between calls.
_BUILT: dict[tuple[str, str], Any] = {}


def hook_client(client: Any, service: str, region: str) -> Any:
    """Route a client's calls through the innermost active double (before anything
    else registered on it answers them, a Stubber included)."""

    def before_call(model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if _ACTIVE:
            call = Call(service, model.name, region, params, operation_on_stack())
            _ACTIVE[-1].before_call(call, context)

    def after_call(context: dict[str, Any], **_: Any) -> None:
        if _ACTIVE:
            _ACTIVE[-1].after_call(context)

    client.meta.events.register_first("before-call", before_call)
    client.meta.events.register("after-call", after_call)
    return client


def _hooked_client(service: Any, region: str) -> Any:
    """bakery's client, whose calls go through the innermost active double."""
    if (service, region) not in _BUILT:
        _BUILT[service, region] = hook_client(_REAL_CLIENT(service, region), service, region)
    return _BUILT[service, region]


@contextmanager
def fail_calls_double(
    fail_index: int | None = None,
    kind: str = THROTTLED,
    fail_at: Collection[str] = (),
) -> Iterator[FailingCallsDouble]:
    """Route every client bakery builds inside the block through a FailingCallsDouble."""
    double = FailingCallsDouble(fail_index, kind, fail_at)
    _ACTIVE.append(double)
    try:
        with mock.patch.object(clients, "aws_client", _hooked_client):
            yield double
    finally:
        _ACTIVE.remove(double)
