"""provision.py, the entry point Packer calls: one step per call, exit 1 with a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from bakery_provision.plan import BakePlan
from bakery_provision.steps import STEPS, run_step
from provisioner_fakes import REPO_ROOT, FakeSystem, plan_data

PROVISION = REPO_ROOT / "provisioners" / "provision.py"


def run_provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-B", str(PROVISION), *args], capture_output=True, text=True, check=False
    )


def test_steps_cover_the_renderers_steps() -> None:
    from bakery.config import load_config
    from bakery.render import provisioning_steps

    for role in ("backend", "frontend", "database"):
        assert set(provisioning_steps(load_config(role, "aws"))) <= set(STEPS)


def test_a_bad_plan_fails_with_a_message(tmp_path: Path) -> None:
    plan = tmp_path / "bake.json"
    plan.write_text(json.dumps({**plan_data(), "os": "windows"}))
    result = run_provision("prepare", "--plan", str(plan), "--root", str(tmp_path))
    assert result.returncode == 1
    assert "prepare: FAILED: bake plan: unknown os 'windows'" in result.stderr


def test_a_missing_plan_fails_with_a_message(tmp_path: Path) -> None:
    result = run_provision("seal", "--plan", str(tmp_path / "nope.json"))
    assert result.returncode == 1
    assert "cannot read the bake plan" in result.stderr


def test_unknown_step_is_a_usage_error(tmp_path: Path) -> None:
    result = run_provision("install-everything", "--plan", str(tmp_path / "bake.json"))
    assert result.returncode == 2


def test_a_step_of_another_role_is_refused(tmp_path: Path) -> None:
    plan = BakePlan.from_dict(plan_data(role="frontend"))
    ctx = StepContext(plan=plan, step="install-backend", runner=FakeSystem(tmp_path), root=tmp_path)
    with pytest.raises(ProvisionError, match="not in this bake plan"):
        run_step(ctx)


def test_plan_without_any_verification_is_refused() -> None:
    data = plan_data(agent={"sha256": None})
    with pytest.raises(ProvisionError, match="neither a sha256 nor GPG data"):
        BakePlan.from_dict(data)


def test_progress_lines_name_the_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = BakePlan.from_dict(plan_data(role="frontend"))
    runner = FakeSystem(tmp_path)
    ctx = StepContext(plan=plan, step="seal", runner=runner, root=tmp_path)
    run_step(ctx)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("seal: ") for line in lines)


def test_plan_rendered_without_the_agent_artifact_is_refused() -> None:
    # What the renderer writes for the test double when no artifacts were prepared.
    data = plan_data(agent={"url": None, "sha256": None})
    with pytest.raises(ProvisionError, match=r"no agent\.url"):
        BakePlan.from_dict(data)
