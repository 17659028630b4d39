"""record-manifest: packages, pip freeze (backend), agent version and a JSON summary in
the stage's manifest folder, which Packer downloads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bakery_provision import manifest
from provisioner_fakes import AGENT_VERSION_FILE, FakeSystem, MakeContext


def test_backend_manifest(make_context: MakeContext, fake_system: FakeSystem) -> None:
    ctx = make_context("record-manifest", role="backend")
    fake_system.packages.update(
        {"amazon-cloudwatch-agent": "1.300040.0b650-1", "python3": "3.11.2-1", "zlib1g": "1"}
    )
    fake_system.pip.update({"aws-opentelemetry-distro": "0.21.0", "fastapi": "0.165.0"})
    version_file = ctx.path("/" + AGENT_VERSION_FILE)
    version_file.parent.mkdir(parents=True)
    version_file.write_text("1.300040.0b650\n")

    manifest.run(ctx)

    out = ctx.stage / "manifest"
    assert (out / "packages.txt").read_text().splitlines() == [
        "amazon-cloudwatch-agent\t1.300040.0b650-1\tamd64",
        "python3\t3.11.2-1\tamd64",
        "zlib1g\t1\tamd64",
    ]
    assert "aws-opentelemetry-distro==0.21.0" in (out / "pip-freeze.txt").read_text()
    assert (out / "agent-version.txt").read_text() == "1.300040.0b650\n"
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["agent"]["version"] == "1.300040.0b650"
    assert summary["packages"]["count"] == 3
    assert summary["packages"]["selected"]["python3"] == "3.11.2-1"
    assert summary["python"]["aws-opentelemetry-distro"] == "0.21.0"
    assert sorted(summary["files"]) == [
        "agent-version.txt",
        "inventory.json",
        "packages.txt",
        "pip-freeze.txt",
    ]


def test_frontend_manifest_has_no_pip_freeze(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context("record-manifest", role="frontend", os="al2023")
    fake_system.packages["nginx"] = "1.24.0-1.amzn2023"
    version_file = ctx.path("/" + AGENT_VERSION_FILE)
    version_file.parent.mkdir(parents=True)
    version_file.write_text("1.300040.0b650\n")

    manifest.run(ctx)

    out = ctx.stage / "manifest"
    assert not (out / "pip-freeze.txt").exists()
    assert fake_system.ran("rpm", "-q", "-a")
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["packages"]["selected"] == {"nginx": "1.24.0-1.amzn2023"}


def _write(ctx_path: Path, text: str, mode: int = 0o644) -> None:
    ctx_path.parent.mkdir(parents=True, exist_ok=True)
    ctx_path.write_text(text)
    ctx_path.chmod(mode)


def test_inventory_hashes_the_owned_files_and_lists_units_ports_and_users(
    make_context: MakeContext, fake_system: FakeSystem
) -> None:
    ctx = make_context("record-manifest", role="frontend")
    version_file = ctx.path("/" + AGENT_VERSION_FILE)
    _write(version_file, "1.300040.0b650\n")
    _write(ctx.path("/var/www/bakery/index.html"), "<h1>bakery</h1>\n")
    _write(ctx.path("/var/www/bakery/__pycache__/x.pyc"), "bytecode")
    _write(ctx.path("/usr/local/libexec/bakery/write-nginx-upstream"), "#!/bin/sh\n", 0o755)
    _write(
        ctx.path("/etc/passwd"),
        f"builder:x:{os.getuid()}:{os.getgid()}::/home/builder:/bin/sh\n"
        "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
    )
    _write(ctx.path("/etc/group"), f"builders:x:{os.getgid()}:\nroot:x:0:\n")
    # One TCP listener (22), one TCP connection (not listening), one UDP socket (68)
    # and an ephemeral-range listener that is a client's, not a service's.
    _write(
        ctx.path("/proc/net/tcp"),
        "  sl  local_address rem_address   st\n"
        "   0: 00000000:0016 00000000:0000 0A 0\n"
        "   1: 0100007F:0050 0100007F:D000 01 0\n"
        "   2: 0100007F:9C40 00000000:0000 0A 0\n",
    )
    _write(ctx.path("/proc/net/udp6"), "  sl  local_address\n   0: 0000:0044 0000:0000 07 0\n")
    fake_system.enabled.update({"nginx.service", "ssh.service"})

    manifest.run(ctx)

    found = json.loads((ctx.stage / "manifest" / "inventory.json").read_text())
    page = found["files"]["/var/www/bakery/index.html"]
    assert page["sha256"] == hashlib.sha256(b"<h1>bakery</h1>\n").hexdigest()
    assert (page["mode"], page["owner"], page["group"]) == ("0644", "builder", "builders")
    assert found["files"]["/usr/local/libexec/bakery/write-nginx-upstream"]["mode"] == "0755"
    # Named by the plan but not on this image: recorded, so a diff shows it going away.
    assert found["files"]["/etc/nginx/nginx.conf"] == {"missing": True}
    assert not any("__pycache__" in path for path in found["files"])
    assert found["enabled_units"] == ["nginx.service", "ssh.service"]
    assert found["listening"] == ["tcp/22", "udp/68"]
    assert [user["name"] for user in found["users"]] == ["builder", "root", "www-data"]
    assert (
        "inventory.json"
        in json.loads((ctx.stage / "manifest" / "manifest.json").read_text())["files"]
    )
