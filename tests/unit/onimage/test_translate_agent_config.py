"""translate-agent-config: the CloudWatch agent's config translated at every boot, with
the agent's ctl faked."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from program_fakes import fake_program, load_program


@pytest.fixture
def translate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_program("translate-agent-config")
    args_file = tmp_path / "ctl-args"
    ctl = fake_program(tmp_path / "ctl", f'echo "$@" > {args_file}\n')
    monkeypatch.setattr(module, "CTL", str(ctl))
    monkeypatch.setattr(module, "RUNTIME_DIR", str(tmp_path / "run"))
    # Off EC2 unless a test says otherwise: no test asks this host's metadata service.
    monkeypatch.setattr(module, "imds_token", lambda: None)
    config = {
        "agent": {"run_as_user": "cwagent"},
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {"file_path": "/var/log/a.log", "log_group_name": "/aws/ec2/baked"}
                    ]
                }
            }
        },
    }
    source = tmp_path / "agent-config.json"
    source.write_text(json.dumps(config))
    monkeypatch.setenv("AGENT_CONFIG", str(source))
    monkeypatch.delenv("LOG_GROUP_NAME", raising=False)
    return module


def ctl_args(tmp_path: Path) -> str:
    return (tmp_path / "ctl-args").read_text().strip()


def test_translation_uses_ec2_mode_when_imds_answers(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: "token")
    assert translate.main() == 0
    copy = tmp_path / "run" / "agent-config.json"
    assert ctl_args(tmp_path) == f"-a fetch-config -m ec2 -c file:{copy}"
    assert "-s" not in ctl_args(tmp_path).split()


def test_translation_falls_back_to_on_premise(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: None)
    assert translate.main() == 0
    assert " -m onPremise " in f" {ctl_args(tmp_path)} "


def test_launch_log_group_replaces_the_baked_one(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_GROUP_NAME", "/aws/ec2/staging-backend")
    assert translate.main() == 0
    copy = json.loads((tmp_path / "run" / "agent-config.json").read_text())
    [entry] = copy["logs"]["logs_collected"]["files"]["collect_list"]
    assert entry["log_group_name"] == "/aws/ec2/staging-backend"


def test_invalid_log_group_is_refused(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_GROUP_NAME", "bad group;rm")
    assert translate.main() == 1
    assert not (tmp_path / "ctl-args").exists()


def test_ctl_failure_is_the_units_failure(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "CTL", str(fake_program(tmp_path / "bad-ctl", "exit 1\n")))
    assert translate.main() == 1
