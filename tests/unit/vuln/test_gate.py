"""The vulnerability gate (bakery/vuln): pending Debian security updates and Python
advisories from the repository's dated snapshot, accepted only by unexpired entries of
the reviewed allow-list; the result lands in the record."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import lzma
import subprocess
from pathlib import Path

import pytest
from image_records import local_record

from bakery.errors import BadInput, OperationFailed
from bakery.records import ImageRecord, read_record, write_record
from bakery.report import vulnerability_counts
from bakery.vuln import debian
from bakery.vuln.advisories import SNAPSHOT, advisories_for, build_snapshot, load_snapshot
from bakery.vuln.allowlist import load_allowlist
from bakery.vuln.debian import listed_sha256, parse_index, verified_release
from bakery.vuln.gate import check_record, scan

TODAY = dt.date(2026, 12, 1)
# CVE-2024-3651 (PYSEC-2024-60): idna before 3.7; in the snapshot in config/advisories/.
VULNERABLE_IDNA = "idna==3.6"
SECURITY_INDEX = {"libssl3": "3.0.15-1~deb12u1", "openssh-server": "1:9.2p1-2+deb12u3"}


def backend_record(folder: Path, pins: list[str]) -> ImageRecord:
    return local_record(
        folder / "record.json",
        details={
            "manifest": {
                "packages": [
                    "libssl3\t3.0.15-1~deb12u1\tamd64",
                    "openssh-server\t1:9.2p1-2+deb12u3\tamd64",
                ],
                "pip_freeze": pins,
            }
        },
    )


def allowlist(folder: Path, *entries: str) -> Path:
    path = folder / "vuln-allowlist.yaml"
    path.write_text("accepted:\n" + "".join(entries))
    return path


def entry(id: str, package: str, expires: str) -> str:
    return f"- id: {id}\n  package: {package}\n  reason: reviewed\n  expires: {expires}\n"


def test_a_pinned_known_vulnerable_version_is_rejected_from_the_snapshot(tmp_path: Path) -> None:
    record = backend_record(tmp_path, [VULNERABLE_IDNA, "idna-ssl==1.0"])
    report = scan(record, SECURITY_INDEX, load_snapshot(), [], TODAY)
    assert not report.passed
    [finding] = report.open
    assert (finding.id, finding.package, finding.installed, finding.fixed) == (
        "PYSEC-2024-60",
        "idna",
        "3.6",
        "3.7",
    )
    assert report.counts() == {"unrated": 1}


def test_the_fixed_version_passes(tmp_path: Path) -> None:
    record = backend_record(tmp_path, ["idna==3.7"])
    assert scan(record, SECURITY_INDEX, load_snapshot(), [], TODAY).passed


def test_a_pending_debian_security_update_is_a_finding(tmp_path: Path) -> None:
    index = {**SECURITY_INDEX, "libssl3": "3.0.15-1~deb12u2", "zlib1g": "1:1.2.13.dfsg-1+x"}
    report = scan(backend_record(tmp_path, []), index, load_snapshot(), [], TODAY)
    [finding] = report.open
    assert finding.id == "DEBSEC:libssl3=3.0.15-1~deb12u2"
    assert (finding.installed, finding.fixed) == ("3.0.15-1~deb12u1", "3.0.15-1~deb12u2")


def test_an_allow_listed_finding_passes_with_its_entry_named(tmp_path: Path) -> None:
    accepted = load_allowlist(allowlist(tmp_path, entry("PYSEC-2024-60", "idna", "2027-01-31")))
    report = scan(backend_record(tmp_path, [VULNERABLE_IDNA]), SECURITY_INDEX, load_snapshot(),
                  accepted, TODAY)  # fmt: skip
    assert report.passed
    [finding] = report.as_json()["findings"]
    assert finding["accepted_by"] == "PYSEC-2024-60 (idna, until 2027-01-31: reviewed)"
    assert report.counts() == {"accepted": 1}


def test_an_expired_entry_fails_the_gate_and_accepts_nothing(tmp_path: Path) -> None:
    accepted = load_allowlist(allowlist(tmp_path, entry("PYSEC-2024-60", "idna", "2026-11-30")))
    report = scan(backend_record(tmp_path, [VULNERABLE_IDNA]), SECURITY_INDEX, load_snapshot(),
                  accepted, TODAY)  # fmt: skip
    assert not report.passed
    assert [f.id for f in report.open] == ["PYSEC-2024-60"]
    assert report.problems()[-1].startswith("allow-list entry expired: PYSEC-2024-60 (idna")


def test_an_entry_for_another_package_accepts_nothing(tmp_path: Path) -> None:
    accepted = load_allowlist(allowlist(tmp_path, entry("PYSEC-2024-60", "requests", "2027-01-31")))
    report = scan(backend_record(tmp_path, [VULNERABLE_IDNA]), SECURITY_INDEX, load_snapshot(),
                  accepted, TODAY)  # fmt: skip
    assert not report.passed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- id: X\n  package: idna\n  reason: r\n", "give exactly the keys id, package, reason"),
        (entry("X", "idna", "next week"), r"accepted\[0\].expires: 'next week' is not a date"),
        ("- id: X\n  package: idna\n  reason: ' '\n  expires: 2027-01-01\n", r"\.reason"),
    ],
)
def test_a_bad_allow_list_entry_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = allowlist(tmp_path, text)
    with pytest.raises(BadInput, match=message) as error:
        load_allowlist(path)
    assert str(path) in str(error.value)


def test_the_result_lands_in_the_record(tmp_path: Path) -> None:
    record = backend_record(tmp_path, [VULNERABLE_IDNA])
    write_record(record)
    report = check_record(record, fetch_index=lambda os, arch: ("test index", SECURITY_INDEX),
                          today=TODAY, allowlist_path=allowlist(tmp_path))  # fmt: skip
    saved = read_record(record.path)
    assert saved is not None and not report.passed
    found = saved.details["vulnerabilities"]
    assert (found["status"], found["counts"]) == ("failed", {"unrated": 1})
    assert found["sources"]["debian"] == "test index"
    assert "2024-10-10" in found["sources"]["advisories"]  # the snapshot's date


def test_an_unreachable_mirror_fails_and_writes_nothing(tmp_path: Path) -> None:
    record = backend_record(tmp_path, [])
    write_record(record)

    def offline(os_family: str, arch: str) -> tuple[str, dict[str, str]]:
        raise OperationFailed("cannot fetch .../InRelease: pass --no-vuln-gate")

    with pytest.raises(OperationFailed, match="--no-vuln-gate"):
        check_record(record, fetch_index=offline, allowlist_path=allowlist(tmp_path))
    saved = read_record(record.path)
    assert saved is not None and "vulnerabilities" not in saved.details


def test_a_skipped_gate_is_recorded_by_its_flag(tmp_path: Path) -> None:
    record = backend_record(tmp_path, [VULNERABLE_IDNA])
    write_record(record)
    report = check_record(record, skip="--no-vuln-gate")
    saved = read_record(record.path)
    assert saved is not None and not report.passed
    assert saved.details["vulnerabilities"]["status"] == "skipped"
    assert saved.details["vulnerabilities"]["skipped_by"] == "--no-vuln-gate"


def test_an_unsigned_release_file_is_refused_by_gpgv(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="fails gpgv"):
        verified_release(b"Origin: Debian\nSuite: bookworm-security\n")


def test_the_index_is_read_and_its_listed_sha256_found() -> None:
    release = "Suite: x\nSHA256:\n " + "a" * 64 + " 123 main/binary-amd64/Packages.xz\n"
    assert listed_sha256(release, "main/binary-amd64/Packages.xz") == "a" * 64
    index = "Package: libssl3\nVersion: 3.0.1-1\n\nPackage: libssl3\nVersion: 3.0.2-1\n\n"
    assert parse_index(index) == {"libssl3": "3.0.2-1"}


class StandInMirror:
    """The security suite as a mirror serves it, in memory; counts what is fetched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []
        monkeypatch.setattr(debian, "host_debian_mirror", lambda suite: "http://mirror.test/debian")
        monkeypatch.setattr(
            debian, "verified_release", lambda signed, keyring=None: signed.decode()
        )
        monkeypatch.setattr(debian, "_get", self.get)

    def get(self, url: str) -> bytes:
        self.fetched.append(url.rsplit("/dists/bookworm-security/", 1)[1])
        return self.files[url.rsplit("/dists/bookworm-security/", 1)[1]]

    def publish(self, arch: str, index: str, date: str) -> None:
        packed = lzma.compress(index.encode())
        name = f"main/binary-{arch}/Packages.xz"
        sha = hashlib.sha256(packed).hexdigest()
        self.files[name] = packed
        self.files["InRelease"] = f"Date: {date}\nSHA256:\n {sha} {len(packed)} {name}\n".encode()


