"""record-manifest: packages, pip freeze (backend), agent version and a JSON summary in
the stage's manifest folder, which Packer downloads."""

from __future__ import annotations

import json

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
    assert sorted(summary["files"]) == ["agent-version.txt", "packages.txt", "pip-freeze.txt"]


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
