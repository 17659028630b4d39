"""Verification before installation: sha256 pins, and detached GPG signatures by the
pinned key only (real gpg, with a throwaway key made for the test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bakery_provision.commands import CommandRunner
from bakery_provision.signatures import (
    VerificationFailed,
    check_gpg_signature,
    check_sha256,
    primary_fingerprints,
    sha256_of,
    signing_key_fingerprint,
)
from provisioner_fakes import SigningKey

needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed here")


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "amazon-cloudwatch-agent.deb"
    path.write_bytes(b"pretend this is the agent\n")
    return path


def test_sha256_match_passes(package: Path) -> None:
    check_sha256(package, sha256_of(package).upper())


def test_sha256_mismatch_is_refused(package: Path) -> None:
    with pytest.raises(VerificationFailed, match=r"sha256 mismatch .* refusing to install"):
        check_sha256(package, "0" * 64)


@needs_gpg
def test_signature_by_the_pinned_key_is_accepted(
    signing_keys: tuple[SigningKey, SigningKey], package: Path
) -> None:
    pinned, _ = signing_keys
    signature = pinned.sign(package)
    spaced = " ".join(pinned.fingerprint[i : i + 4] for i in range(0, 40, 4))

    signer = check_gpg_signature(CommandRunner(), package, signature, pinned.public_key, spaced)

    assert signer == pinned.fingerprint


@needs_gpg
def test_key_with_another_fingerprint_is_refused(
    signing_keys: tuple[SigningKey, SigningKey], package: Path
) -> None:
    pinned, other = signing_keys
    signature = other.sign(package)
    with pytest.raises(VerificationFailed, match=f"not the pinned {pinned.fingerprint}"):
        check_gpg_signature(
            CommandRunner(), package, signature, other.public_key, pinned.fingerprint
        )


@needs_gpg
def test_signature_by_another_key_is_refused(
    signing_keys: tuple[SigningKey, SigningKey], package: Path, tmp_path: Path
) -> None:
    pinned, other = signing_keys
    signature = other.sign(package)
    # Both keys in the downloaded key file: only the pinned one may have signed.
    both = tmp_path / "both.asc"
    both.write_bytes(pinned.public_key.read_bytes() + other.public_key.read_bytes())
    with pytest.raises(VerificationFailed, match="not by the pinned key"):
        check_gpg_signature(CommandRunner(), package, signature, both, pinned.fingerprint)


@needs_gpg
def test_tampered_package_is_refused(
    signing_keys: tuple[SigningKey, SigningKey], package: Path
) -> None:
    pinned, _ = signing_keys
    signature = pinned.sign(package)
    package.write_bytes(b"something else\n")
    with pytest.raises(VerificationFailed, match="does not verify"):
        check_gpg_signature(
            CommandRunner(), package, signature, pinned.public_key, pinned.fingerprint
        )


def test_primary_fingerprints_skip_subkeys() -> None:
    listing = "\n".join(
        [
            "pub:u:255:22:AAAA:1:::u:::scESC:::::ed25519:::0:",
            "fpr:::::::::" + "A" * 40 + ":",
            "uid:u::::1::X::Name <n@example.invalid>::::::::::0:",
            "sub:u:255:18:BBBB:1::::::e:::::cv25519::",
            "fpr:::::::::" + "B" * 40 + ":",
        ]
    )
    assert primary_fingerprints(listing) == ["A" * 40]


def test_signing_key_is_the_primary_key_of_validsig() -> None:
    status = (
        "[GNUPG:] NEWSIG\n[GNUPG:] VALIDSIG "
        + "C" * 40
        + " 2024-01-01 1704067200 0 4 0 22 10 00 "
        + "D" * 40
        + "\n"
    )
    assert signing_key_fingerprint(status) == "D" * 40
    assert signing_key_fingerprint("[GNUPG:] BADSIG X\n") is None
