"""A pytest plugin that records every AWS request moto serves, for the IAM tests.

Two ways in: `-p tests.unit.aws.call_recorder` with BAKERY_RECORD_AWS_CALLS=FILE (what
test_iam_evaluated.py runs in a subprocess), or, registered by this folder's conftest,
by itself when one session runs both the IAM tests and every module in
RECORDED_MODULES: then it records into a temporary file, runs the IAM tests last and
tells them the file (BAKERY_RECORDED_AWS_CALLS), so the moto runs happen once. It wraps
moto's request dispatch (`BaseResponse.call_action`), which serves both the in-process
mock and the threaded server that Packer talks to, and writes one JSON line per request:
the test, the multi-step operation it belongs to (operations.py), service, action,
region, account, the request's parameters, and the tags that
each EC2 resource named in the request had at that moment (what `aws:ResourceTag`
evaluates against). Nothing is recorded unless the variable is set.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .operations import operation_on_stack

RECORD_ENV = "BAKERY_RECORD_AWS_CALLS"
# A finished recording the IAM tests read instead of making their own.
RECORDED_ENV = "BAKERY_RECORDED_AWS_CALLS"
# The modules whose moto runs exercise every AWS operation bakery has, and Packer's.
RECORDED_MODULES = (
    "test_arch.py",
    "test_build.py",
    "test_canary.py",
    "test_distribute.py",
    "test_end_to_end.py",
    "test_images.py",
    "test_janitor.py",
    "test_launch.py",
    "test_network.py",
    "test_prune.py",
    "test_release.py",
    "test_slo.py",
    "test_verify.py",
)
IAM_TESTS = "test_iam_evaluated.py"
_FOLDER = "tests/unit/aws/"
# EC2 ids that can appear as request parameters and carry tags.
_EC2_ID = re.compile(r"^(i|ami|snap|vol|sg|key|subnet|vpc|eni|lt)-[0-9a-f]+$")

ORIGIN_HEADER = "X-Bakery-Test-Origin"
_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
_BAKERY = os.path.join(_REPO, "bakery") + os.sep

_current_test = {"id": ""}


def _origin() -> str:
    """`bakery` when the nearest caller in this repository is bakery's own code, else
    `test` (a test's own set-up or assertion)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if (
            name.startswith(_REPO + os.sep)
            and name != __file__
            and f"{os.sep}.venv{os.sep}" not in name
        ):
            return "bakery" if name.startswith(_BAKERY) else "test"
        frame = frame.f_back  # type: ignore[assignment]
    return "test"


def _parameters(response: Any) -> dict[str, Any]:
    """The request's parameters: the query string for EC2 (Query protocol, as Packer's
    SDK and botocore send it), the JSON body for JSON-protocol services such as SSM."""
    query = {
        key: values[0] if len(values) == 1 else values
        for key, values in response.querystring.items()
    }
    query.pop("Action", None)
    query.pop("Version", None)
    body = getattr(response, "body", b"") or b""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body.startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            query.update(parsed)
    return query


