"""Options, expected values and role selection for the image checks in tests/infra.

    python -m pytest tests/infra -p no:cacheprovider --hosts=ssh://admin@127.0.0.1:PORT \
        --ssh-config=FILE --bakery-role=backend --bakery-expect=expect.json

Each module says which roles it checks (`ROLES = {"backend"}` or `ROLES = ALL`), a test
can narrow that with `@pytest.mark.roles(...)`, and tests for other roles are deselected
at collection. The expect file (README.md) holds the values the instance was launched
with; its keys are checked here, before any test runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from roles import ALL
from testinfra.backend.ssh import SshBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
# received.py is imported as tests.doubles.cloudwatch_agent.received.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

INFRA_DIR = Path(__file__).resolve().parent

# What the expect file must hold, for every role and for each role's own checks.
EXPECT_KEYS: dict[str, tuple[str, ...]] = {
    "all": ("role", "target", "log_group", "agent_min_version", "agent_package"),
    "backend": (
        "service_name",
        "deployment_environment",
        "app_user",
        "app_dir",
        "app_port",
        "distro_version",
        "max_exposure",
        "telemetry",
    ),
    "frontend": ("backend_url",),
    "database": ("db_name", "db_user", "db_password"),
}
TARGETS = ("local", "aws")
AGENT_PACKAGES = ("test-double", "official")
EXPECT = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bakery", "bakery image checks (tests/infra)")
    group.addoption(
        "--bakery-role",
        choices=sorted(ALL),
        default=os.environ.get("BAKERY_ROLE"),
        help="the image's role: only its checks run (default: $BAKERY_ROLE)",
    )
    group.addoption(
        "--bakery-expect",
        default=os.environ.get("BAKERY_EXPECT"),
        help="JSON file of the values the instance was launched with, see tests/infra/"
        "README.md (default: $BAKERY_EXPECT)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "roles(*names): the roles a test applies to")


def load_expect(path: str | None, role: str | None) -> dict[str, Any]:
    """The expect file, refused unless it has every key the role's checks read."""
    if not role or not path:
        raise pytest.UsageError(
            "tests/infra needs --bakery-role and --bakery-expect (see tests/infra/README.md)"
        )
    try:
        expect = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--bakery-expect {path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(expect, dict):
        raise pytest.UsageError(f"--bakery-expect {path}: must hold a JSON object")
    missing = [key for key in (*EXPECT_KEYS["all"], *EXPECT_KEYS[role]) if key not in expect]
    if missing:
        raise pytest.UsageError(f"--bakery-expect {path} lacks {', '.join(missing)}")
    if expect["role"] != role:
        raise pytest.UsageError(f"--bakery-expect is for {expect['role']}, not {role}")
    if expect["target"] not in TARGETS or expect["agent_package"] not in AGENT_PACKAGES:
        raise pytest.UsageError(
            f"--bakery-expect: target must be one of {TARGETS}, agent_package one of "
            f"{AGENT_PACKAGES}"
        )
    return expect


def item_roles(item: pytest.Item) -> frozenset[str]:
    marker = item.get_closest_marker("roles")
    if marker is not None:
        return frozenset(marker.args)
    roles = getattr(getattr(item, "module", None), "ROLES", None)
    if roles is None:
        raise pytest.UsageError(f"{item.nodeid}: its module declares no ROLES")
    return frozenset(roles)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the checks of other roles (only for items under tests/infra)."""
    infra = [item for item in items if INFRA_DIR in Path(str(item.path)).parents]
    if not infra:
        return
    role = config.getoption("--bakery-role")
    config.stash[EXPECT] = load_expect(config.getoption("--bakery-expect"), role)
    deselected = [item for item in infra if role not in item_roles(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="session")
def expect(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The launch-time and build values the instance must show (README.md)."""
    return pytestconfig.stash[EXPECT]


@pytest.fixture(scope="session")
def role(expect: dict[str, Any]) -> str:
    return str(expect["role"])


@pytest.fixture(scope="session")
def ssh_control_dir() -> Iterator[Path]:
    """One SSH connection for all checks, not one per command: each new handshake costs
    about a second against a VM under TCG. Closed at the end of the session."""
    folder = Path(tempfile.mkdtemp(prefix="bakery-infra-"))
    yield folder
    for socket_path in folder.glob("*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "bakery-infra"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def host(_testinfra_host: Any, ssh_control_dir: Path) -> Any:
    """testinfra's host, sharing one SSH master connection when the backend is ssh."""
    backend = _testinfra_host.backend
    if isinstance(backend, SshBackend) and not backend.controlpath:
        backend.controlpath = str(ssh_control_dir / "master")
    return _testinfra_host
