"""The user data examples (docs/examples/user-data/<role>.yaml): cloud-config that writes
only /etc/bakery/launch.env, shown as they are in docs/launch-settings.md, and accepted
by the image's own check of launch settings (appsignals-doctor on a fake root)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bakery import ROLES

# The doctor's fakes live with its tests (tests/unit/onimage).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onimage"))
from doctor_fakes import REPO_ROOT, FakeInstance, load_doctor

EXAMPLES = REPO_ROOT / "docs" / "examples" / "user-data"
LAUNCH_SETTINGS_DOC = REPO_ROOT / "docs" / "launch-settings.md"
LAUNCH_ENV = "/etc/bakery/launch.env"
PASSWORD_KEYS = ("DB_PASSWORD", "DB_PASSWORD_SSM_PARAMETER")


@pytest.fixture(scope="module")
def doctor() -> ModuleType:
    return load_doctor()


@pytest.fixture
def instance(tmp_path: Path) -> FakeInstance:
    return FakeInstance(tmp_path / "root")


def example(role: str) -> Path:
    return EXAMPLES / f"{role}.yaml"


def launch_file(text: str) -> dict[str, Any]:
    """The one write_files entry of a user data example."""
    (entry,) = yaml.safe_load(text)["write_files"]
    assert isinstance(entry, dict)
    return entry


def settings_of(content: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in content.splitlines() if line.strip())


def launch_settings_row(
    doctor: ModuleType,
    instance: FakeInstance,
    capsys: pytest.CaptureFixture[str],
    role: str,
    content: str,
    mode: int,
) -> dict[str, str]:
    """The doctor's `launch settings` row for a role on a root holding this launch.env."""
    instance.write(LAUNCH_ENV, content, mode=mode)
    doctor.main(["--root", str(instance.root), "--json", "--role", role], probes=instance.probes)
    document = json.loads(capsys.readouterr().out)
    (row,) = [row for row in document["checks"] if row["check"] == "launch settings"]
    assert isinstance(row, dict)
    return row


def test_there_is_one_example_per_role() -> None:
    assert sorted(path.stem for path in EXAMPLES.iterdir()) == sorted(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_example_writes_only_launch_env_as_root(role: str) -> None:
    text = example(role).read_text()
    assert text.splitlines()[0] == "#cloud-config"
    document = yaml.safe_load(text)
    # No runcmd, bootcmd or anything else: runcmd runs after the units read the file.
    assert list(document) == ["write_files"]
    entry = launch_file(text)
    assert set(entry) == {"path", "owner", "permissions", "content"}  # no `defer: true`
    assert (entry["path"], entry["owner"]) == (LAUNCH_ENV, "root:root")
    # Quoted: YAML would read 0600 as the number 384.
    assert isinstance(entry["permissions"], str)
    secret = any(key in settings_of(entry["content"]) for key in PASSWORD_KEYS)
    assert entry["permissions"] == ("0600" if secret else "0644")


@pytest.mark.parametrize("role", ROLES)
def test_example_uses_only_documented_keys(role: str) -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", LAUNCH_SETTINGS_DOC.read_text(), re.M))
    used = set(settings_of(launch_file(example(role).read_text())["content"]))
    assert used and used <= documented


def test_the_doc_shows_each_example_as_it_is() -> None:
    doc = LAUNCH_SETTINGS_DOC.read_text()
    shown = dict(re.findall(r"^### (\w+)\n\n```yaml\n(.*?)^```$", doc, re.M | re.S))
    assert shown == {role: example(role).read_text() for role in ROLES}
    assert doc.count("#cloud-config") == len(ROLES)  # no other, stale copy


@pytest.mark.parametrize("role", ROLES)
def test_the_image_accepts_the_example(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    entry = launch_file(example(role).read_text())

    row = launch_settings_row(
        doctor, instance, capsys, role, entry["content"], int(entry["permissions"], 8)
    )

    assert (row["status"], row["detail"]) == (
        "ok",
        f"{LAUNCH_ENV}: every setting of the {role} role is given",
    )


def test_the_image_refuses_a_backend_url_with_a_path(
    doctor: ModuleType, instance: FakeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    content = launch_file(example("frontend").read_text())["content"]
    broken = content.replace(
        "BACKEND_URL=http://10.0.1.20:8000", "BACKEND_URL=http://10.0.1.20:8000/api"
    )
    assert broken != content

    row = launch_settings_row(doctor, instance, capsys, "frontend", broken, 0o644)

    assert row["status"] == "FAIL" and "BACKEND_URL is not valid" in row["detail"]


@pytest.mark.parametrize(("mode", "status"), [(0o600, "ok"), (0o644, "FAIL")])
def test_the_password_variant_must_stay_root_only(
    doctor: ModuleType,
    instance: FakeInstance,
    capsys: pytest.CaptureFixture[str],
    mode: int,
    status: str,
) -> None:
    """The doc's alternative for images without the aws CLI: DB_PASSWORD itself."""
    (variant,) = re.findall(r"^      DB_PASSWORD=.*$", LAUNCH_SETTINGS_DOC.read_text(), re.M)
    content = launch_file(example("backend").read_text())["content"]
    with_password = re.sub(r"^DB_PASSWORD_SSM_PARAMETER=.*$", variant.strip(), content, flags=re.M)
    assert "DB_PASSWORD_SSM_PARAMETER" not in with_password

    row = launch_settings_row(doctor, instance, capsys, "backend", with_password, mode)

    assert row["status"] == status
    if status == "FAIL":
        assert "others can read it" in row["detail"]
