"""The original three-instance system, end to end, from the images alone."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

import pytest

from tests.doubles.cloudwatch_agent.received import attributes_dict, decode_received
from tests.smoke.conftest import DATABASE_B, ThreeTier

pytestmark = pytest.mark.slow
RECEIVED = "/opt/aws/amazon-cloudwatch-agent/var/testdouble/received/traces"


def _call(tier: ThreeTier, method: str, path: str, body: dict[str, Any] | None = None,
          attempts: int = 60) -> tuple[int, Any]:  # fmt: skip
    """An HTTP call through the frontend's nginx, retried while the tiers settle."""
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://127.0.0.1:{tier.frontend_http_port}{path}"
    last: Exception | None = None
    for _ in range(attempts):
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            if error.code not in (502, 503, 504):
                return error.code, None
            last = error
        except OSError as error:
            last = error
        time.sleep(3)
    raise AssertionError(f"{method} {path} never answered: {last}")


def _spans(tier: ThreeTier, tmp_path: Any) -> list[Any]:
    listing = tier.backend.ssh(
        f"sudo sh -c 'for f in {RECEIVED}/*.pb; do base64 -w0 $f; echo; done'"
    )
    folder = tmp_path / "traces"
    folder.mkdir(exist_ok=True)
    for index, line in enumerate(listing.stdout.split()):
        (folder / f"{index:05d}.pb").write_bytes(base64.b64decode(line))
    return decode_received(folder, "traces")


def _mysql_spans(requests: list[Any], service_name: str) -> list[dict[str, Any]]:
    """Attributes (plus the span name) of the MySQL client spans of one service."""
    found = []
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = attributes_dict(resource_spans.resource.attributes)
            if resource.get("service.name") != service_name:
                continue
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = attributes_dict(span.attributes)
                    if attributes.get("db.system") == "mysql":
                        found.append(attributes | {"name": span.name})
    return found


def test_users_round_trip_through_all_three_tiers(three_tier: ThreeTier, tmp_path: Any) -> None:
    status, created = _call(three_tier, "POST", "/api/users",
                            {"name": "Ada", "email": "ada@example.com"})  # fmt: skip
    assert status == 201, created
    user_id = created["id"]
    status, listed = _call(three_tier, "GET", "/api/users")
    assert status == 200 and any(user["id"] == user_id for user in listed)
    status, fetched = _call(three_tier, "GET", f"/api/users/{user_id}")
    assert status == 200 and fetched["email"] == "ada@example.com"
    status, _ = _call(three_tier, "DELETE", f"/api/users/{user_id}")
    assert status == 204
    status, _ = _call(three_tier, "GET", f"/api/users/{user_id}", attempts=1)
    assert status == 404

    # The backend's trace of the create call holds a MySQL client span to the database.
    deadline = time.monotonic() + 90
    db_spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not db_spans:
        time.sleep(5)
        db_spans = _mysql_spans(_spans(three_tier, tmp_path), three_tier.service_name)
    assert db_spans, "no database client span reached the agent"
    assert any("INSERT" in str(span.get("db.statement", span["name"])) for span in db_spans)
    peers = {str(span.get("net.peer.name") or span.get("server.address")) for span in db_spans}
    assert DATABASE_B in peers
