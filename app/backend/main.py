"""The backend HTTP service: status, health and readiness probes, and the users API.

Run on the image as `opentelemetry-instrument uvicorn main:app` from /opt/app (one
worker, no reload), or with app.workers > 1 under gunicorn with uvicorn workers
(gunicorn.conf.py). Settings come only from the environment; see database.py for the
DB_* variables and DATABASE_URL.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, TextIO

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from database import Database, DatabaseConfigError
from dependency_names import name_the_database_dependency
from models import User, UserCreate, UserOut

SERVICE_VERSION = "1.0.0"
DEFAULT_SERVICE_NAME = "bakery-backend"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# trace_id/span_id: the request's trace, so a log line leads to its trace and back
# (Application Signals' trace to log correlation). opentelemetry-instrumentation-logging
# puts them on every record when OTEL_PYTHON_LOG_CORRELATION=true (the unit sets it);
# they read 0 outside a request, and when the app runs uninstrumented.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(otelTraceID)s span_id=%(otelSpanID)s]: "
    "%(message)s"
)
TRACE_CONTEXT_FIELDS = ("otelTraceID", "otelSpanID")


class TraceContextDefaults(logging.Filter):
    """Give records the instrumentation did not touch the trace fields LOG_FORMAT uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in TRACE_CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, "0")
        return True


def configure_logging() -> None:
    """One stdout handler on the root logger, in LOG_FORMAT.

    opentelemetry-instrument sets logging up before this module is imported: with log
    correlation on, its basicConfig adds a stream handler in its own format, which would
    make a basicConfig here a no-op. Plain stream handlers are replaced so each line is
    written once, in this format; other handlers (OpenTelemetry's LoggingHandler, which
    exports records when OTEL_LOGS_EXPORTER asks for it) are kept.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    root.addHandler(log_handler(sys.stdout))
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


def log_handler(stream: TextIO) -> logging.Handler:
    """A handler writing LOG_FORMAT lines to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(TraceContextDefaults())
    return handler


configure_logging()
log = logging.getLogger("backend")
# Under opentelemetry-instrument the SDK is set up before this import: name the database
# dependency in its spans now (DATABASE_SERVICE_NAME; see dependency_names.py).
name_the_database_dependency()

# Errors that mean "the database cannot be used right now", as opposed to a bug.
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, DatabaseConfigError)


def service_name() -> str:
    return os.environ.get("SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The environment is read here rather than at import, so a fresh Database per
    # application start; it connects only when a request needs it.
    app.state.database = Database()
    log.info("%s %s starting", service_name(), SERVICE_VERSION)
    try:
        yield
    finally:
        app.state.database.dispose()


app = FastAPI(title="bakery backend", version=SERVICE_VERSION, lifespan=lifespan)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> Iterator[Session]:
    with database.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def describe_unavailable(exc: Exception) -> str:
    # Only the error's kind goes to clients: driver messages name hosts and users.
    if isinstance(exc, DatabaseConfigError):
        return "database settings are invalid"
    return f"database unreachable ({type(exc).__name__})"


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=503, content={"detail": describe_unavailable(exc)})


for _error in DATABASE_UNAVAILABLE_ERRORS:
    app.add_exception_handler(_error, database_unavailable)


def traceresponse(span_context: trace.SpanContext) -> str | None:
    """The W3C `traceresponse` header value for a span (version-traceid-spanid-flags), or
    None outside a trace. The frontend's nginx logs it beside the request's traceparent,
    so a request can be followed from the nginx access log into this trace."""
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


@app.middleware("http")
async def log_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """One line per request, written inside the request's server span, so its trace id is
    on the line. It replaces uvicorn's access log (the unit passes --no-access-log), whose
    format has no trace id. The response names that span in a `traceresponse` header."""
    started = time.perf_counter()
    response = await call_next(request)
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code, elapsed_ms)
    header = traceresponse(trace.get_current_span().get_span_context())
    if header is not None:
        response.headers["traceresponse"] = header
    return response


@app.get("/")
def status() -> dict[str, str]:
    """Which service this is and its version."""
    return {"service": service_name(), "version": SERVICE_VERSION, "status": "ok"}


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "ok"}


@app.get("/ready", response_model=None)
def ready(
    database: Annotated[Database, Depends(get_database)],
) -> dict[str, str] | JSONResponse:
    """Readiness: the database answers SELECT 1."""
    try:
        database.ping()
    except DATABASE_UNAVAILABLE_ERRORS as exc:
        log.warning("readiness check failed: %s", exc)
        return JSONResponse(
            status_code=503,
            content={"status": "unavailable", "reason": describe_unavailable(exc)},
        )
    return {"status": "ready"}


@app.post("/users", status_code=201)
def create_user(body: UserCreate, session: SessionDep) -> UserOut:
    """Add a user; 409 when the email is already taken."""
    if session.scalar(select(User.id).where(User.email == body.email)) is not None:
        raise HTTPException(status_code=409, detail="email already registered")
    user = User(name=body.name, email=body.email)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # Another request inserted the same email between the check and the commit.
        session.rollback()
        raise HTTPException(status_code=409, detail="email already registered") from None
    session.refresh(user)
    log.info("created user %d", user.id)
    return UserOut.model_validate(user)


@app.get("/users")
def list_users(
    session: SessionDep,
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> list[UserOut]:
    """Users ordered by id, `limit` (at most 100) of them after the first `skip`."""
    users = session.scalars(select(User).order_by(User.id).offset(skip).limit(limit))
    return [UserOut.model_validate(user) for user in users]


@app.get("/users/{user_id}")
def get_user(user_id: int, session: SessionDep) -> UserOut:
    """One user; 404 when there is none with this id."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="user not found")
    return UserOut.model_validate(user)


@app.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: int, session: SessionDep) -> Response:
    """Remove a user; 404 when there is none with this id."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="user not found")
    session.delete(user)
    session.commit()
    log.info("deleted user %d", user_id)
    return Response(status_code=204)


if __name__ == "__main__":
    # `python main.py`, as the original unit ran it; the image's unit runs uvicorn.
    import uvicorn

    uvicorn.run(
        app,
        host=os.environ.get("API_HOST", "0.0.0.0"),
        port=int(os.environ.get("API_PORT", "8000")),
    )
