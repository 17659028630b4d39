"""harden: sshd drop-in, sysctl, disabled modules, login.defs, core dumps and banners
from config's `hardening` section, each setting under its reason; idempotent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from bakery_provision import harden
from bakery_provision.context import StepContext
from bakery_provision.errors import ProvisionError
from provisioner_fakes import FakeSystem, MakeContext, put_base_image_files

from bakery.config import load_config
from bakery.render import bake_plan


@pytest.fixture
def harden_context(make_context: MakeContext, fake_system: FakeSystem) -> StepContext:
    plan = bake_plan(load_config("backend", "local"))
    ctx = make_context("harden", hardening=plan["hardening"], steps=plan["steps"])
    put_base_image_files(ctx.root)
    fake_system.programs.add("sshd")
    return ctx


def settings_of(text: str) -> dict[str, str]:
    """`key value` lines (comments skipped), as sshd and login.defs read them."""
    pairs = [line.split(None, 1) for line in text.splitlines() if line and line[0] != "#"]
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def test_every_setting_lands_under_its_reason(harden_context: StepContext) -> None:
    harden.run(harden_context)
    drop_in = harden_context.path(harden.SSHD_DROP_IN).read_text().splitlines()
    for number, line in enumerate(drop_in):
        if line and not line.startswith("#"):
            assert drop_in[number - 1].startswith("# "), f"{line!r} has no reason above it"
    sshd = settings_of("\n".join(drop_in))
    assert sshd["PermitRootLogin"] == "no"
    assert sshd["PasswordAuthentication"] == "no"
    assert sshd["MaxAuthTries"] == "3"
    assert "cbc" not in sshd["Ciphers"]


def test_sshd_drop_in_is_validated_by_sshd(
    harden_context: StepContext, fake_system: FakeSystem
) -> None:
    harden.run(harden_context)
    assert fake_system.ran("sshd", "-t")
    mode = harden_context.path(harden.SSHD_DROP_IN).stat().st_mode & 0o777
    assert mode == 0o600


def test_sshd_without_drop_in_folder_is_refused(harden_context: StepContext) -> None:
    harden_context.path("/etc/ssh/sshd_config").write_text("UsePAM yes\n")
    with pytest.raises(ProvisionError, match="does not include"):
        harden.run(harden_context)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's client")
@pytest.mark.parametrize(
    "keyword,query", [("KexAlgorithms", "kex"), ("Ciphers", "cipher"), ("MACs", "mac")]
)
def test_sshd_algorithms_are_ones_openssh_knows(keyword: str, query: str) -> None:
    # The same OpenSSH release as Debian 12's sshd: a misspelt name would stop sshd.
    known = subprocess.run(["ssh", "-Q", query], capture_output=True, text=True, check=True)
    wanted = str(load_config("backend", "local").hardening.sshd[keyword].value).split(",")
    assert set(wanted) <= set(known.stdout.split()), set(wanted) - set(known.stdout.split())


def test_login_defs_keys_are_replaced_once_and_others_kept(harden_context: StepContext) -> None:
    harden.run(harden_context)
    text = harden_context.path("/etc/login.defs").read_text()
    values = settings_of(text)
    assert values["UMASK"] == "027"
    assert values["PASS_MIN_DAYS"] == "1"
    # Not set: an "expired" locked password would refuse the login user's key logins.
    assert values["PASS_MAX_DAYS"] == "99999"
    assert values["SHA_CRYPT_MIN_ROUNDS"] == "100000"
    assert values["MAIL_DIR"] == "/var/mail"
    assert [line.split()[0] for line in text.splitlines() if line.startswith("UMASK")] == ["UMASK"]


def test_second_run_changes_nothing(harden_context: StepContext) -> None:
    harden.run(harden_context)
    written = {path: path.read_bytes() for path in harden_context.root.rglob("*") if path.is_file()}
    harden.run(harden_context)
    again = {path: path.read_bytes() for path in harden_context.root.rglob("*") if path.is_file()}
    assert again == written


def test_modules_are_blacklisted_and_never_installed(harden_context: StepContext) -> None:
    harden.run(harden_context)
    text = harden_context.path(harden.MODPROBE_FILE).read_text()
    for module in ("cramfs", "dccp", "sctp", "usb-storage", "firewire-core"):
        assert f"install {module} /bin/true\n" in text
        assert f"blacklist {module}\n" in text


def test_kernel_parameters_core_dumps_and_banners(harden_context: StepContext) -> None:
    harden.run(harden_context)
    sysctl = harden_context.path(harden.SYSCTL_FILE).read_text()
    assert "kernel.kptr_restrict = 2\n" in sysctl
    assert "fs.suid_dumpable = 0\n" in sysctl
    assert "* hard core 0" in harden_context.path(harden.LIMITS_FILE).read_text()
    coredump = harden_context.path(harden.COREDUMP_FILE).read_text()
    assert "Storage=none" in coredump and "ProcessSizeMax=0" in coredump
    assert "\nulimit -c 0\n" in harden_context.path(harden.PROFILE_CORE_FILE).read_text()
    for banner in harden.BANNER_FILES:
        assert "Authorized access only" in harden_context.path(banner).read_text()


def test_plan_without_hardening_is_refused(
    make_context: MakeContext, harden_context: StepContext
) -> None:
    ctx = make_context("harden", hardening={})
    with pytest.raises(ProvisionError, match="hardening lacks sshd"):
        harden.run(ctx)


def test_step_runs_on_every_role(tmp_path: Path) -> None:
    for role in ("backend", "frontend", "database"):
        assert "harden" in bake_plan(load_config(role, "local"))["steps"]
        assert "harden" in bake_plan(load_config(role, "aws"))["steps"]


def test_idle_shells_time_out_and_the_profile_keeps_the_rest(harden_context: StepContext) -> None:
    harden.run(harden_context)
    profile = harden_context.path(harden.PROFILE).read_text()
    assert "TMOUT=900\nreadonly TMOUT\nexport TMOUT\n" in profile
    assert profile.startswith('if [ "$(id -u)" -eq 0 ]; then')
    assert "export PATH\n" in profile
    # The shell itself reads it: the block is valid sh and sets a read-only TMOUT.
    shown = subprocess.run(
        ["sh", "-c", f". {harden_context.path(harden.PROFILE)}; echo $TMOUT; TMOUT=1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.stdout.splitlines()[0] == "900"
    assert shown.returncode != 0 and "read only" in shown.stderr


def test_hardening_packages_of_the_os_family_are_installed_once(
    harden_context: StepContext, fake_system: FakeSystem
) -> None:
    harden.run(harden_context)
    assert {"libpam-passwdqc", "libpam-tmpdir"} <= set(fake_system.packages)
    fake_system.reset_log()
    harden.run(harden_context)
    assert fake_system.install_commands() == []