def test_an_arm64_image_is_judged_by_the_arm64_index(monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = StandInMirror(monkeypatch)
    mirror.publish("arm64", "Package: libssl3\nVersion: 3.0.9-1\n\n", "Mon, 30 Nov 2026")
    described, index = debian.security_index("debian12", "arm64")
    assert mirror.fetched == ["InRelease", "main/binary-arm64/Packages.xz"]
    assert described == "bookworm-security main arm64 (Mon, 30 Nov 2026)"
    assert index == {"libssl3": "3.0.9-1"}


def test_an_unchanged_suite_is_read_from_the_kept_index_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = StandInMirror(monkeypatch)
    mirror.publish("amd64", "Package: libssl3\nVersion: 3.0.9-1\n\n", "Mon, 30 Nov 2026")
    first = debian.security_index("debian12", "x86_64", cache=tmp_path)
    mirror.fetched.clear()
    assert debian.security_index("debian12", "x86_64", cache=tmp_path) == first
    assert mirror.fetched == ["InRelease"]  # the signed release is still read every time

    # A new advisory: the suite's InRelease lists a new index, which is fetched and kept.
    mirror.publish("amd64", "Package: libssl3\nVersion: 3.0.9-2\n\n", "Tue, 1 Dec 2026")
    mirror.fetched.clear()
    described, index = debian.security_index("debian12", "x86_64", cache=tmp_path)
    assert mirror.fetched == ["InRelease", "main/binary-amd64/Packages.xz"]
    assert index == {"libssl3": "3.0.9-2"} and described.endswith("(Tue, 1 Dec 2026)")
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_a_kept_index_is_no_shortcut_past_a_tampered_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = StandInMirror(monkeypatch)
    mirror.publish("amd64", "Package: libssl3\nVersion: 3.0.9-1\n\n", "Mon, 30 Nov 2026")
    mirror.files["main/binary-amd64/Packages.xz"] = lzma.compress(b"Package: x\nVersion: 1\n\n")
    with pytest.raises(OperationFailed, match="does not match the sha256"):
        debian.security_index("debian12", "x86_64", cache=tmp_path)
    assert list(tmp_path.rglob("*.json")) == []


def test_the_snapshot_is_dated_and_names_how_to_refresh_it() -> None:
    snapshot = json.loads(SNAPSHOT.read_text())
    assert snapshot["date"].startswith("2024-10-10") and len(snapshot["commit"]) == 40
    assert snapshot["refresh"] == "invoke refresh-advisories --database PATH"


def test_the_images_table_shows_the_gates_counts() -> None:
    failed = {"status": "failed", "counts": {"unrated": 3, "accepted": 1}}
    assert vulnerability_counts(failed) == "failed: 3 unrated, 1 accepted"
    assert vulnerability_counts({"status": "passed", "counts": {}}) == "passed: none"
    skipped = {"status": "skipped", "skipped_by": "--no-vuln-gate"}
    assert vulnerability_counts(skipped) == "skipped (--no-vuln-gate)"
    assert vulnerability_counts(None) == "-"


def test_refresh_advisories_cuts_the_snapshot_for_the_pinned_packages(tmp_path: Path) -> None:
    """What `invoke refresh-advisories --database PATH` writes, from a tiny database."""
    database = tmp_path / "advisory-database"
    for package, advisory, fixed in [("idna", "PYSEC-1", "3.7"), ("leftpad", "PYSEC-2", "2")]:
        folder = database / "vulns" / package
        folder.mkdir(parents=True)
        (folder / f"{advisory}.yaml").write_text(
            f"id: {advisory}\npublished: 2024-04-26T16:15:00Z\naffected:\n- package:\n"
            f"    name: {package}\n  ranges:\n  - type: ECOSYSTEM\n    events:\n"
            f"    - introduced: '0'\n    - fixed: '{fixed}'\n"
        )
    git = ["git", "-C", str(database), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "advisories"], check=True)

    snapshot = build_snapshot(database, ["idna", "fastapi"])

    assert list(snapshot["advisories"]) == ["idna"]  # only what the app pins
    assert snapshot["advisories"]["idna"][0]["published"].startswith("2024-04-26")
    assert len(snapshot["commit"]) == 40 and snapshot["date"]
    [found] = advisories_for(snapshot, "IDNA", "3.6")
    assert (found.id, found.fixed) == ("PYSEC-1", ("3.7",))
    assert advisories_for(snapshot, "idna", "3.7") == []
    with pytest.raises(BadInput, match="no vulns/ folder"):
        build_snapshot(tmp_path, ["idna"])
