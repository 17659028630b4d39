"""Decode what the CloudWatch agent test double received over OTLP/HTTP.

Owns the host side of the double's storage format: the server keeps each request body as
`var/testdouble/received/<signal>/<counter>-<time>.pb` (counter first, so names sort by
arrival). Verification copies such a folder off the image and uses `decode_received` and
`resource_attributes` to prove spans carry `service.name` and `deployment.environment`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

ExportRequest = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest

REQUEST_TYPES: dict[str, type[ExportRequest]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}


class ReceivedDataError(Exception):
    """A stored body is not the OTLP request its folder says it is."""


def decode_received(directory: Path, signal: str | None = None) -> list[ExportRequest]:
    """Decode every stored request in a signal folder, oldest first.

    `signal` (traces, metrics or logs) defaults to the folder's name, as the server names it.
    A missing folder means nothing was received, and gives an empty list.
    """
    name = signal or directory.name
    request_type = REQUEST_TYPES.get(name)
    if request_type is None:
        raise ValueError(f"unknown OTLP signal {name!r}: expected one of {sorted(REQUEST_TYPES)}")
    if not directory.is_dir():
        return []
    requests: list[ExportRequest] = []
    for path in sorted(directory.glob("*.pb")):
        request = request_type()
        try:
            request.ParseFromString(path.read_bytes())
        except DecodeError as exc:
            raise ReceivedDataError(f"{path} is not an OTLP {name} request: {exc}") from exc
        requests.append(request)
    return requests


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue (lists and dicts for arrays and kvlists)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: any_value(attribute.value) for attribute in attributes}


def resource_attributes(requests: Sequence[ExportRequest]) -> list[dict[str, Any]]:
    """The resource attributes of every resource in the requests, in order.

    For example `{"service.name": "backend", "deployment.environment": "dev", ...}`.
    """
    found: list[dict[str, Any]] = []
    for request in requests:
        if isinstance(request, ExportTraceServiceRequest):
            resources = [item.resource for item in request.resource_spans]
        elif isinstance(request, ExportMetricsServiceRequest):
            resources = [item.resource for item in request.resource_metrics]
        else:
            resources = [item.resource for item in request.resource_logs]
        found.extend(attributes_dict(resource.attributes) for resource in resources)
    return found
