"""bakery/local/base_image.py: the local base image has the package set of Debian's own
EC2 image (the reference list in tests/fixtures/debian-cloud-images/), but for the
packages left out on purpose, each with its reason."""

from __future__ import annotations

from pathlib import Path

from bakery.local.base_image import BASE_PACKAGES, EC2_PACKAGES_LEFT_OUT

EC2_REFERENCE = (
    Path(__file__).resolve().parents[2] / "fixtures/debian-cloud-images/bookworm-ec2-amd64.txt"
)


def ec2_packages() -> dict[str, str]:
    """Package -> the debian-cloud-images class that installs it."""
    packages: dict[str, str] = {}
    for line in EC2_REFERENCE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, fai_class = line.split()
            assert name not in packages, f"{name} is listed twice in {EC2_REFERENCE.name}"
            packages[name] = fai_class
    return packages


def test_the_reference_list_is_the_ec2_images_whole_set() -> None:
    # The classes of the ec2 vendor for bookworm on amd64 (debian-cloud-images image.yaml).
    classes = set(ec2_packages().values())
    assert classes == {"SYSTEM_BOOT", "CLOUD", "EC2", "TIME_SYSTEMD", "AMD64", "EXTRAS"}
    assert len(ec2_packages()) >= 40


def test_every_ec2_package_is_in_the_base_image_or_left_out_with_a_reason() -> None:
    missing = set(ec2_packages()) - set(BASE_PACKAGES) - set(EC2_PACKAGES_LEFT_OUT)
    assert not missing, (
        f"Debian's EC2 image has {sorted(missing)}: add them to BASE_PACKAGES or to "
        "EC2_PACKAGES_LEFT_OUT with the reason"
    )


def test_left_out_packages_are_ec2_packages_the_base_image_really_lacks() -> None:
    for name, reason in EC2_PACKAGES_LEFT_OUT.items():
        assert name in ec2_packages(), f"{name} is not in Debian's EC2 image: drop it"
        assert name not in BASE_PACKAGES, f"{name} is installed and also left out"
        assert reason.strip(), f"{name} is left out without a reason"


def test_the_tools_of_the_manual_guide_are_in_the_base_image() -> None:
    # What the original guide's user types on the instance (curl localhost:8000/ ...).
    assert {"curl", "ca-certificates", "less", "sudo"} <= set(BASE_PACKAGES)


def test_no_package_is_listed_twice() -> None:
    assert len(BASE_PACKAGES) == len(set(BASE_PACKAGES))
