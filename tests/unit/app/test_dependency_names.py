"""The database dependency's name, with the real OpenTelemetry SDK and the real PyMySQL
instrumentation (SQLite standing in for MySQL behind it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.instrumentation.pymysql import PyMySQLInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dependency_names import PEER_SERVICE, name_the_database_dependency

Query = Callable[[TracerProvider], None]


def query_through_pymysql_instrumentation(provider: TracerProvider) -> None:
    # The instrumentation that makes the image's database spans: sqlalchemy's is skipped
    # there (its 0.65b0 wants sqlalchemy < 2.1; the app pins 2.1). Its DB-API wrapper
    # takes any connection, so SQLite stands in for a MySQL server.
    connection = PyMySQLInstrumentor().instrument_connection(
        sqlite3.connect(":memory:"), tracer_provider=provider
    )
    connection.cursor().execute("SELECT 1")


def spans_of(query: Query, provider: TracerProvider) -> list[ReadableSpan]:
    """Run `query` inside a server span of `provider`; every span that made."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-server")
    with tracer.start_as_current_span("GET /users", kind=trace.SpanKind.SERVER):
        query(provider)
    return list(exporter.get_finished_spans())


def database_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if (span.attributes or {}).get("db.system")]


def test_database_client_spans_carry_the_configured_name() -> None:
    provider = TracerProvider()
    named = name_the_database_dependency({"DATABASE_SERVICE_NAME": "orders-db"}, provider)
    assert named == "orders-db"
    spans = spans_of(query_through_pymysql_instrumentation, provider)
    found = database_spans(spans)
    assert found, [span.name for span in spans]
    assert all(span.kind is trace.SpanKind.CLIENT for span in found)
    assert {(span.attributes or {}).get(PEER_SERVICE) for span in found} == {"orders-db"}


def test_other_spans_are_left_alone() -> None:
    provider = TracerProvider()
    name_the_database_dependency({"DATABASE_SERVICE_NAME": "orders-db"}, provider)
    spans = spans_of(query_through_pymysql_instrumentation, provider)
    [server] = [span for span in spans if span.name == "GET /users"]
    assert PEER_SERVICE not in (server.attributes or {})


def test_without_a_name_the_spans_keep_the_distros_default() -> None:
    provider = TracerProvider()
    assert name_the_database_dependency({"DATABASE_SERVICE_NAME": " "}, provider) is None
    spans = spans_of(query_through_pymysql_instrumentation, provider)
    assert database_spans(spans)
    assert all(PEER_SERVICE not in (span.attributes or {}) for span in spans)


def test_an_uninstrumented_app_registers_nothing() -> None:
    # The app's tests run uninstrumented: the global provider is the API's proxy.
    assert not hasattr(trace.get_tracer_provider(), "add_span_processor")
    assert name_the_database_dependency({"DATABASE_SERVICE_NAME": "orders-db"}) is None
