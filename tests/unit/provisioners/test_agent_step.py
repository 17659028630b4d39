"""install-agent: verify before installing, install once, hold the version to the minimum,
and set up the translation at first boot without starting or translating anything."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bakery_provision import agent
from bakery_provision.errors import ProvisionError
from bakery_provision.signatures import VerificationFailed
from provisioner_fakes import FakeSystem, MakeContext, SigningKey, put_rendered_rootfs

PACKAGE_BYTES = b"the agent package\n"
CONFIG_PATH = "/opt/aws/amazon-cloudwatch-agent/etc/bakery/agent-config.json"


@pytest.fixture
def agent_context(
    make_context: MakeContext, fake_system: FakeSystem, render_stage: Callable[..., Path]
) -> Callable[..., object]:
    """An install-agent context whose plan points at a package file in the stage."""

    def make(package: str = "official", sha256: str | None = None, **agent_changes: object):
        package_file = fake_system.root / "tmp/bakery/artifacts/agent/amazon-cloudwatch-agent.deb"
        package_file.parent.mkdir(parents=True, exist_ok=True)
        package_file.write_bytes(PACKAGE_BYTES)
        pin = sha256 or hashlib.sha256(PACKAGE_BYTES).hexdigest()
        url = "file:///tmp/bakery/artifacts/agent/amazon-cloudwatch-agent.deb"
        changes = {"package": package, "url": url, "sha256": pin}
        ctx = make_context("install-agent", agent={**changes, **agent_changes})
        put_rendered_rootfs(ctx, render_stage("backend"))
        return ctx

    return make


def test_sha256_mismatch_is_refused_before_anything_installs(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    ctx = agent_context(sha256="f" * 64)
    with pytest.raises(VerificationFailed, match="sha256 mismatch"):
        agent.run(ctx)
    assert fake_system.install_commands() == []


def test_verified_package_is_installed_and_first_boot_translation_set_up(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    ctx = agent_context()
    agent.run(ctx)

    assert fake_system.packages["amazon-cloudwatch-agent"] == "1.300040.0b650-1"
    assert len(fake_system.ran("apt-get", "install")) == 1
    assert {"bakery-agent-config.service", "amazon-cloudwatch-agent.service"} <= (
        fake_system.enabled
    )
    assert (ctx.path(CONFIG_PATH)).is_file()
    assert f"AGENT_CONFIG={CONFIG_PATH}" in ctx.path("/etc/bakery/agent.env").read_text()
    for path in agent.ROOTFS_FILES:
        assert ctx.path(path).is_file(), path
    assert ctx.path("/usr/local/libexec/bakery/translate-agent-config").stat().st_mode & 0o111
    assert "adm" in fake_system.groups["cwagent"]
    # Neither started nor translated at bake time: no region may be baked in.
    assert not fake_system.ran("systemctl", "start")
    assert not any("fetch-config" in " ".join(command) for command in fake_system.commands)


def test_second_run_installs_nothing(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    ctx = agent_context()
    agent.run(ctx)
    fake_system.reset_log()

    agent.run(ctx)

    assert fake_system.install_commands() == []


def test_other_installed_version_is_replaced(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    fake_system.packages["amazon-cloudwatch-agent"] = "1.300039.1-1"
    agent.run(agent_context())
    assert fake_system.packages["amazon-cloudwatch-agent"] == "1.300040.0b650-1"


def test_package_older_than_the_minimum_is_refused(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    fake_system.package_file = ("amazon-cloudwatch-agent", "1.300039.1-1")
    with pytest.raises(ProvisionError, match=r"older than 1\.300040\.0"):
        agent.run(agent_context())
    assert fake_system.install_commands() == []


def test_installed_agent_older_than_the_minimum_fails(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    fake_system.agent_reports = "1.300039.1"
    with pytest.raises(ProvisionError, match=r"installed agent is 1\.300039\.1, older than"):
        agent.run(agent_context())


def test_test_double_skips_the_minimum_and_says_so(
    agent_context: Callable[..., object],
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_system.package_file = ("amazon-cloudwatch-agent", "0.1.0+bakery.testdouble")
    fake_system.agent_reports = "0.1.0+bakery.testdouble"

    agent.run(agent_context(package="test-double"))

    assert "TEST DOUBLE" in capsys.readouterr().out


def test_a_running_agent_is_stopped(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    fake_system.active.add("amazon-cloudwatch-agent.service")
    agent.run(agent_context())
    assert fake_system.ran("systemctl", "stop", "amazon-cloudwatch-agent.service")


def test_missing_agent_user_is_an_error(
    agent_context: Callable[..., object], fake_system: FakeSystem
) -> None:
    fake_system.groups.clear()
    fake_system.force("id", returncode=1)
    with pytest.raises(ProvisionError, match="no cwagent user"):
        agent.run(agent_context())


def test_scripts_stay_executable_after_a_lossy_upload(
    agent_context: Callable[..., object],
) -> None:
    ctx = agent_context()
    script = ctx.rootfs / "usr/local/libexec/bakery/translate-agent-config"
    script.chmod(0o644)
    agent.run(ctx)
    assert (
        ctx.path("/usr/local/libexec/bakery/translate-agent-config").stat().st_mode & 0o777 == 0o755
    )


@pytest.fixture
def signed_agent_context(
    make_context: MakeContext,
    fake_system: FakeSystem,
    render_stage: Callable[..., Path],
    signing_keys: tuple[SigningKey, SigningKey],
) -> Callable[..., object]:
    """The official path: package, detached signature and key fetched, no sha256."""

    def make(signer: SigningKey, pinned_fingerprint: str):
        # As published: the package, its detached signature and the signing key.
        published = fake_system.root / "tmp/bakery/published"
        published.mkdir(parents=True, exist_ok=True)
        package = published / "amazon-cloudwatch-agent.deb"
        package.write_bytes(PACKAGE_BYTES)
        signer.sign(package)
        shutil.copyfile(signer.public_key, published / "agent.gpg")
        changes = {
            "package": "official",
            "url": "file:///tmp/bakery/published/amazon-cloudwatch-agent.deb",
            "signature_url": "file:///tmp/bakery/published/amazon-cloudwatch-agent.deb.sig",
            "gpg_key_url": "file:///tmp/bakery/published/agent.gpg",
            "gpg_fingerprint": pinned_fingerprint,
            "sha256": None,
        }
        ctx = make_context("install-agent", agent=changes)
        put_rendered_rootfs(ctx, render_stage("backend"))
        return ctx

    return make


def test_package_signed_by_the_pinned_key_is_installed(
    signed_agent_context: Callable[..., object],
    fake_system: FakeSystem,
    signing_keys: tuple[SigningKey, SigningKey],
) -> None:
    pinned, _ = signing_keys
    agent.run(signed_agent_context(pinned, pinned.fingerprint))
    assert fake_system.packages["amazon-cloudwatch-agent"] == "1.300040.0b650-1"


def test_key_with_a_wrong_fingerprint_is_refused_before_installing(
    signed_agent_context: Callable[..., object],
    fake_system: FakeSystem,
    signing_keys: tuple[SigningKey, SigningKey],
) -> None:
    pinned, other = signing_keys
    with pytest.raises(VerificationFailed, match="not the pinned"):
        agent.run(signed_agent_context(other, pinned.fingerprint))
    assert fake_system.install_commands() == []
