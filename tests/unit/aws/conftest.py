"""Fixtures for the AWS tests: moto in-process, our own small AMI catalogue, configs.

MOTO_AMIS_PATH must be set before moto loads its EC2 models, so it is set here, at
import time, before anything imports moto. Nothing in these tests reaches AWS: the
credentials are fake, and what moto does not implement is answered by botocore's
Stubber in the test that needs it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "aws"
os.environ["MOTO_AMIS_PATH"] = str(FIXTURES / "amis.json")

import boto3  # noqa: E402
import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.ec2.responses.amis import AmisResponse  # noqa: E402

from bakery.aws import tags  # noqa: E402
from bakery.config import BakeryConfig, load_config  # noqa: E402
from bakery.verify.suites import SuiteResult  # noqa: E402

_MOTO_COPY_IMAGE = AmisResponse.copy_image


def _copy_image_tagging_as_ec2_does(self: AmisResponse) -> ActionResult:
    """moto 5.2 ignores CopyImage's TagSpecifications; EC2 tags the new AMI and its
    snapshots with them as it makes them (what IAM's ec2:CreateAction=CopyImage checks)."""
    result = _MOTO_COPY_IMAGE(self)
    image_id = result.result["ImageId"]  # type: ignore[index]
    image = self.ec2_backend.amis[image_id]
    for spec in self._get_param("TagSpecifications", []):
        ids = {"image": [image_id], "snapshot": [image.ebs_snapshot.id]}[spec["ResourceType"]]
        self.ec2_backend.create_tags(ids, {t["Key"]: t["Value"] for t in spec.get("Tags", [])})
    return result


AmisResponse.copy_image = _copy_image_tagging_as_ec2_does  # type: ignore[method-assign]

REGION = "us-east-1"
OTHER_REGION = "eu-west-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
DEBIAN_SOURCE = "ami-0deb12000000000a3"  # the newest matching Debian image in amis.json
NOW = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)


def reset_moto_server(url: str) -> None:
    """Empty moto's state (shared by its server and the in-process mock)."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()


@contextmanager
def running_moto_server() -> Iterator[str]:
    """moto's server on a free local port, emptied, for what cannot use the in-process
    mock (Packer, subprocesses); yields its URL."""
    from moto.server import ThreadedMotoServer

    # A log line per request, captured for every test, costs more than the requests.
    requests_log = logging.getLogger("werkzeug")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        reset_moto_server(url)
        yield url
    finally:
        server.stop()
        requests_log.setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def repo_build_untouched() -> Iterator[None]:
    """Tests write records and reports under tmp_path, never into the repo's build/."""
    from bakery.aws.records import RECORDS_DIR, REPORTS_DIR

    def present() -> set[Path]:
        return {
            p for folder in (RECORDS_DIR, REPORTS_DIR) if folder.exists() for p in folder.iterdir()
        }

    before = present()
    yield
    assert present() == before, "a test wrote into the repo's build/records or build/reports"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, no profile or endpoint from the developer's machine."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process AWS, fresh for each test."""
    with mock_aws():
        import moto.ec2.models.amis as moto_amis

        # Guard: the catalogue is ours (MOTO_AMIS_PATH was read), not moto's default.
        assert {ami["ami_id"] for ami in moto_amis.AMIS} >= {DEBIAN_SOURCE}
        yield


