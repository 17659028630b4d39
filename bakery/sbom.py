"""The image's SBOM: a CycloneDX 1.6 JSON document, written beside the record and named
in it, built from what the record-manifest step collected (the dpkg list, the app venv's
`pip freeze`, the agent's version and the sha256 of its package) by cyclonedx-python-lib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from bakery.durable import write_atomically
from bakery.records import ImageRecord

AGENT_PACKAGE = "amazon-cloudwatch-agent"
AGENT_NAMESPACE = "amazon"
# purl `distro` qualifiers per bakery OS (the purl spec's examples: debian-12, amzn-2023).
DISTROS = {"debian12": ("deb", "debian", "debian-12"), "al2023": ("rpm", "amzn", "amzn-2023")}


def sbom_path(record: ImageRecord) -> Path:
    """Beside the record: record.json → record.cdx.json, ROLE-AMI.json → ROLE-AMI.cdx.json."""
    return record.path.with_suffix(".cdx.json")


def _manifest(record: ImageRecord) -> dict[str, Any]:
    manifest = record.details.get("manifest")
    return manifest if isinstance(manifest, dict) else {}


def os_components(record: ImageRecord) -> list[Component]:
    """One component per installed OS package, with its purl; the agent's carries the
    sha256 of the package bakery verified and installed."""
    kind, namespace, distro = DISTROS.get(record.os, DISTROS["debian12"])
    agent = record.details.get("agent", {})
    agent_sha256 = agent.get("sha256") if isinstance(agent, dict) else None
    components = []
    for line in _manifest(record).get("packages", []):
        name, version, arch = ([*str(line).split("\t"), "", ""])[:3]
        is_agent = name == AGENT_PACKAGE
        # The agent is Amazon's package, not the distro's: its purl says so.
        qualifiers = {"arch": arch} if arch else {}
        purl = PackageURL(
            type=kind,
            namespace=AGENT_NAMESPACE if is_agent else namespace,
            name=name,
            version=version,
            qualifiers=qualifiers if is_agent else qualifiers | {"distro": distro},
        )
        components.append(
            Component(
                name=name,
                version=version,
                type=ComponentType.APPLICATION if is_agent else ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=agent_sha256)]
                if is_agent and agent_sha256
                else None,
                properties=[Property(name="bakery:agent-source", value=str(agent.get("url")))]
                if is_agent and agent.get("url")
                else None,
            )
        )
    return components


def python_components(record: ImageRecord) -> list[Component]:
    """The app venv's packages (backend only), as `pip freeze` names them."""
    components = []
    for line in _manifest(record).get("pip_freeze", []):
        name, separator, version = str(line).partition("==")
        if not separator:
            continue  # an editable or URL install has no plain version to name
        purl = PackageURL(type="pypi", name=name.strip().lower(), version=version.strip())
        components.append(
            Component(
                name=name.strip(),
                version=version.strip(),
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
                properties=[Property(name="bakery:venv", value=_venv(record))],
            )
        )
    return components


def _venv(record: ImageRecord) -> str:
    python = _manifest(record).get("python", {})
    return str(python.get("venv", "")) if isinstance(python, dict) else ""


def image_sbom(record: ImageRecord) -> Bom:
    """The BOM of one image: the image as the subject, its OS and Python packages."""
    bom = Bom()
    bom.metadata.component = Component(
        name=f"bakery-{record.role}",
        version=record.inputs_hash,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref=f"image:{record.target}:{record.image}",
        properties=[
            Property(name="bakery:target", value=record.target),
            Property(name="bakery:image", value=record.image),
            Property(name="bakery:os", value=record.os),
            Property(name="bakery:git-commit", value=record.git_commit),
        ],
    )
    components = [*os_components(record), *python_components(record)]
    for component in components:
        bom.components.add(component)
    # The image holds every package: a flat graph, but a complete one.
    bom.register_dependency(bom.metadata.component, components)
    return bom


def sbom_json(record: ImageRecord) -> str:
    return str(JsonV1Dot6(image_sbom(record)).output_as_string(indent=2)) + "\n"


def write_sbom(record: ImageRecord) -> Path:
    """Write the SBOM beside the record and name it in the record's details (the caller
    writes the record)."""
    path = sbom_path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, sbom_json(record))
    record.details["sbom"] = path.name
    return path
