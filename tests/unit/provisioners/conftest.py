"""Make `provisioners/` importable as on the image (provision.py puts its own folder on
sys.path), and give the tests a plan, a fake system and a step context in a tmp root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
PROVISIONERS = REPO_ROOT / "provisioners"
for folder in (PROVISIONERS, Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bakery_provision.context import StepContext  # noqa: E402
from bakery_provision.plan import BakePlan  # noqa: E402
from provisioner_fakes import (  # noqa: E402
    FakeSystem,
    MakeContext,
    SigningKey,
    make_key,
    plan_data,
)


@pytest.fixture
def fake_system(tmp_path: Path) -> FakeSystem:
    return FakeSystem(tmp_path / "root")


@pytest.fixture
def make_context(fake_system: FakeSystem) -> MakeContext:
    """A StepContext on the fake system's root; keyword arguments change the plan."""

    def make(step: str = "prepare", **changes: Any) -> StepContext:
        plan = BakePlan.from_dict(plan_data(**changes))
        fake_system.os = plan.os
        fake_system.root.mkdir(parents=True, exist_ok=True)
        return StepContext(plan=plan, step=step, runner=fake_system, root=fake_system.root)

    return make


@pytest.fixture(scope="session")
def render_stage(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """The stage folder of a real render (bakery.render) for a role and OS, made once."""
    from bakery.config import load_config
    from bakery.packer import PackerVersion
    from bakery.render import render_role

    made: dict[tuple[str, str, str], Path] = {}

    def render(role: str, os_family: str = "debian12", target: str = "aws") -> Path:
        key = (role, os_family, target)
        if key not in made:
            cfg = load_config(role, target, overrides=[f"os={os_family}"])
            out = tmp_path_factory.mktemp(f"render-{role}-{os_family}-{target}")
            made[key] = render_role(cfg, PackerVersion(1, 6, 6), out).stage
        return made[key]

    return render


@pytest.fixture(scope="session")
def signing_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SigningKey, SigningKey]]:
    """Two throwaway GPG keys: the one the plan pins, and another."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed here")
    out_dir = tmp_path_factory.mktemp("keys")
    pinned, other = make_key("pinned", out_dir), make_key("other", out_dir)
    yield pinned, other
    for key in (pinned, other):
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "all"], check=False)
        shutil.rmtree(key.home, ignore_errors=True)
