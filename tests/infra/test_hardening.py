"""Hardening, measured: lynis (this host's Debian package, copied onto the instance)
audits the booted image; its hardening index must reach `min_hardening_index`, and
nothing of lynis stays on the instance afterwards.

The index and the lowest-scoring findings go into the JUnit report as test-suite
properties (`hardening_index`, `hardening`), from which the gate writes them into the
image record (bakery/verify/suites.py). Plus the hardening the `harden` step promises,
checked as a person would: sshd's effective settings, a kernel parameter, a module.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from guest import sudo_exists, sudo_lines
from roles import ALL

from bakery.verify.hardening import (
    LYNIS_GATE_PROFILE,
    LYNIS_SPEEDUPS,
    HardeningAudit,
    hardening_failure,
    parse_lynis,
    speed_up_lynis,
)

ROLES = ALL

# Debian's lynis package on this host, laid out as lynis's own tarball (`--usecwd`).
LYNIS_PARTS = {
    "lynis": Path("/usr/sbin/lynis"),
    "include": Path("/usr/share/lynis/include"),
    "db": Path("/usr/share/lynis/db"),
    "plugins": Path("/etc/lynis/plugins"),
    "default.prf": Path("/etc/lynis/default.prf"),
}
# A command line carries at most 128 KiB in one argument (MAX_ARG_STRLEN).
CHUNK = 96 * 1024
# A bound, not a goal: the gate's copy took 16 min under TCG on a loaded 2-core host.
LYNIS_TIMEOUT_S = 1500
# What lynis writes outside its folder when not told otherwise: must not exist after.
LYNIS_DEFAULT_OUTPUTS = ("/var/log/lynis.log", "/var/log/lynis-report.dat")


def lynis_archive() -> bytes:
    """The host's lynis as a root-owned tar.gz, with the gate's speed-ups and profile
    (bakery/verify/hardening.py), or a failure naming the package to install."""
    missing = [str(path) for path in LYNIS_PARTS.values() if not path.exists()]
    if missing:
        pytest.fail(f"lynis is not installed on this host ({missing[0]}): apt-get install lynis")
    edited = {name for name, _, _ in LYNIS_SPEEDUPS}

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        # lynis refuses include files that are not root's or are group/world-writable.
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode &= 0o755
        return None if info.name in edited else info  # added below, edited

    def add_text(archive: tarfile.TarFile, name: str, text: str, mode: int) -> None:
        data = text.encode("utf-8")
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uname, info.gname = len(data), mode, "root", "root"
        archive.addfile(info, io.BytesIO(data))

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, path in LYNIS_PARTS.items():
            archive.add(path, arcname=name, filter=as_root)
        for name in sorted(edited):
            part, _, rest = name.partition("/")
            original = LYNIS_PARTS[part] / rest
            add_text(archive, name, speed_up_lynis(name, original.read_text()), 0o644)
        add_text(archive, "custom.prf", LYNIS_GATE_PROFILE, 0o644)
    return buffer.getvalue()


def minimum_index(expect: dict[str, Any]) -> int:
    return int(expect.get("min_hardening_index", 0))


@pytest.fixture(scope="module")
def lynis_folder(host: Any, expect: dict[str, Any]) -> Iterator[str]:
    """lynis unpacked in a private root-owned folder on the instance, removed after."""
    if minimum_index(expect) == 0:
        pytest.skip("verify.min_hardening_index is 0 (set by a --config layer or --set): no audit")
    folder = host.check_output("sudo mktemp -d /root/bakery-lynis.XXXXXX")
    try:
        encoded = base64.b64encode(lynis_archive()).decode("ascii")
        for start in range(0, len(encoded), CHUNK):
            host.check_output(
                "sudo sh -c %s",
                f"printf %s '{encoded[start : start + CHUNK]}' >> {folder}/lynis.b64",
            )
        host.check_output(
            "sudo sh -c %s",
            f"base64 -d {folder}/lynis.b64 | tar -C {folder} -xzf -",
        )
        yield folder
    finally:
        host.run("sudo rm -rf %s", folder)
    # An error here fails the module's last check: the copy must not stay.
    assert not sudo_exists(host, folder), f"lynis's copy {folder} is still on the instance"


@pytest.fixture(scope="module")
def audit(host: Any, lynis_folder: str) -> HardeningAudit:
    """One lynis audit of the instance (`--quick`: no pauses; report and log in its folder)."""
    run = host.run(
        "sudo sh -c %s",
        f"cd {lynis_folder} && timeout {LYNIS_TIMEOUT_S} ./lynis audit system --usecwd --quick "
        f"--no-colors --report-file {lynis_folder}/report.dat --logfile {lynis_folder}/lynis.log",
    )
    report = host.run("sudo cat %s/report.dat", lynis_folder).stdout
    log = host.run("sudo cat %s/lynis.log", lynis_folder).stdout
    assert report, f"lynis wrote no report (exit {run.rc}): {run.stdout[-400:]}{run.stderr[-400:]}"
    return parse_lynis(report, log)


def test_hardening_index_reaches_the_minimum(
    audit: HardeningAudit,
    expect: dict[str, Any],
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    record_testsuite_property("hardening_index", audit.index)
    record_testsuite_property("hardening", json.dumps(audit.as_record()))
    failure = hardening_failure(audit, minimum_index(expect))
    assert failure is None, failure


def test_lynis_leaves_nothing_on_the_instance(
    host: Any, lynis_folder: str, audit: HardeningAudit
) -> None:
    leftovers = [path for path in LYNIS_DEFAULT_OUTPUTS if sudo_exists(host, path)]
    assert not leftovers, f"lynis wrote outside its folder: {leftovers}"
    # Its own folder goes when this module ends (lynis_folder); nothing was installed.
    assert not sudo_exists(host, "/usr/sbin/lynis"), "lynis is installed on the image"


def test_sshd_takes_keys_only_and_no_root_login(host: Any) -> None:
    effective = dict(line.split(" ", 1) for line in sudo_lines(host, "sshd -T") if " " in line)
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["x11forwarding"] == "no"
    assert effective["allowtcpforwarding"] == "no"
    assert "cbc" not in effective["ciphers"]
    assert "sha1" not in effective["kexalgorithms"]


def test_kernel_hardening_is_in_force(host: Any) -> None:
    assert host.sysctl("kernel.kptr_restrict") == 2
    assert host.sysctl("fs.suid_dumpable") == 0
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    refused = host.run("sudo modprobe -n -v dccp")
    assert "install /bin/true" in refused.stdout, refused.stdout
