"""The backend's `traceresponse` header: the W3C form of the request's server span, which
the frontend's nginx logs so a request can be followed from nginx into the backend trace."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import main


def test_header_names_the_span_in_w3c_form() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("GET /users", kind=trace.SpanKind.SERVER) as span:
        context = span.get_span_context()
        header = main.traceresponse(context)
        # The SDK's own traceparent for the same span reads the same.
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    assert header == carrier["traceparent"]
    assert header.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert int(header[-2:], 16) & 0x01  # sampled


def test_unsampled_span_says_so_in_its_flags() -> None:
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with tracer.start_as_current_span("GET /users") as span:
        header = main.traceresponse(span.get_span_context())
    assert header is not None
    assert not int(header[-2:], 16) & 0x01  # not sampled


def test_no_header_outside_a_trace() -> None:
    assert main.traceresponse(trace.INVALID_SPAN_CONTEXT) is None
    # The app's tests run uninstrumented: no server span, so no header.
    with TestClient(main.app) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert "traceresponse" not in response.headers
