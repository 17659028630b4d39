"""bakery/target.py: the local and the AWS adapter agree, because both run on one core.

The same rendered inputs from the same source image get the same inputs hash from
either target's build, and the same suite results get the same verdict from either
target's gate (recorded, and on AWS also tagged). Packer, QEMU and SSH are replaced by
doubles; the AWS side runs in moto.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from image_records import local_record

from bakery import packer
from bakery.aws import tags
from bakery.aws.build import build_on_aws
from bakery.aws.verify import InstanceUnderTest, verify_image
from bakery.config import BakeryConfig
from bakery.inputs import inputs_hash
from bakery.local import build as local
from bakery.local.base_image import BaseImage
from bakery.packer import PackerVersion
from bakery.progress import Progress
from bakery.records import read_record, write_record
from bakery.render import RenderedRole, render_role
from bakery.verify.suites import SshTarget, SuiteResult

from .conftest import DEBIAN_SOURCE, clock, image_tags, make_config, make_image
from .test_build import FakePacker

PACKER = PackerVersion(1, 6, 6)

# A `packer build` double for the qemu builder: writes the image where the var file
# says, as the qemu builder would.
QEMU_PACKER = """
import pathlib, re, sys
var_file = next(a for a in sys.argv if a.startswith("-var-file=")).split("=", 1)[1]
text = pathlib.Path(var_file).read_text()
out = pathlib.Path(re.search(r'^output_directory\\s*=\\s*"(.*)"$', text, re.M).group(1))
out.mkdir(parents=True)
(out / "backend.qcow2").write_bytes(b"a qcow2 double")
print("==> qemu.image: Gracefully halting virtual machine...")
"""


@pytest.fixture
def local_build_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local target's folders under tmp_path, never the repo's build/."""
    root = tmp_path / "local-build"
    for name in ("IMAGES_ROOT", "LOGS_ROOT", "REPORTS_ROOT", "VERIFY_WORK"):
        monkeypatch.setattr(local, name, root / name.lower())
    return root


