"""Verifying a downloaded package before anything installs it: sha256, or a detached
GPG signature made by the pinned key (checked in a throwaway keyring)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from bakery_provision.commands import CommandRunner
from bakery_provision.errors import ProvisionError


class VerificationFailed(ProvisionError):
    """The package is not what the plan pinned: it must not be installed."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Refuse a file whose sha256 is not the pinned one."""
    actual = sha256_of(path)
    if actual != expected.strip().lower():
        raise VerificationFailed(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}; refusing to "
            "install it (a changed download, or a stale pin in config)"
        )


def normalise_fingerprint(value: str) -> str:
    return value.replace(" ", "").upper()


def primary_fingerprints(colons_output: str) -> list[str]:
    """Fingerprints of primary keys in `gpg --with-colons --fingerprint` output."""
    found = []
    record = ""
    for line in colons_output.splitlines():
        kind, *rest = line.split(":")
        if kind in ("pub", "sub", "sec", "ssb"):
            record = kind
        elif kind == "fpr":
            # The fpr line right after a pub line is the primary key's.
            if record == "pub" and len(rest) > 8:
                found.append(rest[8].upper())
            record = ""
    return found


def signing_key_fingerprint(status_output: str) -> str | None:
    """The primary-key fingerprint of a good signature in `gpg --status-fd` output."""
    for line in status_output.splitlines():
        parts = line.split()
        if parts[:2] == ["[GNUPG:]", "VALIDSIG"] and len(parts) >= 3:
            # VALIDSIG <sig fpr> ... <primary key fpr>; old gpg omits the last field.
            return (parts[11] if len(parts) >= 12 else parts[2]).upper()
    return None


def check_gpg_signature(
    runner: CommandRunner, package: Path, signature: Path, key: Path, fingerprint: str
) -> str:
    """Refuse the package unless the signature is good and made by the pinned key.

    The key is imported into a throwaway GNUPGHOME, so nothing about it outlives the
    check. Returns the fingerprint that signed.
    """
    pinned = normalise_fingerprint(fingerprint)
    home = Path(tempfile.mkdtemp(prefix="bakery-gnupg-"))
    try:
        home.chmod(0o700)
        gpg = ["gpg", "--batch", "--no-tty", "--homedir", str(home)]
        runner.run([*gpg, "--import", str(key)])
        listing = runner.run([*gpg, "--with-colons", "--fingerprint"])
        imported = primary_fingerprints(listing.stdout)
        if pinned not in imported:
            raise VerificationFailed(
                f"the GPG key from {key.name} has fingerprint(s) {', '.join(imported) or 'none'}, "
                f"not the pinned {pinned}; refusing to trust it (check agent.sources in config)"
            )
        result = runner.run(
            [*gpg, "--status-fd", "1", "--verify", str(signature), str(package)], check=False
        )
        signer = signing_key_fingerprint(result.stdout)
        if not result.ok or signer is None:
            tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise VerificationFailed(
                f"the GPG signature {signature.name} does not verify {package.name}: {tail}; "
                "refusing to install it"
            )
        if signer != pinned:
            raise VerificationFailed(
                f"{package.name} is signed by {signer}, not by the pinned key {pinned}; "
                "refusing to install it"
            )
        return signer
    finally:
        shutil.rmtree(home, ignore_errors=True)
