"""Where the documented commands run: a copy of the repository's files (never the
developer's build/), with the project's virtualenv, and for AWS tasks moto's server
holding a small account of bakery images.

MOTO_AMIS_PATH must be set before moto loads its EC2 models (see tests/unit/aws).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "aws"
os.environ.setdefault("MOTO_AMIS_PATH", str(FIXTURES / "amis.json"))

import boto3  # noqa: E402
import pytest  # noqa: E402

from bakery.config import load_config  # noqa: E402

from .documented_commands import REPO_ROOT  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# Nothing a documented command runs here may reach AWS: without moto, this refuses.
NOWHERE = "http://127.0.0.1:9"
# What the test run must not hand down to the commands it runs.
DROPPED_ENV = ("AWS_", "BAKERY_", "PYTEST_", "VIRTUAL_ENV")


# --- the copy ---------------------------------------------------------------------


def repository_files() -> list[str]:
    """The files a fresh clone would have, plus new files not yet committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO_ROOT / name).exists()]


def copy_repository(target: Path) -> Path:
    """The repository's files under target, a git repository of its own (actionlint
    looks for one), with a .venv that is the project's virtualenv, already installed."""
    for name in repository_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, destination, follow_symlinks=False)
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    venv = target / ".venv"
    (venv / "bin").mkdir(parents=True)
    for program in VENV_BIN.iterdir():
        (venv / "bin" / program.name).symlink_to(program)
    # `python` finds its packages through pyvenv.cfg beside bin/, not through a symlink.
    shutil.copy2(VENV_BIN.parent / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / "lib").symlink_to(VENV_BIN.parent / "lib")
    # scripts/run reinstalls when pyproject.toml changed; here it is what the venv has.
    stamp = hashlib.sha256((target / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".bakery-installed").write_text(stamp + "\n")
    # scripts/run installs missing Debian packages as root: not from a test.
    refuse = target / ".no-install"
    refuse.mkdir()
    for program in ("apt-get", "sudo"):
        (refuse / program).write_text(
            '#!/bin/sh\necho "docs test: refusing to run $0 $*: install what scripts/run'
            ' wants by hand" >&2\nexit 1\n'
        )
        (refuse / program).chmod(0o755)
    return target


def command_env(copy: Path, endpoint: str = NOWHERE) -> dict[str, str]:
    """A reader's shell in the copy with the virtualenv active, fake AWS credentials and
    every AWS call sent to `endpoint`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV)}
    env.update(
        PATH=os.pathsep.join([str(copy / ".no-install"), str(copy / ".venv/bin"), env["PATH"]]),
        PYTHONPATH=str(copy),  # the copy's bakery, not the editable install's
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_CONFIG_FILE=str(copy / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(copy / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "repo")


# --- moto ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from aws.conftest import running_moto_server

    with running_moto_server() as url:
        yield url


@dataclass
class Account:
    """moto's account as a scene for the AWS tasks: names of what was seeded -> ids."""

    endpoint: str
    region: str
    ids: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint
            )
        return self._clients[service]

    def images(self) -> set[str]:
        found = self.client("ec2").describe_images(Owners=["self"])["Images"]
        return {image["ImageId"] for image in found}

    def parameter(self, environment: str, role: str = "backend") -> str:
        name = f"/bakery/images/{environment}/{role}/ami-id"
        value: str = self.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        return value


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str) -> str:
    """This process's boto3 (and bakery's clients) pointed at moto with fake credentials."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_endpoint


LONG_AGO = "2000-01-01T00:00:00Z"  # when the test resources a killed run left expired
# Five verified backend images, a day apart. Production got "second", then "newest" (a
# rollback goes back to "second"); staging got "second".
AGES = {"newest": 1, "second": 2, "third": 3, "fourth": 4, "oldest": 5}


def seed_account(endpoint: str, region: str) -> Account:
    """A fresh moto account in `region`: AGES's images, their releases and expired test
    resources, made the way tests/unit/aws makes them. Whatever else goes, prune keeps
    "newest" and "second" (promoted)."""
    # tests/unit is on sys.path (pytest's rootdir-relative packages): aws is that folder.
    from aws.conftest import make_image, reset_moto_server
    from aws.test_janitor import make_test_resources

    from bakery.aws.release import release

    reset_moto_server(endpoint)
    account = Account(endpoint, region)
    now = datetime.now(timezone.utc)
    for name, age in AGES.items():
        account.ids[name] = make_image(region=region, created=now - timedelta(days=age))
    cfg = load_config("backend", "aws", overrides=[f"aws.region={region}"])
    for environment, name in [("production", "second"), ("production", "newest"),
                              ("staging", "second")]:  # fmt: skip
        release(cfg, environment, account.ids[name])
    left = make_test_resources(account.client("ec2"), "bakery-verify-left", LONG_AGO)
    account.ids.update(
        left_group=left["security-group"], left_key=left["key-pair"], left_instance=left["instance"]
    )
    return account
