"""The package-manager interface: apt and dnf command lines, names per OS, idempotence."""

from __future__ import annotations

import pytest
from bakery_provision.packages import Apt, Dnf, package_names
from provisioner_fakes import FakeSystem, MakeContext


def test_apt_installs_noninteractively_without_recommends_keeping_old_configs(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context(os="debian12")
    assert isinstance(ctx.packages, Apt)

    installed = ctx.packages.install(["nginx"])

    assert installed == ["nginx"]
    [command] = fake_system.ran("apt-get", "install")
    assert "-y" in command and "--no-install-recommends" in command
    assert "Dpkg::Options::=--force-confold" in command
    assert "Dpkg::Options::=--force-unsafe-io" in command  # the image is synced at shutdown
    assert command[-1] == "nginx"
    env = fake_system.envs[fake_system.commands.index(command)]
    assert env is not None and env["DEBIAN_FRONTEND"] == "noninteractive"


def test_dnf_installs_without_weak_dependencies(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context(os="al2023")
    assert isinstance(ctx.packages, Dnf)

    ctx.packages.install(["mariadb105-server"])

    [command] = fake_system.ran("dnf", "install")
    assert command[:3] == ["dnf", "install", "-y"]
    assert "--setopt=install_weak_deps=False" in command
    assert command[-1] == "mariadb105-server"
    assert fake_system.ran("rpm", "-q", "--queryformat")


def test_install_skips_what_is_installed(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context(os="debian12")
    fake_system.packages["python3"] = "3.11.2-1+b1"

    assert ctx.packages.install(["python3", "python3-venv"]) == ["python3-venv"]
    fake_system.reset_log()
    assert ctx.packages.install(["python3", "python3-venv"]) == []
    assert fake_system.install_commands() == []


def test_installed_version_reads_dpkg_and_rpm(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    fake_system.packages["nginx"] = "1.22.1-9"
    assert make_context(os="debian12").packages.installed_version("nginx") == "1.22.1-9"
    assert make_context(os="al2023").packages.installed_version("nginx") == "1.22.1-9"
    assert make_context(os="al2023").packages.installed_version("absent") is None


def test_dpkg_config_files_state_is_not_installed(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context(os="debian12")
    fake_system.force("dpkg-query", returncode=0, stdout="deinstall ok config-files\t1.0")
    assert ctx.packages.installed_version("nginx") is None


@pytest.mark.parametrize(
    ("os_family", "purpose", "names"),
    [
        ("debian12", "nginx", ("nginx",)),
        ("debian12", "mariadb", ("mariadb-server",)),
        ("debian12", "python", ("python3", "python3-venv")),
        ("al2023", "nginx", ("nginx",)),
        ("al2023", "mariadb", ("mariadb105-server",)),
        ("al2023", "python", ("python3.11", "python3.11-pip")),
    ],
)
def test_package_names_per_os(os_family: str, purpose: str, names: tuple[str, ...]) -> None:
    assert package_names(os_family, purpose) == names


def test_local_packages_install_with_their_dependencies(
    make_context: MakeContext, fake_system: FakeSystem, tmp_path
) -> None:
    package = tmp_path / "agent.deb"
    package.write_bytes(b"deb")
    make_context(os="debian12").packages.install_local(package)
    make_context(os="al2023").packages.install_local(package)
    assert fake_system.ran("apt-get", "install")[0][-1] == str(package)
    assert fake_system.ran("dnf", "install")[0][-1] == str(package)


def test_clean_drops_apt_lists(make_context: MakeContext, fake_system: FakeSystem) -> None:
    ctx = make_context(os="debian12")
    lists = ctx.path("/var/lib/apt/lists")
    (lists / "partial").mkdir(parents=True)
    (lists / "example.invalid_dists_bookworm_InRelease").write_text("x")

    removed = ctx.packages.clean()

    assert fake_system.ran("apt-get", "clean")
    assert sorted(removed) == [
        "/var/lib/apt/lists/example.invalid_dists_bookworm_InRelease",
        "/var/lib/apt/lists/partial",
    ]
    assert list(lists.iterdir()) == []


def test_dnf_clean_all(make_context: MakeContext, fake_system: FakeSystem) -> None:
    make_context(os="al2023").packages.clean()
    assert fake_system.ran("dnf", "clean", "all")
