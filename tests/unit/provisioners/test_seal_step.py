"""seal: nothing of the build machine, its keys, the bake CA or a translated agent config
stays in the image; logs are emptied; the stage goes last."""

from __future__ import annotations

from pathlib import Path

import pytest
from bakery_provision import seal
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from provisioner_fakes import FakeSystem, MakeContext

AGENT_ETC = "opt/aws/amazon-cloudwatch-agent/etc"
# Build leftovers that seal removes; the stage (/tmp/bakery) goes too.
MUST_GO = (
    "usr/local/share/ca-certificates/bakery-bake-ca.crt",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "var/lib/dbus/machine-id",
    "root/.ssh/authorized_keys",
    "home/admin/.ssh/authorized_keys",
    "home/admin/.bash_history",
    "root/.bash_history",
    "root/.python_history",
    "tmp/packer-shell123",
    "var/tmp/leftover/file",
    "var/lib/apt/lists/deb_dists_InRelease",
    f"{AGENT_ETC}/amazon-cloudwatch-agent.toml",
    f"{AGENT_ETC}/amazon-cloudwatch-agent.yaml",
    f"{AGENT_ETC}/amazon-cloudwatch-agent.d/file_agent-config.json",
    "var/log/dpkg.log.1",
    "var/log/apt/history.log.2.gz",
)
AGENT_LOG = "opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log"
SERVICE_TMP = "tmp/systemd-private-abc-chrony.service-x/tmp/keep"


def touch(root: Path, relative: str, text: str = "x\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def built_image(ctx: StepContext) -> Path:
    """A root that looks like the image right after record-manifest."""
    root = ctx.root
    for relative in (*MUST_GO, AGENT_LOG, SERVICE_TMP):
        touch(root, relative)
    touch(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    touch(root, "var/log/syslog", "a lot\n")
    touch(root, "var/log/journal/abc/system.journal", "binary\n")
    touch(root, "etc/ssh/sshd_config", "PermitRootLogin no\n")
    touch(root, "home/admin/.ssh/known_hosts", "host key\n")
    touch(root, f"{AGENT_ETC}/common-config.toml", "# keep\n")
    touch(root, f"{AGENT_ETC}/bakery/agent-config.json", "{}\n")
    touch(
        root,
        "etc/environment",
        'PATH="/usr/bin"\nREQUESTS_CA_BUNDLE=/etc/ssl/bake.pem\nexport AWS_REGION=eu-west-1\n',
    )
    touch(
        root, "etc/profile.d/proxy.sh", "export PIP_INDEX_URL=http://proxy.invalid/\nalias l=ls\n"
    )
    touch(root, "tmp/bakery/manifest/manifest.json", "{}\n")
    return root


def test_seal_removes_what_must_not_ship(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context("seal")
    root = built_image(ctx)

    seal.run(ctx)

    for gone in (*MUST_GO, "var/tmp/leftover", "tmp/bakery"):
        assert not (root / gone).exists(), gone
    machine_id = root / "etc/machine-id"
    assert machine_id.is_file() and machine_id.read_bytes() == b""
    assert (root / "var/log/syslog").read_bytes() == b""
    assert (root / AGENT_LOG).stat().st_size == 0
    assert (root / "etc/environment").read_text() == 'PATH="/usr/bin"\n'
    assert (root / "etc/profile.d/proxy.sh").read_text() == "alias l=ls\n"
    # What the image needs keeps its place.
    assert (root / "etc/ssh/sshd_config").read_text() == "PermitRootLogin no\n"
    assert (root / "home/admin/.ssh/known_hosts").exists()
    assert (root / f"{AGENT_ETC}/common-config.toml").exists()
    assert (root / f"{AGENT_ETC}/bakery/agent-config.json").exists()
    assert (root / f"{AGENT_ETC}/amazon-cloudwatch-agent.d").is_dir()
    assert (root / SERVICE_TMP).exists()
    assert (root / "var/log/journal/abc/system.journal").read_text() == "binary\n"
    # And the commands that do the rest.
    assert fake_system.ran("update-ca-certificates", "--fresh")
    assert fake_system.ran("apt-get", "clean")
    assert fake_system.ran("cloud-init", "clean", "--logs", "--seed")
    assert fake_system.ran("journalctl", "--vacuum-time=1s")


def test_seal_says_what_it_removed(
    make_context: MakeContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = make_context("seal")
    built_image(ctx)
    seal.run(ctx)
    out = capsys.readouterr().out
    assert "seal: SSH host keys: removed /etc/ssh/ssh_host_ed25519_key" in out
    assert "REQUESTS_CA_BUNDLE from /etc/environment" in out
    assert "seal: removed the stage /tmp/bakery" in out
    assert out.rstrip().endswith("seal: sealed")


def test_al2023_removes_its_anchor_and_cleans_dnf(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context("seal", os="al2023")
    anchor = touch(ctx.root, "etc/pki/ca-trust/source/anchors/bakery-bake-ca.pem")
    seal.run(ctx)
    assert not anchor.exists()
    assert fake_system.ran("update-ca-trust", "extract")
    assert fake_system.ran("dnf", "clean", "all")


def test_a_sealed_image_seals_again_without_changes(
    make_context: MakeContext, fake_system: FakeSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = make_context("seal")
    built_image(ctx)
    seal.run(ctx)
    capsys.readouterr()
    seal.run(ctx)
    out = capsys.readouterr().out
    assert "SSH host keys: nothing to remove" in out
    assert "machine id: nothing to remove" in out
    assert "the stage is already gone" in out


def test_check_sealed_refuses_leftovers(make_context: MakeContext) -> None:
    ctx = make_context("seal")
    touch(ctx.root, "etc/ssh/ssh_host_rsa_key")
    touch(ctx.root, "etc/machine-id", "abc\n")
    with pytest.raises(ProvisionError, match=r"ssh_host_rsa_key.*machine-id"):
        seal.check_sealed(ctx)