def _qemu_packer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "packer-double"
    path.write_text(f"#!{sys.executable}\n{QEMU_PACKER}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(packer, "packer_binary", lambda: str(path))


def _local_target(cfg: BakeryConfig, source_image: str) -> local.LocalTarget:
    """A local target whose base image is known by `source_image` (no debootstrap)."""
    target = local.LocalTarget([cfg], Progress(), packer=PACKER)
    target._bases[cfg.arch] = BaseImage(Path("/nonexistent/base.qcow2"), "0" * 64, source_image)
    target._accelerator = "tcg"
    return target


def test_same_inputs_and_source_give_the_same_hash_on_both_targets(
    ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_build_root: Path
) -> None:
    # moto has no EnableImageDeprecation: leave that post-build step out. The local side
    # bakes with the stand-in Packer (a container bake needs LXC).
    cfg = make_config("backend", "aws.deprecate_after_days=null", "local.bake_in=vm")
    aws_rendered = render_role(cfg, PACKER, tmp_path / "rendered")
    local_rendered = RenderedRole("backend", "local", aws_rendered.directory, PACKER)
    expected = inputs_hash(aws_rendered, DEBIAN_SOURCE)

    on_aws = build_on_aws(
        aws_rendered,
        cfg,
        packer=FakePacker(),
        records_dir=tmp_path / "rec",
        ingress_cidr="203.0.113.7",
    )
    _qemu_packer(tmp_path, monkeypatch)
    on_local = _local_target(cfg, DEBIAN_SOURCE).build(cfg, local_rendered)

    assert on_aws.inputs_hash == on_local.inputs_hash == expected
    assert image_tags(ec2, on_aws.image)[tags.INPUTS_HASH] == expected
    assert on_local.image == f"backend-{expected}.qcow2"
    # Both records are the one record type, read back the same way.
    for record in (on_aws, on_local):
        assert read_record(record.path) == record
    # Another source image is another input, on either target.
    assert inputs_hash(aws_rendered, "ami-another") != expected


RESULTS = {
    "checks-passed": SuiteResult(passed=12),
    "no-check-ran": SuiteResult(passed=0),
    "a-check-failed": SuiteResult(passed=11, failed=1, failed_checks=("test_a.b",), returncode=1),
    "pytest-failed-without-a-failed-check": SuiteResult(passed=12, returncode=3),
    "suites-did-not-run": SuiteResult(returncode=4, error="the suites did not run (exit 4)"),
}


@pytest.mark.parametrize("result", RESULTS.values(), ids=RESULTS.keys())
def test_the_same_suite_results_get_the_same_verdict_on_both_targets(
    ec2: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_build_root: Path,
    result: SuiteResult,
) -> None:
    # AWS: a built AMI, verified on a (moto) test instance by a runner double.
    ami = make_image(status=tags.BUILT)
    on_aws = verify_image(
        make_config("backend"),
        ami,
        runner=lambda target: result,
        ingress_cidr="203.0.113.7",
        reports_dir=tmp_path / "reports",
        records_dir=tmp_path / "records",
        clock=clock(),
        sleep=lambda seconds: None,
    )
    # Local: a built qcow2, "booted" by a VM double, verified by the same runner double.
    cfg = make_config("backend", "local.accelerator=tcg")
    _local_image()
    monkeypatch.setattr(local, "booted", _vm_double)
    [(_, on_local)] = local.verify_local([cfg], Progress(), 1, runner=lambda *args: result)

    local_record = read_record(local.record_path("backend"))
    aws_record = read_record(tmp_path / "records" / f"backend-{ami}.json")
    assert local_record is not None and aws_record is not None
    assert on_local.verdict == on_aws.status == local_record.status == aws_record.status
    assert image_tags(ec2, ami)[tags.STATUS] == on_aws.status
    assert on_aws.status == ("verified" if result is RESULTS["checks-passed"] else "rejected")
    local_checks = (local_record.verification or {})["failed_checks"]
    assert local_checks == (aws_record.verification or {})["failed_checks"]
    assert tuple(local_checks) == on_aws.failed_checks


class _VmDouble:
    def __init__(self, workdir: Path, user: str) -> None:
        self.ssh_target = SshTarget("127.0.0.1", 2222, user, workdir / "id_ed25519", "vm-double")


@contextmanager
def _vm_double(image: Path, name: str, settings: Any, work_root: Path, *args: Any,
               user: str, **kwargs: Any) -> Iterator[_VmDouble]:  # fmt: skip
    assert image.is_file() and settings["SERVICE_NAME"].endswith("-verify")
    yield _VmDouble(work_root, user)


def _local_image(role: str = "backend") -> None:
    """A built local image (a qcow2 double) and its record."""
    record = local_record(local.record_path(role), role=role, inputs_hash="0123")
    image = local.image_dir(role) / record.image
    image.parent.mkdir(parents=True)
    image.write_bytes(b"a qcow2 double")
    write_record(record)


def test_both_targets_log_in_as_the_images_user(
    ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_build_root: Path
) -> None:
    users: list[str] = []

    def runner(target: InstanceUnderTest) -> SuiteResult:
        users.append(target.user)
        return SuiteResult(passed=1)

    overrides = ("ssh.usernames.debian12=bakery", "local.accelerator=tcg")
    cfg = make_config("backend", *overrides)
    verify_image(
        cfg,
        make_image(status=tags.BUILT),
        runner=runner,
        ingress_cidr="203.0.113.7",
        reports_dir=tmp_path / "reports",
        records_dir=tmp_path / "records",
        clock=clock(),
        sleep=lambda seconds: None,
    )
    _local_image()
    monkeypatch.setattr(local, "booted", _vm_double)

    def local_runner(ssh: SshTarget, *args: Any) -> SuiteResult:
        users.append(ssh.user)
        return SuiteResult(passed=1)

    local.verify_local([cfg], Progress(), 1, runner=local_runner)
    assert users == ["bakery", "bakery"] == [cfg.ssh_username] * 2
