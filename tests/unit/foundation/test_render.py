"""Rendering: the HCL, parsed back with python-hcl2, says what the config says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
from packer_hcl import unquote

from bakery.agent_config import agent_config
from bakery.config import REPO_ROOT, load_config
from bakery.hcl import hcl_literal
from bakery.packer import PackerVersion
from bakery.render import render_role

PACKER_1_6 = PackerVersion(1, 6, 6)
PACKER_1_10 = PackerVersion(1, 10, 3)
SCHEMA = REPO_ROOT.parent / "shared" / "reference" / "cloudwatch-agent-schema.json"


def _parse(path: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl2.loads(path.read_text())
    return parsed


def _variables(directory: Path) -> dict[str, Any]:
    blocks = _parse(directory / "variables.pkr.hcl")["variable"]
    return {
        unquote(name): {key: unquote(value) for key, value in body.items()}
        for block in blocks
        for name, body in block.items()
    }


def _source(directory: Path) -> tuple[str, dict[str, Any]]:
    (block,) = _parse(directory / "source.pkr.hcl")["source"]
    ((kind, named),) = block.items()
    ((_, body),) = named.items()
    return unquote(kind), body


def _provisioners(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    (build,) = _parse(directory / "build.pkr.hcl")["build"]
    return [(unquote(kind), body) for block in build["provisioner"] for kind, body in block.items()]


def _render(tmp_path: Path, role: str, target: str, packer: PackerVersion = PACKER_1_6,
            sets: tuple[str, ...] = ()) -> Path:  # fmt: skip
    return render_role(load_config(role, target, overrides=sets), packer, tmp_path).directory


@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_source_type_follows_target(tmp_path: Path, role: str) -> None:
    assert _source(_render(tmp_path, role, "local"))[0] == "qemu"
    assert _source(_render(tmp_path, role, "aws"))[0] == "amazon-ebs"


def test_aws_source_encrypts_and_is_wired_to_config_variables(tmp_path: Path) -> None:
    directory = _render(tmp_path, "database", "aws", sets=("aws.instance_types.x86_64=m7i.large",))
    variables = _variables(directory)
    _, source = _source(directory)
    assert variables["instance_type"]["default"] == "m7i.large"
    assert source["instance_type"] == "${var.instance_type}"
    # Encrypted as launched, so CreateImage makes the encrypted AMI: no encrypt_boot,
    # whose intermediate unencrypted AMI would be deregistered untagged.
    (launch_volume,) = source["launch_block_device_mappings"]
    assert launch_volume["encrypted"] is True
    assert "encrypt_boot" not in source and "encrypt_boot" not in variables
    assert variables["volume_size_gb"]["default"] == 16  # config/roles/database.yaml
    assert variables["source_ami_owners"]["default"] == ["136693071363"]
    assert unquote(source["ami_name"]) == "bakery-database-debian12-x86_64-${local.build_time}"
    assert "{{ .SourceAMI }}" in source["tags"]  # Packer's template syntax survives Jinja


def test_aws_launch_volume_uses_the_configured_kms_key_and_is_plain_without_encrypt(
    tmp_path: Path,
) -> None:
    keyed = _render(tmp_path / "k", "backend", "aws", sets=("aws.kms_key_id=alias/bakery-images",))
    (launch_volume,) = _source(keyed)[1]["launch_block_device_mappings"]
    assert (launch_volume["encrypted"], launch_volume["kms_key_id"]) == (True, "${var.kms_key_id}")
    assert _variables(keyed)["kms_key_id"]["default"] == "alias/bakery-images"
    plain = _render(tmp_path / "p", "backend", "aws", sets=("aws.encrypt=false",))
    (launch_volume,) = _source(plain)[1]["launch_block_device_mappings"]
    assert "encrypted" not in launch_volume and "kms_key_id" not in launch_volume


def test_run_id_is_an_aws_run_input_tagged_on_all_the_build_creates(tmp_path: Path) -> None:
    directory = _render(tmp_path, "backend", "aws")
    assert "default" not in _variables(directory)["run_id"]  # set per run, never baked in
    _, source = _source(directory)
    for tag_map in ("tags", "snapshot_tags"):
        assert '"bakery:run-id" = var.run_id' in source[tag_map]
    (locals_block,) = _parse(directory / "source.pkr.hcl")["locals"]
    assert locals_block["build_tags"]['"bakery:run-id"'] == "${var.run_id}"
    assert source["run_tags"] == source["run_volume_tags"] == "${local.build_tags}"
    assert "run_id" not in _variables(_render(tmp_path, "backend", "local"))


def test_packer_1_6_gets_no_fields_it_rejects_and_records_post_build_duties(
    tmp_path: Path,
) -> None:
    org = "arn:aws:organizations::111122223333:organization/o-abc"
    config = load_config("backend", "aws", overrides=[f"aws.share_org_arns=[{org}]"])
    rendered = render_role(config, PACKER_1_6, tmp_path)
    _, source = _source(rendered.directory)
    for field in ("imds_support", "metadata_options", "deprecate_at", "ami_org_arns"):
        assert field not in source
    assert not (rendered.directory / "plugins.pkr.hcl").exists()
    assert rendered.post_build == ("imds_support", "deprecate_at", "ami_org_arns")
    recorded = json.loads((rendered.directory / "render.json").read_text())
    assert recorded["post_build"] == ["imds_support", "deprecate_at", "ami_org_arns"]


def test_packer_1_10_gets_plugins_imdsv2_and_deprecation_in_the_template(tmp_path: Path) -> None:
    rendered = render_role(load_config("backend", "aws"), PACKER_1_10, tmp_path)
    plugins = _parse(rendered.directory / "plugins.pkr.hcl")["packer"][0]["required_plugins"][0]
    assert {"amazon", "qemu"} <= set(plugins)
    _, source = _source(rendered.directory)
    assert unquote(source["imds_support"]) == "v2.0"
    assert unquote(source["metadata_options"][0]["http_tokens"]) == "required"
    assert 'timeadd(timestamp(), "2160h")' in source["deprecate_at"]
    assert rendered.post_build == ()


def test_imdsv2_off_renders_no_metadata_options(tmp_path: Path) -> None:
    rendered = render_role(
        load_config("backend", "aws", overrides=["aws.imdsv2_required=false"]),
        PACKER_1_10,
        tmp_path,
    )
    _, source = _source(rendered.directory)
    assert "metadata_options" not in source and "imds_support" not in source


@pytest.mark.parametrize("target", ["local", "aws"])
def test_provisioner_steps_run_in_order_and_seal_last(tmp_path: Path, target: str) -> None:
    provisioners = _provisioners(_render(tmp_path, "frontend", target))
    commands = [c for kind, body in provisioners if kind == "shell" for c in body["inline"]]
    steps = [m.group(1) for c in commands if (m := re.search(r"provision.py (\S+)", c))]
    assert steps == [
        "prepare",
        "install-agent",
        "install-frontend",
        "harden",
        "record-manifest",
        "seal",
    ]
    kinds = [kind for kind, _ in provisioners]
    assert kinds.index("file") < kinds.index("shell", 1)  # the stage is uploaded first
    # The steps before the manifest download share one script; it must stop at a failure.
    shared = [body for kind, body in provisioners if kind == "shell" and len(body["inline"]) > 1]
    assert [unquote(body.get("inline_shebang", "")) for body in shared] == ["/bin/sh -e"]


def test_local_source_is_wired_to_config_and_run_inputs(tmp_path: Path) -> None:
    directory = _render(tmp_path, "backend", "local", sets=("local.memory_mb=2048",))
    variables = _variables(directory)
    _, source = _source(directory)
    assert variables["memory_mb"]["default"] == 2048
    assert source["memory"] == "${var.memory_mb}"
    assert source["disk_image"] is True
    assert source["accelerator"] == "${var.accelerator}"
    for run_input in ("base_image", "ssh_private_key_file", "accelerator", "seed_files"):
        assert "default" not in variables[run_input]  # set per run, never baked in


def test_rendering_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    first = _render(tmp_path / "a", "backend", "aws")
    second = _render(tmp_path / "b", "backend", "aws")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_rerender_replaces_the_tree_atomically(tmp_path: Path) -> None:
    directory = _render(tmp_path, "frontend", "local")
    (directory / "stray.txt").write_text("from an older render")
    again = _render(tmp_path, "frontend", "local")
    assert again == directory and not (directory / "stray.txt").exists()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ("${var.x}", '"$${var.x}"'),
        ("%{ if x }", '"%%{ if x }"'),
        ('quote " and \\', '"quote \\" and \\\\"'),
        (True, "true"),
        (3, "3"),
        (["a", 1], '["a", 1]'),
        ({"k": "v"}, '{ "k" = "v" }'),
    ],
)
def test_hcl_literal_quotes_and_cannot_interpolate(value: Any, literal: str) -> None:
    assert hcl_literal(value) == literal


@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_agent_config_is_valid_against_the_agents_schema(role: str) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"the agent schema is not at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    config = agent_config(load_config(role, "aws"))
    jsonschema.validate(config, schema)
    has_app_signals = "application_signals" in config.get("traces", {}).get("traces_collected", {})
    assert has_app_signals == (role == "backend")
    if role == "backend":
        assert "application_signals" in config["logs"]["metrics_collected"]


def test_otel_distro_pin_matches_the_backend_requirements() -> None:
    requirements = (REPO_ROOT / "app" / "backend" / "requirements.txt").read_text()
    pinned = re.search(r"^aws-opentelemetry-distro==(\S+)", requirements, re.M)
    assert pinned is not None
    assert load_config("backend", "local").otel.distro_version == pinned.group(1)


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
@pytest.mark.parametrize("target", ["local", "aws"])
@pytest.mark.parametrize("role", ["backend", "frontend", "database"])
def test_rendered_hcl_passes_packer_fmt_and_validate(
    tmp_path: Path, role: str, target: str
) -> None:
    from bakery.packer import detect_version
    from bakery.validate import validate_rendered

    rendered = render_role(load_config(role, target), detect_version(), tmp_path)
    validate_rendered(rendered)  # raises OperationFailed with Packer's output otherwise
    check = subprocess.run(["packer", "fmt", "-check", "."], cwd=rendered.directory, check=False)
    assert check.returncode == 0


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_al2023_renders_and_validates_for_aws(tmp_path: Path) -> None:
    from bakery.packer import detect_version
    from bakery.validate import validate_rendered

    config = load_config("backend", "aws", overrides=["os=al2023"])
    rendered = render_role(config, detect_version(), tmp_path)
    validate_rendered(rendered)
    assert _variables(rendered.directory)["ssh_username"]["default"] == "ec2-user"
    plan = json.loads((rendered.stage / "bake.json").read_text())
    assert plan["os"] == "al2023" and plan["agent"]["url"].endswith(".rpm")
