"""Debian packages with a pending security update: the image's dpkg list against the
security suite's Packages index, fetched through the host's apt mirror for that suite
(bakery/local/mirror.py: the repo names no mirror), its InRelease checked with gpgv
against Debian's archive keyring and the index against the sha256 InRelease lists."""

from __future__ import annotations

import hashlib
import json
import lzma
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Packages
from debian.debian_support import version_compare

from bakery.durable import write_atomically
from bakery.errors import MissingTool, OperationFailed
from bakery.local.base_image import DEBIAN_ARCH
from bakery.local.mirror import host_debian_mirror

# What each bakery OS's security suite is called.
SECURITY_SUITES = {"debian12": "bookworm-security"}
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FETCH_TIMEOUT_S = 60


@dataclass(frozen=True)
class PendingUpdate:
    """An installed package the security suite has a newer version of."""

    package: str
    installed: str
    fixed: str

    @property
    def id(self) -> str:
        return f"DEBSEC:{self.package}={self.fixed}"


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, OSError) as exc:
        raise OperationFailed(
            f"cannot fetch {url} ({exc}): the vulnerability gate needs the Debian security "
            "suite through this host's apt mirror; restore the network, or pass "
            "--no-vuln-gate (recorded in the image record as skipped)"
        ) from exc


def verified_release(signed: bytes, keyring: Path = KEYRING) -> str:
    """InRelease's text, once gpgv accepts its signature by Debian's archive keys."""
    if not keyring.is_file():
        raise MissingTool("debian-archive-keyring", f"install it: {keyring} is missing")
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as file:
        file.write(signed)
        file.flush()
        try:
            result = subprocess.run(
                ["gpgv", "--keyring", str(keyring), file.name],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise MissingTool("gpgv", "install it with `apt-get install gpgv`") from exc
    if result.returncode != 0:
        raise OperationFailed(f"the security suite's InRelease fails gpgv: {result.stderr.strip()}")
    return signed.decode("utf-8", errors="replace")


def listed_sha256(release: str, name: str) -> str:
    """The sha256 InRelease gives for `name` (e.g. main/binary-amd64/Packages.xz)."""
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        fields = line.split()
        if in_sha256 and len(fields) == 3 and fields[2] == name:
            return fields[0]
    raise OperationFailed(f"the security suite's InRelease lists no sha256 for {name}")


def parse_index(text: str) -> dict[str, str]:
    """package → newest version in a Packages index."""
    newest: dict[str, str] = {}
    for stanza in Packages.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        name, version = stanza.get("Package"), stanza.get("Version")
        if name and version and (name not in newest or version_compare(version, newest[name]) > 0):
            newest[name] = version
    return newest


def security_index(
    os_family: str, arch: str = "x86_64", keyring: Path = KEYRING, cache: Path | None = None
) -> tuple[str, dict[str, str]]:
    """(what was read, package → version) of the OS's security suite, verified.

    InRelease is fetched and checked every time (a new advisory must reach the gate at
    once). The parsed index is kept in `cache` under the sha256 InRelease lists for it:
    content-addressed, so an unchanged suite costs no download and no parse (deb822
    takes most of a second for it, most of a no-op `invoke build`)."""
    suite = SECURITY_SUITES.get(os_family)
    if suite is None:
        raise OperationFailed(f"the vulnerability gate knows no security suite for {os_family}")
    debian_arch = DEBIAN_ARCH.get(arch)  # an arm64 image is judged by the arm64 index
    if debian_arch is None:
        raise OperationFailed(f"the vulnerability gate knows no Debian architecture for {arch}")
    base = host_debian_mirror(suite).rstrip("/") + f"/dists/{suite}"
    release = verified_release(_get(f"{base}/InRelease"), keyring)
    name = f"main/binary-{debian_arch}/Packages.xz"
    sha = listed_sha256(release, name)
    date = next((line[6:] for line in release.splitlines() if line.startswith("Date: ")), "")
    described = f"{suite} main {debian_arch} ({date})"
    kept = cache / debian_arch / f"{sha}.json" if cache else None
    if kept is not None and kept.is_file():
        try:
            index = json.loads(kept.read_text())
        except (OSError, ValueError):
            index = None  # a damaged entry is parsed again below
        if isinstance(index, dict):
            return described, index
    packed = _get(f"{base}/{name}")
    if hashlib.sha256(packed).hexdigest() != sha:
        raise OperationFailed(f"{suite} {name} does not match the sha256 in its InRelease")
    index = parse_index(lzma.decompress(packed).decode())
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        for older in kept.parent.glob("*.json"):  # the suite moved on: only this one is read
            older.unlink(missing_ok=True)
        write_atomically(kept, json.dumps(index))
    return described, index


def pending_updates(installed: dict[str, str], index: dict[str, str]) -> list[PendingUpdate]:
    """Installed packages the security suite holds a newer version of."""
    return [
        PendingUpdate(name, version, index[name])
        for name, version in sorted(installed.items())
        if name in index and version_compare(index[name], version) > 0
    ]
