"""Image hygiene: every instance starts as a new machine, and nothing of the build, its
identity or its secrets is left on the image (the seal step's promises, seen from a
freshly launched instance)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from guest import boot_time, http_get, mtime, sudo_exists, sudo_lines, sudo_text
from roles import ALL

ROLES = ALL

SSH_USER = "admin"
HARNESS_KEY_COMMENT = "bakery-verify"
BUILD_KEY_COMMENT = "bakery-build"
BAKE_CA = "/usr/local/share/ca-certificates/bakery-bake-ca.crt"
# Folders the app and the web server read from, and the settings every unit reads.
NOT_WORLD_WRITABLE = ("/var/www/bakery", "/etc/bakery")
PRIVATE_KEY_SEARCHED = ("/etc", "/home", "/root", "/opt", "/usr/local", "/var")
PEM_PRIVATE_KEY = r"^-----BEGIN ([A-Z0-9]+ )?PRIVATE KEY-----"
IMDS = "http://169.254.169.254/latest/meta-data/"


def key_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_ssh_host_keys_were_made_at_this_boot(host: Any) -> None:
    keys = sudo_lines(host, "ls /etc/ssh/ssh_host_*_key")
    assert keys, "no SSH host keys"
    booted = boot_time(host)
    for key in keys:
        assert mtime(host, key) >= booted, f"{key} is older than this boot: baked into the image"


def test_admin_has_only_the_launch_key(host: Any, expect: dict[str, Any]) -> None:
    keys = key_lines(sudo_text(host, f"/home/{SSH_USER}/.ssh/authorized_keys"))
    assert len(keys) == 1, keys
    # The boot harness's key locally; on AWS the gate names its key pair's, if it knows it.
    comment = expect.get("ssh_key_comment")
    if comment is None and expect["target"] == "local":
        comment = HARNESS_KEY_COMMENT
    if comment is not None:
        assert keys[0].split()[-1] == comment


def test_no_other_account_has_a_usable_key(host: Any) -> None:
    files = sudo_lines(
        host, "ls /root/.ssh/authorized_keys* /home/*/.ssh/authorized_keys* 2>/dev/null || true"
    )
    for path in files:
        if path.startswith(f"/home/{SSH_USER}/"):
            continue
        for key in key_lines(sudo_text(host, path)):
            # cloud-init's disable_root gives root the launch key behind a forced command
            # that only says "log in as admin" and exits 142: it opens no shell.
            forced_out = key.startswith(("no-", "command=")) and "exit 142" in key
            assert path.startswith("/root/") and forced_out, f"{path} lets in: {key[:70]}..."


def test_the_build_key_is_nowhere(host: Any) -> None:
    found = sudo_lines(host, f"grep -rlsF {BUILD_KEY_COMMENT} /root /home /etc/ssh || true")
    assert found == []


def test_no_shell_history(host: Any) -> None:
    found = sudo_lines(
        host, "ls -d /root/.*_history /home/*/.*_history /root/.lesshst 2>/dev/null || true"
    )
    assert found == []


def test_no_aws_credentials(host: Any) -> None:
    assert sudo_lines(host, "ls -d /root/.aws /home/*/.aws 2>/dev/null || true") == []
    environment = host.file("/etc/environment")
    if environment.exists:
        text = environment.content_string
        assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)", text)


def test_no_private_keys_but_this_boots_host_keys(host: Any) -> None:
    found = sudo_lines(
        host,
        f"grep -rlsE '{PEM_PRIVATE_KEY}' {' '.join(PRIVATE_KEY_SEARCHED)} 2>/dev/null || true",
    )
    assert [path for path in found if not re.fullmatch(r"/etc/ssh/ssh_host_\w+_key", path)] == []


def test_bake_ca_is_gone(host: Any) -> None:
    assert not sudo_exists(host, BAKE_CA)
    assert sudo_lines(host, "ls /etc/ssl/certs | grep -i bakery || true") == []


def test_no_packer_or_bake_leftovers(host: Any) -> None:
    found = sudo_lines(
        host,
        "find /tmp /var/tmp -maxdepth 1 \\( -name bakery -o -name 'packer-*' "
        "-o -name 'script_*.sh' \\) -print",
    )
    assert found == []


def test_machine_id_is_this_instances(host: Any) -> None:
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), repr(machine_id)
    # Sealed empty, so systemd made it at this boot, not the build machine's.
    assert mtime(host, "/etc/machine-id") >= boot_time(host)
    dbus = host.file("/var/lib/dbus/machine-id")
    if dbus.exists:
        assert dbus.content_string.strip() == machine_id, "D-Bus keeps a stale machine id"


def test_nothing_is_world_writable_where_services_read(host: Any, expect: dict[str, Any]) -> None:
    folders = [f for f in (expect.get("app_dir"), *NOT_WORLD_WRITABLE) if f]
    existing = [folder for folder in folders if host.file(folder).is_directory]
    assert existing
    found = sudo_lines(host, f"find {' '.join(existing)} -xdev -perm -0002 ! -type l -print")
    assert found == []


def test_package_caches_are_clean(host: Any) -> None:
    assert sudo_lines(host, "ls /var/cache/apt/archives/*.deb 2>/dev/null || true") == []
    lists = sudo_lines(host, "ls /var/lib/apt/lists 2>/dev/null || true")
    assert [name for name in lists if name not in ("lock", "partial", "auxfiles")] == []


def test_instance_metadata_requires_imdsv2(host: Any, expect: dict[str, Any]) -> None:
    if expect["target"] != "aws":
        pytest.skip("local VM: there is no metadata service, and none may be contacted")
    status, _ = http_get(host, IMDS)
    assert status == 401, f"a token-less metadata request got {status}, not 401"


def test_root_volume_is_encrypted() -> None:
    pytest.skip(
        "not visible from inside the instance: the AWS side checks the AMI's snapshots "
        "(Encrypted) through the EC2 API"
    )
