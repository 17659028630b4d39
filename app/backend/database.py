"""Database connection for the backend: settings from the environment, lazy engine, lazy tables.

Nothing here touches the network at import time or at startup, so the service starts
(and answers /health) while MySQL is still booting or unreachable. The engine is built
on first use and the tables are created on the first request that needs them; a
failed attempt is retried on the next request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from models import Base

log = logging.getLogger(__name__)

DEFAULT_DB_HOST = "127.0.0.1"
DEFAULT_DB_PORT = 3306
DEFAULT_DB_USER = "app"
DEFAULT_DB_NAME = "appdb"
# PyMySQL waits 10 s by default; a shorter wait keeps /ready and requests from hanging
# behind a load balancer's health-check timeout while the database is down.
MYSQL_CONNECT_TIMEOUT_SECONDS = 5


class DatabaseConfigError(ValueError):
    """The database settings in the environment cannot be turned into a URL."""


def database_url(environ: Mapping[str, str] | None = None) -> URL:
    """Build the SQLAlchemy URL from DATABASE_URL, or else from the DB_* variables."""
    env = os.environ if environ is None else environ
    override = env.get("DATABASE_URL", "").strip()
    if override:
        try:
            return make_url(override)
        except Exception as exc:
            raise DatabaseConfigError(f"DATABASE_URL is not a valid URL: {exc}") from exc
    port_text = env.get("DB_PORT", "").strip() or str(DEFAULT_DB_PORT)
    try:
        port = int(port_text)
    except ValueError as exc:
        raise DatabaseConfigError(f"DB_PORT must be a number, got {port_text!r}") from exc
    # URL.create quotes the password, so any characters a secret store hands us are safe.
    return URL.create(
        "mysql+pymysql",
        username=env.get("DB_USER", "").strip() or DEFAULT_DB_USER,
        password=env.get("DB_PASSWORD") or None,
        host=env.get("DB_HOST", "").strip() or DEFAULT_DB_HOST,
        port=port,
        database=env.get("DB_NAME", "").strip() or DEFAULT_DB_NAME,
        query={"charset": "utf8mb4"},
    )


class Database:
    """One database: its engine, built on first use, and its tables, created on first use."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._engine: Engine | None = None
        self._tables_ready = False
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine, created on first access (this does not connect)."""
        with self._lock:
            if self._engine is None:
                url = database_url(self._environ)
                connect_args: dict[str, object] = {}
                if url.get_backend_name() == "mysql":
                    connect_args["connect_timeout"] = MYSQL_CONNECT_TIMEOUT_SECONDS
                try:
                    self._engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
                except (ArgumentError, ImportError) as exc:
                    # An unknown dialect or a missing driver in DATABASE_URL.
                    raise DatabaseConfigError(f"cannot use {url.drivername}: {exc}") from exc
                log.info(
                    "database engine created for %s",
                    url.render_as_string(hide_password=True),
                )
            return self._engine

    def ensure_tables(self) -> None:
        """Create the tables once; on failure raise, so the next call tries again."""
        if self._tables_ready:
            return
        engine = self.engine
        with self._lock:
            if not self._tables_ready:
                Base.metadata.create_all(engine)
                self._tables_ready = True
                log.info("database tables are in place")

    def ping(self) -> None:
        """Run SELECT 1; raise if the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on a database whose tables exist."""
        self.ensure_tables()
        with Session(self.engine) as session:
            yield session

    def dispose(self) -> None:
        """Close pooled connections (at shutdown)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
