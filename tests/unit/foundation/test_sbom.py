"""bakery/sbom.py: the image's CycloneDX SBOM, checked by cyclonedx-python-lib's own
validator against the CycloneDX 1.6 JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from image_records import local_record

from bakery.records import ImageRecord
from bakery.sbom import sbom_path, write_sbom

AGENT_SHA256 = "5" * 64


def backend_record(folder: Path) -> ImageRecord:
    return local_record(
        folder / "record.json",
        details={
            "agent": {
                "package": "official",
                "url": "https://example.invalid/a.deb",
                "sha256": AGENT_SHA256,
            },
            "manifest": {
                "packages": [
                    "amazon-cloudwatch-agent\t1.300040.0b650-1\tamd64",
                    "libssl3\t3.0.15-1~deb12u1\tamd64",
                    "python3\t3.11.2-1+b1\tamd64",
                ],
                "pip_freeze": ["aws-opentelemetry-distro==0.21.0", "FastAPI==0.115.0"],
                "python": {"venv": "/opt/app/venv"},
            },
        },
    )


def test_the_sbom_is_valid_cyclonedx_and_lists_os_python_and_agent(tmp_path: Path) -> None:
    record = backend_record(tmp_path)
    path = write_sbom(record)

    assert path == sbom_path(record) == tmp_path / "record.cdx.json"
    assert record.details["sbom"] == "record.cdx.json"
    text = path.read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    assert errors is None, [str(error) for error in errors or []]
    document = json.loads(text)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    purls = {component["purl"] for component in document["components"]}
    assert purls == {
        "pkg:deb/amazon/amazon-cloudwatch-agent@1.300040.0b650-1?arch=amd64",
        "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12",
        "pkg:deb/debian/python3@3.11.2-1%2Bb1?arch=amd64&distro=debian-12",
        "pkg:pypi/aws-opentelemetry-distro@0.21.0",
        "pkg:pypi/fastapi@0.115.0",
    }
    [agent] = [c for c in document["components"] if c["name"] == "amazon-cloudwatch-agent"]
    assert agent["hashes"] == [{"alg": "SHA-256", "content": AGENT_SHA256}]
    assert agent["version"] == "1.300040.0b650-1"
    assert document["metadata"]["component"]["name"] == "bakery-backend"


def test_the_validator_rejects_a_broken_sbom(tmp_path: Path) -> None:
    """The check above can fail: a component without a name is not CycloneDX."""
    document = json.loads(write_sbom(backend_record(tmp_path)).read_text())
    del document["components"][0]["name"]
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    assert errors is not None
