"""gunicorn settings for `app.workers` > 1; fastapi-otel.service passes the worker class,
the worker count and the bind address on its command line.

With OTEL_AWS_PYTHON_DEFER_TO_WORKERS_ENABLED=true (the unit sets it) the AWS distro
skips the OpenTelemetry SDK in gunicorn's master process, which serves no requests: an
SDK set up before fork would leave each worker with exporter threads that did not
survive the fork. The hook below sets the SDK up again in each worker, where the distro
now sees a worker (aws_opentelemetry_configurator: _is_wsgi_master_process).
"""

from __future__ import annotations

from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
