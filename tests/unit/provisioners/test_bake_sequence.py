"""A whole bake per role and OS, step after step as Packer runs them, on the fake system:
every step succeeds, a second pass changes nothing, and seal leaves no stage behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision.context import StepContext
from bakery_provision.plan import BakePlan
from bakery_provision.steps import run_step
from provisioner_fakes import REPO_ROOT, FakeSystem, put_base_image_files

Render = Callable[..., Path]


def upload_stage(fake_system: FakeSystem, rendered: Path, role: str) -> BakePlan:
    """What Packer's file provisioner and the host build put in /tmp/bakery."""
    stage = fake_system.root / "tmp" / "bakery"
    shutil.copytree(rendered, stage)
    artifacts = stage / "artifacts"
    package = artifacts / "agent" / "amazon-cloudwatch-agent.deb"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"agent\n")
    if role == "backend":
        (artifacts / "wheelhouse").mkdir()
        shutil.copyfile(
            REPO_ROOT / "app/backend/requirements.txt", artifacts / "wheelhouse/requirements.txt"
        )
    if role in ("backend", "frontend"):
        shutil.copytree(REPO_ROOT / "app" / role, artifacts / "app")
    data = json.loads((stage / "bake.json").read_text())
    # As for the local test double: a file:// URL pinned by sha256, no GPG data.
    data["agent"].update(
        url="file:///tmp/bakery/artifacts/agent/amazon-cloudwatch-agent.deb",
        sha256=hashlib.sha256(b"agent\n").hexdigest(),
        signature_url=None,
        gpg_key_url=None,
        gpg_fingerprint=None,
    )
    return BakePlan.from_dict(data)


@pytest.mark.parametrize("os_family", ["debian12", "al2023"])
@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_whole_bake(render_stage: Render, tmp_path: Path, role: str, os_family: str) -> None:
    fake_system = FakeSystem(tmp_path / "root")
    fake_system.programs.add("mysql")
    put_base_image_files(fake_system.root)
    plan = upload_stage(fake_system, render_stage(role, os_family), role)

    def run(step: str) -> None:
        run_step(StepContext(plan=plan, step=step, runner=fake_system, root=fake_system.root))

    for step in plan.steps[:-1]:
        run(step)
    fake_system.reset_log()
    for step in plan.steps[:-1]:
        run(step)
    assert fake_system.install_commands() == []

    run("seal")
    assert not (fake_system.root / "tmp" / "bakery").exists()
    assert (fake_system.root / "etc/bakery/defaults.env").is_file()
