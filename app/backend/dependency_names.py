"""The name the backend's database dependency has in Application Signals.

The AWS distro names a client span's dependency (its RemoteService) after `db.system`,
so every MySQL database shows up as `mysql`, unless the span carries `peer.service`:
in the distro's `_aws_metric_attribute_generator`, `peer.service` wins over everything
but an explicit `aws.remote.service`. DATABASE_SERVICE_NAME (the unit sets it from
config `app.database_service_name`; launch.env can override it) is put on every database
client span as `peer.service` when the span starts.

The database instrumentations set `db.system` only after a span has started, so their
spans are recognised by their instrumentation scope instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor

log = logging.getLogger(__name__)

PEER_SERVICE = "peer.service"
# The instrumentations whose client spans are calls to the database (sqlalchemy wraps
# the pymysql driver, which is also instrumented through dbapi).
DATABASE_SCOPES = frozenset(
    {
        "opentelemetry.instrumentation.sqlalchemy",
        "opentelemetry.instrumentation.pymysql",
        "opentelemetry.instrumentation.dbapi",
    }
)


class DatabaseDependencyName(SpanProcessor):
    """Sets `peer.service` on the database client spans as they start."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        is_database_call = scope is not None and scope.name in DATABASE_SCOPES
        if is_database_call and span.kind is trace.SpanKind.CLIENT:
            span.set_attribute(PEER_SERVICE, self.name)


def name_the_database_dependency(
    environ: Mapping[str, str] | None = None,
    provider: trace.TracerProvider | None = None,
) -> str | None:
    """Register DatabaseDependencyName on the tracer provider; the name it uses, or None
    when there is no name or no SDK provider (the app runs uninstrumented)."""
    env = os.environ if environ is None else environ
    name = env.get("DATABASE_SERVICE_NAME", "").strip()
    target = trace.get_tracer_provider() if provider is None else provider
    add_span_processor = getattr(target, "add_span_processor", None)
    if not name or add_span_processor is None:
        return None
    add_span_processor(DatabaseDependencyName(name))
    log.info("the database dependency is named %s (peer.service)", name)
    return name
