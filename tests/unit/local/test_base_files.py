"""rootfs/base/: the files of the local base image agree with each other on SSH host
keys: cloud-init makes the types sshd loads, and ssh.service's safety net makes the same
ones, never others (each extra type is seconds of emulated CPU at every first boot)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from bakery.local.base_image import BASE_FILES

CLOUD_CFG = BASE_FILES / "etc/cloud/cloud.cfg.d/90-bakery.cfg"
SSHD_DROP_IN = BASE_FILES / "etc/ssh/sshd_config.d/10-bakery-host-keys.conf"
SSH_UNIT_DROP_IN = BASE_FILES / "etc/systemd/system/ssh.service.d/10-bakery-host-keys.conf"


def sshd_host_key_types() -> list[str]:
    text = SSHD_DROP_IN.read_text()
    return re.findall(r"^HostKey\s+/etc/ssh/ssh_host_(\w+)_key$", text, re.MULTILINE)


def safety_net_command() -> str:
    (line,) = [
        x for x in SSH_UNIT_DROP_IN.read_text().splitlines() if x.startswith("ExecStartPre=")
    ]
    argv = shlex.split(line.removeprefix("ExecStartPre="))
    assert argv[:2] == ["/bin/sh", "-c"], argv
    return argv[2]


def test_sshd_loads_exactly_the_host_keys_cloud_init_makes() -> None:
    made = yaml.safe_load(CLOUD_CFG.read_text())["ssh_genkeytypes"]
    assert made == ["ed25519"]
    assert sshd_host_key_types() == made


@pytest.fixture
def etc_ssh(tmp_path: Path) -> tuple[Path, str]:
    """The safety net's command, pointed at a scratch /etc/ssh."""
    folder = tmp_path / "ssh"
    folder.mkdir()
    return folder, safety_net_command().replace("/etc/ssh/", f"{folder}/")


def test_the_ssh_safety_net_makes_only_the_key_sshd_loads(etc_ssh: tuple[Path, str]) -> None:
    folder, command = etc_ssh
    subprocess.run(["sh", "-c", command], check=True, stdin=subprocess.DEVNULL)
    made = sorted(path.name for path in folder.iterdir())
    assert made == [f"ssh_host_{kind}_key{suffix}" for kind in sshd_host_key_types()
                    for suffix in ("", ".pub")]  # fmt: skip


def test_the_ssh_safety_net_keeps_the_key_cloud_init_made(etc_ssh: tuple[Path, str]) -> None:
    folder, command = etc_ssh
    key = folder / "ssh_host_ed25519_key"
    key.write_text("made by cloud-init at this boot\n")
    subprocess.run(["sh", "-c", command], check=True, stdin=subprocess.DEVNULL)
    assert key.read_text() == "made by cloud-init at this boot\n"
    assert sorted(path.name for path in folder.iterdir()) == [key.name]
