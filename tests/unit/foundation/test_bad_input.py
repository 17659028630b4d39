"""Every bad input gets one message naming the file or key, exit code 2, and no writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bakery.config import REPO_ROOT

BUILD = REPO_ROOT / "build"


def _snapshot() -> dict[str, float]:
    if not BUILD.exists():
        return {}
    return {str(p.relative_to(BUILD)): p.stat().st_mtime for p in BUILD.rglob("*")}


def _invoke(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-config")
    files = {
        "invalid_yaml": "service:\n  name: [unclosed\n",
        "unknown_key": "service:\n  nmae: typo\n",
        "wrong_type": "aws:\n  copy_regions: eu-west-1\n",
        "role_in_file": "role: backend\n",
        "not_mapping": "- a\n- b\n",
        "bad_nested": "aws:\n  source_images:\n    debian12:\n      x86_64:\n        owners: []\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text)
    unreadable = folder / "unreadable.yaml"
    unreadable.mkdir()  # a folder where a file is expected cannot be read as one
    paths["unreadable"] = unreadable
    return paths


# (id, arguments, text the message must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("unknown-role", ["--role", "cache"], "--role cache"),
    ("unknown-target", ["--target", "gcp"], "--target gcp"),
    ("set-unknown-path", ["--set", "servcie.name=x"], "servcie"),
    ("set-unknown-leaf", ["--set", "service.colour=x"], "service.colour"),
    ("set-no-equals", ["--set", "service.name"], "--set service.name"),
    ("set-into-plain-value", ["--set", "app.port.number=1"], "app.port.number"),
    ("empty-service-name", ["--set", "service.name="], "service.name"),
    ("service-name-space", ["--set", "service.name=my app"], "service.name"),
    ("service-name-quote", ["--set", 'service.name=my"app'], "service.name"),
    ("service-name-dollar", ["--set", "service.name=app$HOME"], "service.name"),
    ("service-name-newline", ["--set", "service.name=a\nb"], "service.name"),
    ("log-group-space", ["--set", "service.log_group=/aws/my group"], "service.log_group"),
    ("log-group-dollar", ["--set", "service.log_group=/aws/${x}"], "service.log_group"),
    ("environment-quote", ["--set", "service.deployment_environment=prod'"],
     "service.deployment_environment"),
    ("invalid-region", ["--set", "aws.region=moon-base-1"], "aws.region"),
    ("ami-name-not-unique", ["--set", "aws.ami_name_pattern=bakery-{role}"],
     "aws.ami_name_pattern"),
    ("ami-name-unknown-field", ["--set", "aws.ami_name_pattern=x-{date}"], "aws.ami_name_pattern"),
    ("retention-zero", ["--set", "aws.retention=0"], "aws.retention"),
    ("cpus-not-number", ["--set", "local.cpus=lots"], "local.cpus"),
    ("unknown-accelerator", ["--set", "local.accelerator=hvf"], "local.accelerator"),
    ("port-out-of-range", ["--set", "app.port=70000"], "app.port"),
    ("bad-app-user", ["--set", "app.user=Root User"], "app.user"),
    ("unknown-os", ["--set", "os=windows"], "os"),
    ("al2023-local", ["--set", "os=al2023"], "al2023 cannot be baked locally"),
    ("double-on-aws", ["--target", "aws", "--set", "agent.package=test-double"], "agent.package"),
    ("kms-without-encryption", ["--target", "aws", "--set", "aws.encrypt=false",
                                "--set", "aws.kms_key_id=alias/x"], "aws"),
    ("bad-sha256", ["--set", "agent.sources.debian12.x86_64.sha256=xyz"],
     "agent.sources.debian12.x86_64.sha256"),
    ("bad-share-account", ["--set", "aws.share_accounts=[123]"], "aws.share_accounts.0"),
    ("missing-ca-bundle", ["--set", "local.extra_ca_bundle=/nonexistent/ca.pem"],
     "local.extra_ca_bundle"),
    ("role-via-set", ["--set", "role=backend"], "--role"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input_exits_2_names_key_and_writes_nothing(
    case: str, args: list[str], expected: str
) -> None:
    before = _snapshot()
    result = _invoke(["render", *args])
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot() == before


FILE_CASES = [
    ("missing-file", None, "file not found"),
    ("invalid_yaml", "invalid_yaml", "invalid YAML at line 3"),
    ("unknown_key", "unknown_key", "service.nmae: unknown key"),
    ("wrong_type", "wrong_type", "aws.copy_regions"),
    ("role_in_file", "role_in_file", "role: is chosen on the command line"),
    ("not_mapping", "not_mapping", "must be a mapping"),
    ("bad_nested", "bad_nested", "aws.source_images.debian12.x86_64.owners"),
    ("unreadable", "unreadable", "cannot read"),
]


@pytest.mark.parametrize(("case", "key", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_config_file_names_the_file(
    case: str, key: str | None, expected: str, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    path = bad_files[key] if key else tmp_path / "nope.yaml"
    before = _snapshot()
    result = _invoke(["render", "--config", str(path)])
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert expected in result.stderr
    assert _snapshot() == before


def test_missing_packer_is_bad_input_naming_the_tool(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # an empty PATH: no packer on it
    before = _snapshot()
    result = _invoke(["render", "--role", "backend"], env=env)
    assert result.returncode == 2, result.stderr
    assert "packer is not installed" in result.stderr
    assert "apt-get install packer" in result.stderr
    assert _snapshot() == before
