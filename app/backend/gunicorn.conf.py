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

# gunicorn kills a worker that has not checked in for `timeout` seconds, and a new worker
# first checks in after post_fork (the SDK set-up below) and the app's import
# (gunicorn/arbiter.py murder_workers, workers/base.py init_process). On a small or
# emulated host that start-up can pass the 30 s default, and the workers are then killed
# and restarted in a loop before serving anything.
timeout = 120


def post_fork(server: Any, worker: Any) -> None:
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
