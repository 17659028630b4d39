"""bakery/diff.py: what changed between two image records, from synthetic records."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from image_records import local_record

from bakery.diff import diff_records, history_path, resolve_record
from bakery.errors import BadInput
from bakery.records import ImageRecord, write_record

PAGE = "/var/www/bakery/index.html"


def manifest() -> dict[str, Any]:
    return {
        "agent": {"version": "1.300040.0b650"},
        "packages": ["nginx\t1.22.1-9\tamd64", "openssl\t3.0.11-1~deb12u2\tamd64"],
        "pip_freeze": ["aws-opentelemetry-distro==0.21.0", "FastAPI==0.115.0"],
        "inventory": {
            "files": {
                PAGE: {"sha256": "a" * 64, "mode": "0644", "owner": "root", "group": "root"},
                "/etc/nginx/nginx.conf": {
                    "sha256": "b" * 64,
                    "mode": "0644",
                    "owner": "root",
                    "group": "root",
                },
            },
            "enabled_units": ["nginx.service", "ssh.service"],
            "listening": ["tcp/22", "tcp/80"],
            "users": [{"name": "root", "uid": 0, "home": "/root", "shell": "/bin/bash"}],
        },
    }


def record(path: Path, data: dict[str, Any], inputs_hash: str = "1111") -> ImageRecord:
    return local_record(path, role="frontend", inputs_hash=inputs_hash, details={"manifest": data})


def test_two_records_of_the_same_inputs_differ_in_nothing(tmp_path: Path) -> None:
    found = diff_records(record(tmp_path / "a", manifest()), record(tmp_path / "b", manifest()))
    assert found.empty
    assert found.as_text()[-1] == "no differences"
    assert found.as_json()["empty"] is True


def test_one_changed_page_is_the_only_difference(tmp_path: Path) -> None:
    after = manifest()
    after["inventory"]["files"][PAGE]["sha256"] = "c" * 64
    found = diff_records(record(tmp_path / "a", manifest()), record(tmp_path / "b", after))
    changed = {name: changes for name, changes in found.aspects.items() if changes}
    assert list(changed) == ["owned files"]
    assert list(changed["owned files"].changed) == [PAGE]
    assert f"  ~ {PAGE}: sha256:{'a' * 64} 0644 root:root -> sha256:{'c' * 64} 0644 root:root" in (
        found.as_text()
    )


def test_packages_units_ports_users_and_versions_are_compared(tmp_path: Path) -> None:
    after = copy.deepcopy(manifest())
    after["packages"] = ["nginx\t1.22.1-9+deb12u1\tamd64", "curl\t7.88.1-10\tamd64"]
    after["pip_freeze"] = ["aws-opentelemetry-distro==0.22.0", "fastapi==0.115.0"]
    after["agent"]["version"] = "1.300041.0"
    inventory = after["inventory"]
    del inventory["files"]["/etc/nginx/nginx.conf"]
    inventory["files"][PAGE]["mode"] = "0600"
    inventory["enabled_units"] = ["nginx.service"]
    inventory["listening"] = ["tcp/22", "tcp/80", "tcp/443"]
    inventory["users"].append({"name": "app", "uid": 999, "home": "/", "shell": "/bin/false"})

    found = diff_records(
        record(tmp_path / "a", manifest()), record(tmp_path / "b", after)
    ).as_json()
    changes = found["changes"]
    assert changes["debian packages"] == {
        "added": {"curl": "7.88.1-10"},
        "removed": {"openssl": "3.0.11-1~deb12u2"},
        "changed": {"nginx": {"a": "1.22.1-9", "b": "1.22.1-9+deb12u1"}},
    }
    # pip freeze spells names as installed: FastAPI and fastapi are one package.
    assert changes["python packages"]["changed"] == {
        "aws-opentelemetry-distro": {"a": "0.21.0", "b": "0.22.0"}
    }
    assert not changes["python packages"]["added"] and not changes["python packages"]["removed"]
    assert changes["versions"]["changed"] == {
        "agent": {"a": "1.300040.0b650", "b": "1.300041.0"},
        "otel distro": {"a": "0.21.0", "b": "0.22.0"},
    }
    assert list(changes["owned files"]["removed"]) == ["/etc/nginx/nginx.conf"]
    assert changes["owned files"]["changed"][PAGE]["b"].endswith("0600 root:root")
    assert list(changes["enabled units"]["removed"]) == ["ssh.service"]
    assert list(changes["listening ports"]["added"]) == ["tcp/443"]
    assert list(changes["users"]["added"]) == ["app"]
    json.dumps(found)  # the machine-readable form is plain JSON


def test_a_record_without_inventory_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    old = manifest()
    del old["inventory"]
    with pytest.raises(BadInput, match=r"no inventory .* `invoke build --role frontend --force`"):
        diff_records(record(tmp_path / "a", old), record(tmp_path / "b", manifest()))


def test_references_name_record_files_roles_hashes_and_amis(tmp_path: Path) -> None:
    images, history, aws = tmp_path / "images", tmp_path / "history", tmp_path / "aws"
    current = write_record(record(images / "frontend" / "record.json", manifest(), "2222beef"))
    kept = write_record(
        record(history_path("frontend", "1111cafe", history), manifest(), "1111cafe")
    )
    ami = write_record(record(aws / "frontend-ami-0123.json", manifest(), "3333"))

    def resolve(ref: str) -> Path:
        return resolve_record(ref, images=images, history=history, aws=aws).path

    assert resolve("frontend") == current
    assert resolve("frontend:2222") == current
    assert resolve("frontend:1111") == kept
    assert resolve(str(kept)) == kept
    assert resolve("ami-0123") == ami
    with pytest.raises(BadInput, match=r"no image record for 'frontend:9999'"):
        resolve("frontend:9999")
    with pytest.raises(BadInput, match=r"not a path, role or AMI id"):
        resolve("nonsense")
