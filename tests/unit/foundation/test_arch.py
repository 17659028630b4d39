"""`arch: x86_64 | arm64` (issue #16): what it selects in the config, what it renders
for both targets, and that Packer accepts the arm64 templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest
from packer_hcl import unquote, variable_defaults

from bakery.config import CONFIG_DIR, load_config
from bakery.errors import ConfigError
from bakery.packer import PackerVersion
from bakery.render import render_role

PACKER_1_6 = PackerVersion(1, 6, 6)


def _rendered(tmp_path: Path, role: str, target: str, *sets: str) -> Path:
    cfg = load_config(role, target, overrides=sets)
    return render_role(cfg, PACKER_1_6, tmp_path).directory


def _source_body(directory: Path) -> dict[str, Any]:
    (block,) = hcl2.loads((directory / "source.pkr.hcl").read_text())["source"]
    ((_, named),) = block.items()
    ((_, body),) = named.items()
    return {key: unquote(value) for key, value in body.items()}


def test_arch_defaults_to_x86_64_with_the_amd64_source_and_agent() -> None:
    cfg = load_config("backend", "aws")
    assert cfg.arch == "x86_64"
    assert cfg.instance_type == "t3.small"
    assert cfg.source_image.name_pattern == "debian-12-amd64-*"
    assert "/debian/amd64/" in cfg.agent_source.url


def test_set_arch_arm64_picks_graviton_the_arm64_source_ami_and_agent_package() -> None:
    cfg = load_config("backend", "aws", overrides=["arch=arm64"])
    assert cfg.instance_type == "t4g.small"
    assert cfg.source_image.name_pattern == "debian-12-arm64-*"
    assert cfg.source_image.owners == ["136693071363"]
    assert cfg.agent_source.url.endswith("/arm64/latest/amazon-cloudwatch-agent.deb")
    assert cfg.agent_source.signature_url == cfg.agent_source.url + ".sig"
    al2023 = load_config("backend", "aws", overrides=["arch=arm64", "os=al2023"])
    assert al2023.source_image.name_pattern.endswith("-arm64")
    assert "/amazon_linux/arm64/" in al2023.agent_source.url


def test_each_role_has_a_graviton_type_of_its_own_size() -> None:
    assert load_config("database", "aws", overrides=["arch=arm64"]).instance_type == "t4g.medium"
    assert load_config("frontend", "aws", overrides=["arch=arm64"]).instance_type == "t4g.small"


def test_arch_set_in_a_role_file_applies_to_that_role_only(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    role_file = config_dir / "roles" / "frontend.yaml"
    role_file.write_text(role_file.read_text() + "arch: arm64\n")
    assert load_config("frontend", "aws", config_dir=config_dir).arch == "arm64"
    assert load_config("backend", "aws", config_dir=config_dir).arch == "x86_64"


def test_unknown_arch_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("backend", "aws", overrides=["arch=amd64"])
    assert caught.value.key_path == "arch"
    assert "x86_64" in str(caught.value) and "arm64" in str(caught.value)


def test_an_arch_with_no_agent_package_is_refused_naming_the_table(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    defaults = config_dir / "defaults.yaml"
    text = defaults.read_text()
    start = text.index(
        "      arm64:\n        url: https://s3.amazonaws.com/amazoncloudwatch-agent/ubuntu"
    )
    end = text.index("    al2023:\n      x86_64:\n        url:")
    defaults.write_text(text[:start] + text[end:])
    assert load_config("backend", "aws", config_dir=config_dir).arch == "x86_64"
    with pytest.raises(ConfigError) as caught:
        load_config("backend", "aws", overrides=["arch=arm64"], config_dir=config_dir)
    assert "agent.sources.debian12 has no entry for arch 'arm64'" in str(caught.value)


def test_set_reaches_per_arch_keys_and_refuses_an_unknown_arch_key() -> None:
    cfg = load_config(
        "backend", "aws", overrides=["arch=arm64", "aws.instance_types.arm64=c7g.large"]
    )
    assert cfg.instance_type == "c7g.large"
    with pytest.raises(ConfigError) as caught:
        load_config("backend", "aws", overrides=["aws.instance_types.sparc=t3.small"])
    assert caught.value.key_path.startswith("aws.instance_types")


def test_aws_render_for_arm64_filters_arm64_sources_and_tags_the_arch(tmp_path: Path) -> None:
    directory = _rendered(tmp_path, "database", "aws", "arch=arm64")
    variables = variable_defaults(directory)
    assert variables["arch"] == "arm64"
    assert variables["source_ami_architecture"] == "arm64"
    assert variables["source_ami_name"] == "debian-12-arm64-*"
    assert variables["instance_type"] == "t4g.medium"
    source = _source_body(directory)
    assert source["ami_name"] == "bakery-database-debian12-arm64-${local.build_time}"
    assert source["source_ami_filter"][0]["filters"]["architecture"] == (
        "${var.source_ami_architecture}"
    )
    text = (directory / "source.pkr.hcl").read_text()
    assert text.count('"bakery:arch"') == 2  # on the AMI and on its snapshots
    plan = json.loads((directory / "stage" / "bake.json").read_text())
    assert "/arm64/" in plan["agent"]["url"]


def test_local_render_for_arm64_is_an_aarch64_virt_guest_booting_uefi(tmp_path: Path) -> None:
    directory = _rendered(tmp_path, "backend", "local", "arch=arm64")
    source = _source_body(directory)
    assert source["qemu_binary"] == "qemu-system-aarch64"
    assert source["machine_type"] == "virt"
    assert source["cdrom_interface"] == "virtio-scsi"
    assert ["-cpu", "cortex-a72"] in source["qemuargs"]
    assert ["-bios", "${var.arm64_firmware}"] in source["qemuargs"]
    firmware = variable_defaults(directory)["arm64_firmware"]
    assert firmware == "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"


def test_local_render_for_x86_64_keeps_qemus_defaults(tmp_path: Path) -> None:
    directory = _rendered(tmp_path, "backend", "local")
    source = _source_body(directory)
    for key in ("qemu_binary", "machine_type", "qemuargs", "cdrom_interface"):
        assert key not in source
    assert "arm64_firmware" not in variable_defaults(directory)


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
@pytest.mark.parametrize("target", ["local", "aws"])
def test_arm64_templates_pass_packer_fmt_and_validate(tmp_path: Path, target: str) -> None:
    """What `invoke validate --set arch=arm64 --target TARGET` runs, for the backend."""
    from bakery.packer import detect_version
    from bakery.validate import validate_rendered

    cfg = load_config("backend", target, overrides=["arch=arm64"])
    rendered = render_role(cfg, detect_version(), tmp_path)
    validate_rendered(rendered)  # raises OperationFailed with Packer's output otherwise