def _ec2_tags(account: str, region: str, parameters: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{resource id: its tags now} for each EC2 id (or key pair name) in the request:
    none for a security group or key pair that no longer exists."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    found: dict[str, dict[str, str]] = {}
    values: list[str] = []
    for value in parameters.values():
        values.extend(value if isinstance(value, list) else [value])
    for value in values:
        if not isinstance(value, str):
            continue
        if _EC2_ID.match(value):
            found[value] = dict(backend.tags.get(value, {}))
        if value.startswith("sg-") and backend.get_security_group_from_id(value) is None:
            # moto keeps a deleted group's tags; IAM sees none on a group that is gone.
            found[value] = {}
    for key, value in parameters.items():
        if key == "KeyName" and isinstance(value, str) and value in backend.key_pairs:
            pair = backend.key_pairs[value]
            found[value] = dict(backend.tags.get(pair.id, {}))
    return found


def _alarm_tags(account: str, region: str, parameters: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{alarm name: its tags now} for each alarm a CloudWatch request names (read before
    moto acts, so a deleted alarm's tags are the ones IAM would see)."""
    from moto.cloudwatch.models import cloudwatch_backends

    backend = cloudwatch_backends[account][region]
    names = parameters.get("AlarmNames") or []
    found: dict[str, dict[str, str]] = {}
    for name in names if isinstance(names, list) else [names]:
        alarm = backend.alarms.get(name)
        if alarm is not None:
            found[name] = dict(backend.tagger.get_tag_dict_for_resource(alarm.alarm_arn))
    return found


def _record(response: Any) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path or not _current_test["id"].startswith(_FOLDER):
        return  # not recording, or a request of another folder's tests (or subprocesses)
    try:
        action = response._get_action()
    except Exception:  # a request moto cannot name is moto's to refuse, not ours
        return
    parameters = _parameters(response)
    region = response.region
    account = response.current_account
    tags = _ec2_tags(account, region, parameters) if response.service_name == "ec2" else {}
    if response.service_name == "cloudwatch":
        tags = _alarm_tags(account, region, parameters)
    headers = getattr(response, "headers", {}) or {}
    origin = headers.get(ORIGIN_HEADER)
    if origin is None:
        agent = headers.get("User-Agent", "")
        origin = "packer" if "aws-sdk-go" in agent else f"unknown:{agent}"
    line = {
        "operation": operation_on_stack() if origin == "bakery" else "",
        "origin": origin,
        "test": _current_test["id"],
        "service": response.service_name,
        "action": action,
        "region": region,
        "account": account,
        "parameters": parameters,
        "tags": tags,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")


_installed = {"done": False}
_made_here = {"path": ""}


def install() -> None:
    """Wrap moto's dispatch (to record) and botocore's requests (to mark who calls)."""
    if _installed["done"]:
        return
    _installed["done"] = True
    from moto.core.responses import BaseResponse

    original = BaseResponse.call_action

    def recording_call_action(self: BaseResponse) -> Any:
        _record(self)
        return original(self)

    BaseResponse.call_action = recording_call_action  # type: ignore[method-assign]

    from botocore.endpoint import Endpoint

    make_request = Endpoint.make_request

    def marking_make_request(self: Endpoint, operation_model: Any, request_dict: Any) -> Any:
        request_dict.setdefault("headers", {})[ORIGIN_HEADER] = _origin()
        return make_request(self, operation_model, request_dict)

    Endpoint.make_request = marking_make_request  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(RECORD_ENV):
        install()


def _reads_the_recording(item: pytest.Item) -> bool:
    return "recorded_calls" in getattr(item, "fixturenames", ())


# The modules whose tests read the recording (the `recorded_calls` fixture); a reader
# elsewhere is refused when collected (pytest_collection_finish), so this stays true.
READER_MODULES = (IAM_TESTS, "test_interrupted_operations.py")


def shares_the_recording(nodeid: str) -> bool:
    """Whether the test `nodeid` must run in the process that records: `invoke test`
    spreads the unit suite over the host's cores (pytest-xdist), and the recorded
    modules and the readers' modules go to one worker (tests/unit/conftest.py)."""
    path = nodeid.split("::")[0]
    return path.startswith(_FOLDER) and Path(path).name in (*RECORDED_MODULES, *READER_MODULES)


@pytest.hookimpl(tryfirst=True)  # before an xdist worker reports its order of tests
def pytest_collection_finish(session: pytest.Session) -> None:
    """Record in this session when it runs the tests that read the recording (the IAM
    tests, the failure matrix's audit) and every recorded module; those tests run last."""
    if os.environ.get(RECORD_ENV) or os.environ.get(RECORDED_ENV):
        return
    modules = {Path(item.nodeid.split("::")[0]).name for item in session.items}
    readers = [item for item in session.items if _reads_the_recording(item)]
    stray = [item.nodeid for item in readers if not shares_the_recording(item.nodeid)]
    if stray:
        raise pytest.UsageError(
            f"{stray[0]} reads the AWS call recording, but its module is not in "
            "READER_MODULES (tests/unit/aws/call_recorder.py): add it, so that under "
            "pytest-xdist it runs in the worker that records"
        )
    if not readers or not modules >= set(RECORDED_MODULES):
        return
    handle, path = tempfile.mkstemp(prefix="bakery-aws-calls-", suffix=".jsonl")
    os.close(handle)
    _made_here["path"] = path
    os.environ[RECORD_ENV] = path
    os.environ[RECORDED_ENV] = path
    install()
    # The IAM module whole (its other tests too), then every other reader.
    late = [item for item in session.items if item.nodeid.split("::")[0].endswith(IAM_TESTS)]
    late += [item for item in readers if item not in late]
    session.items[:] = [item for item in session.items if item not in late] + late


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _current_test["id"] = item.nodeid
    try:
        return (yield)
    finally:
        _current_test["id"] = ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _made_here["path"]:
        Path(_made_here["path"]).unlink(missing_ok=True)
        os.environ.pop(RECORD_ENV, None)
        os.environ.pop(RECORDED_ENV, None)
