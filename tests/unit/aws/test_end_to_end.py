"""End to end: the real Packer 1.6.6 amazon-ebs build against moto's server, then
verify, release, roll back, copy, share and prune with bakery, and the final state.

Test-only overlay (never in the shipped templates): the rendered source gets moto's
endpoint, `skip_credential_validation`, `skip_metadata_api_check` and
`communicator = "none"` (moto's instances cannot be reached), and the provisioners
are stripped from build.pkr.hcl. Everything else, the manifest post-processor
included, is the rendered template as shipped. Packer talks only to 127.0.0.1.

moto does not implement EnableImageDeprecation, so this run sets
aws.deprecate_after_days to null (the call is covered with Stubber in test_build).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from bakery.aws import tags
from bakery.aws.build import build_on_aws
from bakery.aws.prune import prune
from bakery.aws.release import parameter_history, release
from bakery.aws.verify import InstanceUnderTest, verify_image
from bakery.packer import PackerVersion
from bakery.render import IMDSV2_ON_AMI, ORG_SHARING, RenderedRole, render_role
from bakery.verify.suites import SuiteResult

from .conftest import (
    DEBIAN_SOURCE,
    OTHER_REGION,
    REGION,
    running_moto_server,
    set_creation_date,
    suite_outcome,
)
from .conftest import make_config as config_for

ACCOUNT_B = "210987654321"
ORG = "arn:aws:organizations::111122223333:organization/o-abc123def4"

pytestmark = pytest.mark.skipif(shutil.which("packer") is None, reason="needs packer 1.6.x")


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with running_moto_server() as url:
        # bakery's boto3 clients follow AWS_ENDPOINT_URL; Packer 1.6 needs the overlay.
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        yield url


def overlay_for_moto(rendered: RenderedRole, endpoint: str) -> None:
    """Point the rendered template at moto and make it buildable without a guest."""
    source = rendered.directory / "source.pkr.hcl"
    text = source.read_text()
    anchor = "  skip_region_validation = true\n"
    assert anchor in text, "the overlay's anchor moved: update this test"
    source.write_text(
        text.replace(
            anchor,
            anchor
            + f'  custom_endpoint_ec2        = "{endpoint}"\n'
            + "  skip_credential_validation = true\n"
            + "  skip_metadata_api_check    = true\n"
            + '  communicator               = "none"\n',
        )
    )
    build = rendered.directory / "build.pkr.hcl"
    stripped, count = re.subn(
        r'\n  provisioner "[a-z-]+" \{\n.*?\n  \}\n', "\n", build.read_text(), flags=re.S
    )
    assert count >= 5 and 'provisioner "' not in stripped
    assert 'post-processor "manifest"' in stripped
    build.write_text(stripped)


def runner(passed: bool) -> Any:
    def run(target: InstanceUnderTest) -> SuiteResult:
        assert target.host and target.key_file.exists()
        failed = () if passed else ("test_agent.test_application_signals_enabled",)
        return suite_outcome(passed, failed, target.junit_path)

    return run


def own_images(client: Any) -> dict[str, dict[str, Any]]:
    return {i["ImageId"]: i for i in client.describe_images(Owners=["self"])["Images"]}


def snapshots(client: Any) -> set[str]:
    return {s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def test_packer_build_release_copy_share_prune(moto_server: str, tmp_path: Path) -> None:
    cfg = config_for(
        "backend",
        f"aws.copy_regions=['{OTHER_REGION}']",
        f"aws.share_accounts=['{ACCOUNT_B}']",
        f"aws.share_org_arns=['{ORG}']",
        "aws.kms_key_id=alias/bakery-images",
        "aws.deprecate_after_days=null",
    )
    rendered = render_role(cfg, PackerVersion(1, 6, 6), build_root=tmp_path / "build")
    assert rendered.post_build == (IMDSV2_ON_AMI, ORG_SHARING)
    overlay_for_moto(rendered, moto_server)
    ec2 = boto3.client("ec2", region_name=REGION)
    other = boto3.client("ec2", region_name=OTHER_REGION)
    ssm = boto3.client("ssm", region_name=REGION)
    records = tmp_path / "records"
    run_ids: dict[str, str] = {}

    def bake(passed: bool) -> str:
        # AMI names carry Packer's build time to the second; real builds take minutes.
        time.sleep(1.0 - datetime.now().microsecond / 1e6)
        record = build_on_aws(rendered, cfg, records_dir=records, ingress_cidr="198.51.100.4")
        run_ids[record.image] = record.details["run_id"]
        verify_image(
            cfg,
            record.image,
            runner=runner(passed),
            ingress_cidr="198.51.100.4",
            reports_dir=tmp_path / "reports",
            records_dir=records,
            sleep=lambda s: None,
        )
        return record.image

    a, b, c, d = bake(True), bake(True), bake(True), bake(False)

    # Four runs appended to one manifest; each build found its own AMI by run id.
    manifest = json.loads((rendered.directory / "packer-manifest.json").read_text())
    assert [build["artifact_id"] for build in manifest["builds"]] == [
        f"{REGION}:{ami}" for ami in (a, b, c, d)
    ]
    built = own_images(ec2)[a]
    values = tags.as_dict(built["Tags"])
    assert values[tags.SOURCE_AMI] == DEBIAN_SOURCE  # Packer's {{ .SourceAMI }}
    assert values[tags.PACKER_VERSION] == "1.6.6"
    assert values[tags.STATUS] == "verified"
    assert built["Name"].startswith("bakery-backend-debian12-")
    [snapshot] = [m["Ebs"]["SnapshotId"] for m in built["BlockDeviceMappings"]]
    snapshot_tags = tags.as_dict(
        ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["Tags"]
    )
    assert snapshot_tags[tags.GIT_COMMIT] == values[tags.GIT_COMMIT]
    record = json.loads((records / f"backend-{a}.json").read_text())
    assert record["source_ami"] == DEBIAN_SOURCE and record["status"] == "verified"

    # Each run has its own id, on its AMI, the AMI's snapshot and Packer's build instance.
    assert len(set(run_ids.values())) == 4
    assert values[tags.RUN_ID] == snapshot_tags[tags.RUN_ID] == record["run_id"] == run_ids[a]
    by_run = [{"Name": f"tag:{tags.RUN_ID}", "Values": [run_ids[a]]}]
    [build_instance] = [
        instance
        for reservation in ec2.describe_instances(Filters=by_run)["Reservations"]
        for instance in reservation["Instances"]
    ]
    instance_tags = tags.as_dict(build_instance["Tags"])
    assert instance_tags[tags.PURPOSE] == "build" and instance_tags[tags.ROLE] == "backend"
    assert tags.as_dict(own_images(ec2)[d]["Tags"])[tags.STATUS] == "rejected"

    release(cfg, "production", b)
    release(cfg, "staging", c)
    release(cfg, "production", c)
    rolled = release(cfg, "production", rollback=True)
    assert rolled.ami_id == b

    old = datetime.now(timezone.utc) - timedelta(days=2)
    for ami in (a, d):
        set_creation_date(REGION, ami, old)
    gone_snapshots = {
        m["Ebs"]["SnapshotId"]
        for ami in (a, d)
        for m in own_images(ec2)[ami]["BlockDeviceMappings"]
    }
    rows = prune([cfg], keep=1, apply=True)
    assert {(r.ami_id, r.decision) for r in rows if r.region == REGION} == {
        (a, "delete"),
        (b, "keep"),
        (c, "keep"),
        (d, "delete"),
    }

    # Final state, home region: B and C, their snapshots; A's and D's snapshots gone.
    images = own_images(ec2)
    assert set(images) == {b, c}
    assert not gone_snapshots & snapshots(ec2)
    assert tags.promoted_environments(tags.as_dict(images[b]["Tags"])) == ["production"]
    assert tags.promoted_environments(tags.as_dict(images[c]["Tags"])) == ["production", "staging"]
    assert tags.rolled_back_key("production") in tags.as_dict(images[c]["Tags"])
    for ami in (b, c):
        launch = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert {"UserId": ACCOUNT_B} in launch["LaunchPermissions"]
        assert {"OrganizationArn": ORG} in launch["LaunchPermissions"]

    # SSM: production went B -> C -> B; staging is C.
    production = "/bakery/images/production/backend/ami-id"
    assert [h.value for h in parameter_history(ssm, production)] == [b, c, b]
    assert ssm.get_parameter(Name=production)["Parameter"]["DataType"] == "aws:ec2:image"
    staging = ssm.get_parameter(Name="/bakery/images/staging/backend/ami-id")["Parameter"]
    assert staging["Value"] == c

    # The copy region: copies of B and C, tagged, pointed to, shared.
    copies = own_images(other)
    by_source = {tags.as_dict(i["Tags"])[tags.COPIED_FROM]: ami for ami, i in copies.items()}
    assert set(by_source) == {b, c}
    other_ssm = boto3.client("ssm", region_name=OTHER_REGION)
    assert other_ssm.get_parameter(Name=production)["Parameter"]["Value"] == by_source[b]
    copy_tags = tags.as_dict(copies[by_source[c]]["Tags"])
    assert copy_tags[tags.STATUS] == "verified" and copy_tags[tags.ROLE] == "backend"

    # Nothing left running: Packer's build instances and the test instances are gone.
    states = {
        instance["State"]["Name"]
        for reservation in ec2.describe_instances()["Reservations"]
        for instance in reservation["Instances"]
    }
    assert states == {"terminated"}
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert groups == {"default"}