@pytest.fixture
def ec2(aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def ssm(aws: None) -> Any:
    return boto3.client("ssm", region_name=REGION)


def make_config(role: str = "backend", *overrides: str) -> BakeryConfig:
    """The repo's aws config for a role, with `--set` style overrides."""
    return load_config(role, "aws", overrides=list(overrides))


@pytest.fixture
def config() -> Callable[..., BakeryConfig]:
    return make_config


def set_creation_date(region: str, ami_id: str, moment: datetime) -> None:
    """moto stamps images with the current time; tests need controlled ages."""
    from moto.ec2.models import ec2_backends

    ec2_backends[ACCOUNT][region].amis[ami_id].creation_date = moment


def make_image(
    role: str = "backend",
    status: str | None = tags.VERIFIED,
    *,
    region: str = REGION,
    created: datetime | None = None,
    extra_tags: dict[str, str] | None = None,
    name: str | None = None,
) -> str:
    """A bakery image of `role` in moto, tagged like a build, snapshots included."""
    client = boto3.client("ec2", region_name=region)
    source = DEBIAN_SOURCE if region == REGION else _any_source(client)
    instance = client.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]
    ami_id = client.create_image(
        InstanceId=instance["InstanceId"], Name=name or f"bakery-{role}-{uuid.uuid4().hex[:8]}"
    )["ImageId"]
    client.terminate_instances(InstanceIds=[instance["InstanceId"]])
    values = {tags.ROLE: role, tags.OS: "debian12", tags.INPUTS_HASH: "0123456789abcdef"}
    if status:
        values[tags.STATUS] = status
    values.update(extra_tags or {})
    image = client.describe_images(ImageIds=[ami_id])["Images"][0]
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]
    client.create_tags(Resources=[ami_id, *snapshots], Tags=tags.as_list(values))
    if created:
        set_creation_date(region, ami_id, created)
    return ami_id


def _any_source(client: Any) -> str:
    """Moto loads the catalogue in every region; fall back to the first image."""
    images = client.describe_images(Owners=["136693071363"])["Images"]
    return str(images[0]["ImageId"])


def image_of(client: Any, ami_id: str) -> dict[str, Any] | None:
    found = client.describe_images(Filters=[{"Name": "image-id", "Values": [ami_id]}])["Images"]
    return found[0] if found else None


def image_tags(client: Any, ami_id: str) -> dict[str, str]:
    image = image_of(client, ami_id)
    assert image is not None, f"{ami_id} does not exist"
    return tags.as_dict(image.get("Tags"))


def snapshot_ids_of(client: Any, ami_id: str) -> list[str]:
    image = image_of(client, ami_id)
    assert image is not None
    return [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]


def existing_snapshots(client: Any) -> set[str]:
    return {s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def clock(moment: datetime = NOW) -> Callable[[], datetime]:
    return lambda: moment


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def write_manifest(directory: Path, builds: list[dict[str, Any]], last: str) -> None:
    (directory / "packer-manifest.json").write_text(
        json.dumps({"builds": builds, "last_run_uuid": last}), encoding="utf-8"
    )


def pytest_configure(config: pytest.Config) -> None:
    """The IAM tests' call recorder (call_recorder.py): it records only when a session
    runs the IAM tests and the modules they evaluate, so those run once."""
    from . import call_recorder

    if not config.pluginmanager.is_registered(call_recorder):
        config.pluginmanager.register(call_recorder, "bakery-aws-call-recorder")


def suite_outcome(
    passed: bool, failed: tuple[str, ...] = (), junit: Path | None = None
) -> SuiteResult:
    """A suite run as a runner double reports it: a passing check, or these failures."""
    if passed:
        return SuiteResult(passed=1, junit=junit)
    return SuiteResult(failed=len(failed), failed_checks=failed, returncode=1, junit=junit)


@pytest.fixture(scope="session")
def recorded_calls(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every AWS request of the recorded modules' moto runs (call_recorder.py): this
    session's, when it ran them all (the tests using this fixture then run last), else
    theirs re-run in a subprocess."""
    from .call_recorder import RECORD_ENV, RECORDED_ENV, RECORDED_MODULES

    reuse = os.environ.get(RECORDED_ENV)
    if reuse:
        path = Path(reuse)
    else:
        here = Path(__file__).resolve().parent
        path = tmp_path_factory.mktemp("calls") / "calls.jsonl"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "tests.unit.aws.call_recorder",
                "-p",
                "no:cacheprovider",
                *(str(here / module) for module in RECORDED_MODULES),
            ],
            cwd=here.parents[2],
            env={**os.environ, RECORD_ENV: str(path)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
