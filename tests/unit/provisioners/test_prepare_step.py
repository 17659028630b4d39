"""prepare: wait for cloud-init, trust the bake CA if one came, refresh package lists,
have gpg, and put the launch defaults in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bakery_provision import prepare
from bakery_provision.context import StepContext
from provisioner_fakes import FakeSystem, MakeContext, put_rendered_rootfs

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
OFFICIAL_AGENT = {
    "package": "official",
    "url": "https://agent.example.test/amazon-cloudwatch-agent.deb",
}


@pytest.fixture
def prepare_context(
    make_context: MakeContext, render_stage: Callable[..., Path]
) -> Callable[..., StepContext]:
    def make(os_family: str = "debian12", with_ca: bool = False, **plan: Any) -> StepContext:
        ctx = make_context("prepare", os=os_family, **plan)
        put_rendered_rootfs(ctx, render_stage("backend", os_family))
        if with_ca:
            ca = ctx.artifacts / "ca" / "bake-ca.pem"
            ca.parent.mkdir(parents=True, exist_ok=True)
            ca.write_text(CA_PEM)
        return ctx

    return make


def test_prepare_waits_refreshes_and_installs_defaults(
    prepare_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    fake_system.programs.discard("gpg")
    ctx = prepare_context()

    prepare.run(ctx)

    assert fake_system.ran("cloud-init", "status", "--wait")
    assert fake_system.ran("apt-get", "update")
    assert "gnupg" in fake_system.packages
    defaults = ctx.path("/etc/bakery/defaults.env").read_text()
    assert "SERVICE_NAME=fastapi-backend" in defaults
    assert "PASSWORD=" not in defaults
    assert not fake_system.ran("update-ca-certificates")


def test_missing_cloud_init_is_tolerated(
    prepare_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    fake_system.programs.discard("cloud-init")
    prepare.run(prepare_context())
    assert not fake_system.ran("cloud-init")


def test_cloud_init_errors_are_reported_not_fatal(
    prepare_context: Callable[..., StepContext],
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_system.force("cloud-init", returncode=2, stdout="status: done\n")
    prepare.run(prepare_context())
    assert "cloud-init finished with exit code 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("os_family", "anchor", "refresh"),
    [
        (
            "debian12",
            "/usr/local/share/ca-certificates/bakery-bake-ca.crt",
            "update-ca-certificates",
        ),
        ("al2023", "/etc/pki/ca-trust/source/anchors/bakery-bake-ca.pem", "update-ca-trust"),
    ],
)
def test_bake_ca_is_trusted_once(
    prepare_context: Callable[..., StepContext],
    fake_system: FakeSystem,
    os_family: str,
    anchor: str,
    refresh: str,
) -> None:
    ctx = prepare_context(os_family, with_ca=True, agent=OFFICIAL_AGENT)
    prepare.run(ctx)
    assert ctx.path(anchor).read_text() == CA_PEM
    assert len(fake_system.ran(refresh)) == 1

    fake_system.reset_log()
    prepare.run(ctx)
    assert not fake_system.ran(refresh)
    assert fake_system.install_commands() == []


def _stamp_lists(ctx: StepContext, fetched_at: float) -> None:
    stamp = ctx.path(prepare.APT_LISTS_STAMP)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{fetched_at:.0f}\n")


def test_lists_the_base_image_fetched_recently_are_not_fetched_again(
    prepare_context: Callable[..., StepContext],
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctx = prepare_context()
    _stamp_lists(ctx, time.time() - 600)
    prepare.run(ctx)
    assert not fake_system.ran("apt-get", "update")
    assert "package lists fetched 10 min ago by the base image: kept" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fetched_ago_s",
    [prepare.APT_LISTS_FRESH_S + 60, -3600],
    ids=["older-than-allowed", "stamp-from-the-future"],
)
def test_old_or_doubtful_lists_are_fetched_again(
    prepare_context: Callable[..., StepContext], fake_system: FakeSystem, fetched_ago_s: float
) -> None:
    ctx = prepare_context()
    _stamp_lists(ctx, time.time() - fetched_ago_s)
    prepare.run(ctx)
    assert fake_system.ran("apt-get", "update")


def _apt_source(ctx: StepContext, uri: str) -> None:
    source = ctx.path("/etc/apt/sources.list.d/debian.sources")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(f"Types: deb\nURIs: {uri}\nSuites: bookworm\nComponents: main\n")


def test_bake_ca_is_not_trusted_when_nothing_is_fetched_over_https(
    prepare_context: Callable[..., StepContext],
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctx = prepare_context(with_ca=True)  # the local test double comes by file://
    _apt_source(ctx, "http://deb.debian.org/debian")
    prepare.run(ctx)
    assert not ctx.path("/usr/local/share/ca-certificates/bakery-bake-ca.crt").exists()
    assert not fake_system.ran("update-ca-certificates")
    assert "bake CA not trusted: this bake fetches nothing over HTTPS" in capsys.readouterr().out


def test_bake_ca_is_trusted_for_an_https_apt_source(
    prepare_context: Callable[..., StepContext], fake_system: FakeSystem
) -> None:
    ctx = prepare_context(with_ca=True)
    _apt_source(ctx, "https://mirror.example.test/debian")
    prepare.run(ctx)
    assert ctx.path("/usr/local/share/ca-certificates/bakery-bake-ca.crt").read_text() == CA_PEM
    assert len(fake_system.ran("update-ca-certificates")) == 1
