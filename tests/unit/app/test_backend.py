"""Behaviour of the backend service (app/backend) against SQLite, and of a missing database."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

import database
import main

# A MySQL URL on a port where nothing listens: connecting fails at once.
UNREACHABLE_MYSQL_URL = "mysql+pymysql://app:secret@127.0.0.1:1/appdb"


def make_client(monkeypatch: pytest.MonkeyPatch, url: str) -> TestClient:
    monkeypatch.setenv("DATABASE_URL", url)
    return TestClient(main.app)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client on a fresh SQLite database of its own."""
    with make_client(monkeypatch, f"sqlite:///{tmp_path / 'app.db'}") as test_client:
        yield test_client


@pytest.fixture
def offline_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client whose database cannot be reached."""
    with make_client(monkeypatch, UNREACHABLE_MYSQL_URL) as test_client:
        yield test_client


def add_user(client: TestClient, name: str, email: str) -> dict[str, object]:
    response = client.post("/users", json={"name": name, "email": email})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.fixture
def app_log() -> Iterator[io.StringIO]:
    """What the app logs, in the format of its log file."""
    stream = io.StringIO()
    handler = main.log_handler(stream)
    logging.getLogger().addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


# --- log lines and their trace ids ----------------------------------------------------


def test_each_request_is_logged_once_with_method_path_and_status(
    client: TestClient, app_log: io.StringIO
) -> None:
    client.get("/health")
    client.get("/users/12345")
    lines = [line for line in app_log.getvalue().splitlines() if " backend " in line]
    assert [line.split("]: ", 1)[1].rsplit(" ", 1)[0] for line in lines] == [
        "GET /health 200",
        "GET /users/12345 404",
    ]


def test_log_lines_read_trace_id_0_when_the_app_runs_uninstrumented(
    client: TestClient, app_log: io.StringIO
) -> None:
    client.get("/health")
    assert "[trace_id=0 span_id=0]: GET /health 200" in app_log.getvalue()


def test_log_lines_carry_the_trace_context_the_logging_instrumentation_sets(
    app_log: io.StringIO,
) -> None:
    # opentelemetry-instrumentation-logging (OTEL_PYTHON_LOG_CORRELATION=true) sets these
    # attributes on every record; the format prints them where the gate looks for them.
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    main.log.info("hello", extra={"otelTraceID": trace_id, "otelSpanID": span_id})
    assert f"[trace_id={trace_id} span_id={span_id}]: hello" in app_log.getvalue()


def test_configure_logging_replaces_plain_stream_handlers_and_keeps_others() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    plain = logging.StreamHandler(io.StringIO())  # as the instrumentation's basicConfig adds
    other = logging.NullHandler()  # stands for OpenTelemetry's LoggingHandler
    try:
        root.handlers = [plain, other]
        main.configure_logging()
        assert plain not in root.handlers
        assert other in root.handlers
        [ours] = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
        assert ours.formatter is not None and ours.formatter._fmt == main.LOG_FORMAT
    finally:
        root.handlers = saved


# --- status and probes -------------------------------------------------------------


def test_status_names_service_and_version(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_NAME", "shop-backend")
    body = client.get("/").json()
    assert body["service"] == "shop-backend"
    assert body["version"] == main.SERVICE_VERSION


def test_status_has_default_service_name(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERVICE_NAME", raising=False)
    assert client.get("/").json()["service"] == main.DEFAULT_SERVICE_NAME


def test_health_is_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_answers(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_health_is_ok_while_database_is_unreachable(offline_client: TestClient) -> None:
    assert offline_client.get("/health").status_code == 200
    assert offline_client.get("/").status_code == 200


def test_ready_is_503_with_reason_while_database_is_unreachable(
    offline_client: TestClient,
) -> None:
    response = offline_client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "unreachable" in body["reason"]
    # The driver's message names the host and user; clients must not see it.
    assert "127.0.0.1" not in response.text
    assert "secret" not in response.text


def test_users_api_is_503_while_database_is_unreachable(
    offline_client: TestClient,
) -> None:
    assert offline_client.get("/users").status_code == 503
    assert offline_client.get("/users/1").status_code == 503
    response = offline_client.post("/users", json={"name": "A", "email": "a@example.com"})
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_ready_is_503_when_database_settings_are_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DB_PORT", "not-a-port")
    with TestClient(main.app) as offline:
        assert offline.get("/health").status_code == 200
        response = offline.get("/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "database settings are invalid"


def test_tables_are_created_once_the_database_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite cannot open a file in a missing folder: the database is "down" until the
    # folder exists, and the first request after that creates the tables.
    data_dir = tmp_path / "later"
    with make_client(monkeypatch, f"sqlite:///{data_dir / 'app.db'}") as test_client:
        assert test_client.get("/users").status_code == 503
        data_dir.mkdir()
        assert test_client.get("/users").json() == []
        add_user(test_client, "Ada", "ada@example.com")
        assert len(test_client.get("/users").json()) == 1


# --- users API -----------------------------------------------------------------------


def test_create_user_returns_201_with_id(client: TestClient) -> None:
    response = client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    assert response.status_code == 201
    body = response.json()
    assert isinstance(body["id"], int)
    assert body["name"] == "Ada"
    assert body["email"] == "ada@example.com"
    assert datetime.fromisoformat(body["created_at"]).utcoffset() == timedelta(0)


def test_create_user_with_taken_email_is_409(client: TestClient) -> None:
    add_user(client, "Ada", "ada@example.com")
    response = client.post("/users", json={"name": "Other", "email": "ada@example.com"})
    assert response.status_code == 409
    assert response.json()["detail"] == "email already registered"


def test_create_user_email_is_unique_regardless_of_case(client: TestClient) -> None:
    add_user(client, "Ada", "Ada@Example.com")
    response = client.post("/users", json={"name": "Ada", "email": "ada@example.COM"})
    assert response.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Ada"},
        {"email": "ada@example.com"},
        {"name": "", "email": "ada@example.com"},
        {"name": "   ", "email": "ada@example.com"},
        {"name": "x" * 101, "email": "ada@example.com"},
        {"name": "Ada", "email": "not-an-email"},
        {"name": "Ada", "email": "a@" + "x" * 260},
        {"name": 5, "email": "ada@example.com"},
    ],
)
def test_create_user_with_invalid_body_is_422(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/users", json=body).status_code == 422


def test_get_user_returns_the_user(client: TestClient) -> None:
    created = add_user(client, "Ada", "ada@example.com")
    response = client.get(f"/users/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


def test_get_missing_user_is_404(client: TestClient) -> None:
    response = client.get("/users/999")
    assert response.status_code == 404
    assert response.json()["detail"] == "user not found"


def test_get_user_with_non_numeric_id_is_422(client: TestClient) -> None:
    assert client.get("/users/abc").status_code == 422


def test_delete_user_is_204_and_removes_it(client: TestClient) -> None:
    created = add_user(client, "Ada", "ada@example.com")
    response = client.delete(f"/users/{created['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/users/{created['id']}").status_code == 404
    # The email is free again.
    add_user(client, "Ada", "ada@example.com")


def test_delete_missing_user_is_404(client: TestClient) -> None:
    assert client.delete("/users/999").status_code == 404


def test_each_test_starts_with_an_empty_database(client: TestClient) -> None:
    assert client.get("/users").json() == []


def test_list_users_pages_in_id_order(client: TestClient) -> None:
    ids = [add_user(client, f"User {n}", f"user{n}@example.com")["id"] for n in range(5)]
    assert [u["id"] for u in client.get("/users").json()] == ids
    page = client.get("/users", params={"skip": 1, "limit": 2}).json()
    assert [u["id"] for u in page] == ids[1:3]
    assert client.get("/users", params={"skip": 5}).json() == []


def test_list_users_default_page_size(client: TestClient) -> None:
    for n in range(main.DEFAULT_PAGE_SIZE + 1):
        add_user(client, f"User {n}", f"user{n}@example.com")
    assert len(client.get("/users").json()) == main.DEFAULT_PAGE_SIZE


@pytest.mark.parametrize("limit", [1, main.MAX_PAGE_SIZE])
def test_list_users_accepts_limit_within_bounds(client: TestClient, limit: int) -> None:
    assert client.get("/users", params={"limit": limit}).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": main.MAX_PAGE_SIZE + 1},
        {"limit": -1},
        {"skip": -1},
        {"limit": "many"},
    ],
)
def test_list_users_rejects_out_of_bounds_paging(
    client: TestClient, params: dict[str, object]
) -> None:
    assert client.get("/users", params=params).status_code == 422


# --- settings ------------------------------------------------------------------------


def test_database_url_defaults() -> None:
    url = database.database_url({})
    assert url.drivername == "mysql+pymysql"
    assert url.host == "127.0.0.1"
    assert url.port == 3306
    assert url.username == "app"
    assert url.password is None
    assert url.database == "appdb"


def test_database_url_from_db_variables_keeps_password_intact() -> None:
    password = "p@ss:w/rd?#%"
    url = database.database_url(
        {
            "DB_HOST": "db.internal",
            "DB_PORT": "3307",
            "DB_USER": "shop",
            "DB_PASSWORD": password,
            "DB_NAME": "shopdb",
        }
    )
    assert (url.host, url.port, url.username, url.database) == (
        "db.internal",
        3307,
        "shop",
        "shopdb",
    )
    assert url.password == password
    # The password survives a round trip through the URL string.
    rendered = url.render_as_string(hide_password=False)
    assert database.database_url({"DATABASE_URL": rendered}).password == password


def test_database_url_override_wins_over_db_variables() -> None:
    url = database.database_url({"DATABASE_URL": "sqlite:///tmp/x.db", "DB_HOST": "db.internal"})
    assert url.drivername == "sqlite"


def test_database_url_rejects_non_numeric_port() -> None:
    with pytest.raises(database.DatabaseConfigError, match="DB_PORT"):
        database.database_url({"DB_PORT": "abc"})


def test_database_does_not_connect_until_used() -> None:
    db = database.Database({"DATABASE_URL": UNREACHABLE_MYSQL_URL})
    assert db.engine is db.engine  # built once, and building it does not connect
    with pytest.raises(OperationalError):
        db.ping()
    db.dispose()


# --- frontend ------------------------------------------------------------------------

FRONTEND_DIR = Path(__file__).resolve().parents[3] / "app" / "frontend"


def frontend_sources() -> list[Path]:
    return sorted(
        path for path in FRONTEND_DIR.iterdir() if path.suffix in {".html", ".js", ".css"}
    )


def test_frontend_uses_no_absolute_urls() -> None:
    sources = frontend_sources()
    assert FRONTEND_DIR / "index.html" in sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} has an absolute URL"
        assert not re.search(r"""["'(`]//""", text), f"{path.name} has a //host URL"


def test_frontend_calls_the_backend_only_under_api() -> None:
    # Every root-relative string in the scripts is a backend call through nginx.
    paths = []
    for path in frontend_sources():
        if path.suffix == ".js":
            text = path.read_text(encoding="utf-8")
            paths += re.findall(r"""[`'"](/[^`'"]*)""", text)
    assert "/api/users" in paths
    assert all(p.startswith("/api/") for p in paths), paths


# Served by nginx from a file written at boot, not shipped with the page: the CloudWatch
# RUM snippet (write-rum-snippet; nginx's `location = /rum.js`).
WRITTEN_AT_BOOT = {"rum.js"}
SITE_CONFIG = FRONTEND_DIR.parents[1] / "rootfs/frontend/etc/nginx/conf.d/bakery.conf"


def test_frontend_page_loads_only_local_files() -> None:
    html = (FRONTEND_DIR / "index.html").read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert refs
    site = SITE_CONFIG.read_text(encoding="utf-8")
    for ref in refs:
        if ref in WRITTEN_AT_BOOT:
            assert f"location = /{ref} {{" in site, f"nginx does not serve {ref}"
        else:
            assert (FRONTEND_DIR / ref).is_file(), f"index.html refers to missing {ref}"
