"""bakery/local/build.py: the local build's bookkeeping (inputs hash, the lock, progress).
No VM involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import load_config
from bakery.errors import BadInput
from bakery.inputs import inputs_hash
from bakery.local.base_image import BaseImage
from bakery.local.build import _exclusive, _progress_line
from bakery.packer import PackerVersion
from bakery.render import render_role

BASE = BaseImage(Path("/nonexistent/base.qcow2"), "0" * 64, "base-inputs-1")


def _rendered(tmp_path: Path, role: str, *sets: str):  # type: ignore[no-untyped-def]
    return render_role(
        load_config(role, "local", overrides=list(sets)), PackerVersion(1, 6, 6), tmp_path
    )


def test_inputs_hash_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    first = inputs_hash(_rendered(tmp_path / "a", "frontend"), BASE.inputs_hash)
    second = inputs_hash(_rendered(tmp_path / "b", "frontend"), BASE.inputs_hash)
    assert first == second


def test_inputs_hash_changes_with_config_stage_and_base(tmp_path: Path) -> None:
    plain = inputs_hash(_rendered(tmp_path / "a", "frontend"), BASE.inputs_hash)
    other_config = inputs_hash(
        _rendered(tmp_path / "b", "frontend", "local.memory_mb=2048"), BASE.inputs_hash
    )
    assert plain != other_config
    rendered = _rendered(tmp_path / "c", "frontend")
    (rendered.stage / "artifacts" / "extra.txt").write_text("one more file for the image")
    assert inputs_hash(rendered, BASE.inputs_hash) != plain
    other_base = BaseImage(BASE.path, BASE.sha256, "base-inputs-2")
    assert inputs_hash(_rendered(tmp_path / "d", "frontend"), other_base.inputs_hash) != plain


def test_build_outputs_are_not_inputs(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path, "database")
    before = inputs_hash(rendered, BASE.inputs_hash)
    (rendered.directory / "packer-manifest.json").write_text("{}")
    (rendered.directory / "manifest").mkdir()
    (rendered.directory / "manifest" / "packages.txt").write_text("nginx 1.22")
    # The qemu builder's cache of the base image's checksum, made during the build.
    (rendered.directory / "packer_cache" / "port").mkdir(parents=True)
    (rendered.directory / "packer_cache" / "port" / "x.lock").write_text("")
    assert inputs_hash(rendered, BASE.inputs_hash) == before


def test_a_second_build_in_the_same_checkout_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / ".build.lock"
    with (
        _exclusive(lock),
        pytest.raises(BadInput, match="another `invoke build` is running"),
        _exclusive(lock),
    ):
        pass
    with _exclusive(lock):  # released again afterwards
        pass


def test_progress_shows_packer_steps_and_provisioner_step_starts() -> None:
    assert _progress_line("==> qemu.image: Waiting for SSH to become available...") == (
        "packer: Waiting for SSH to become available..."
    )
    assert _progress_line("    qemu.image: seal: start (backend)") == "provisioner step: seal"
    assert _progress_line("==> qemu.image: Provisioning with shell script: /tmp/x") is None
    assert _progress_line("    qemu.image: seal: removed /etc/ssh/ssh_host_rsa_key") is None
