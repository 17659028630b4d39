"""bakery/validate.py: `validate_all` asks the real Packer, at once for the roles it has
not seen, and remembers a pass only for exactly the files Packer was shown."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.errors import OperationFailed
from bakery.packer import detect_version
from bakery.render import render_role
from bakery.validate import validate_all

pytestmark = pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
ROLES = ("backend", "frontend", "database")


def test_an_unchanged_render_is_not_run_through_packer_again(tmp_path: Path) -> None:
    packer = detect_version()
    rendered = [render_role(load_config(r, "local"), packer, tmp_path / "b") for r in ROLES]
    first = validate_all(rendered, tmp_path / "cache")
    assert [checked.cached for checked in first] == [False, False, False]
    again = [render_role(load_config(r, "local"), packer, tmp_path / "b") for r in ROLES]
    second = validate_all(again, tmp_path / "cache")
    assert [checked.cached for checked in second] == [True, True, True]
    assert [c.output for c in second] == [c.output for c in first]


def test_a_changed_render_is_validated_again_and_a_failure_names_its_role(
    tmp_path: Path,
) -> None:
    packer = detect_version()
    rendered = render_role(load_config("frontend", "local"), packer, tmp_path / "b")
    validate_all([rendered], tmp_path / "cache")
    remembered = sorted((tmp_path / "cache").iterdir())
    build = rendered.directory / "build.pkr.hcl"
    build.write_text(build.read_text() + "\nlocals {\n  broken = var.not_declared\n}\n")
    with pytest.raises(OperationFailed, match=r"frontend \(local\)"):
        validate_all([rendered], tmp_path / "cache")
    assert sorted((tmp_path / "cache").iterdir()) == remembered  # no pass remembered


def test_a_stage_only_change_is_not_validated_again_but_a_missing_stage_is(
    tmp_path: Path,
) -> None:
    packer = detect_version()
    rendered = render_role(load_config("database", "local"), packer, tmp_path / "b")
    validate_all([rendered], tmp_path / "cache")
    step = rendered.directory / "stage" / "provisioners" / "provision.py"
    step.write_text(step.read_text() + "\n# edited\n")
    assert [c.cached for c in validate_all([rendered], tmp_path / "cache")] == [True]
    shutil.rmtree(rendered.directory / "stage")
    with pytest.raises(OperationFailed, match=r"database \(local\)"):
        validate_all([rendered], tmp_path / "cache")


def test_hcl_out_of_canonical_form_is_refused_naming_its_role_and_target(
    tmp_path: Path,
) -> None:
    packer = detect_version()
    rendered = [render_role(load_config(r, "local"), packer, tmp_path / "b") for r in ROLES]
    source = rendered[2].directory / "source.pkr.hcl"
    source.write_text(source.read_text().replace("  format ", "  format     ", 1))
    with pytest.raises(OperationFailed, match=r"local\.database\.source\.pkr\.hcl"):
        validate_all(rendered, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing remembered
