"""The AWS adapter's side of the gate (`AwsTarget`, see bakery/target.py): boot an AMI as
one test instance for the shared gate (bakery/verify/gate.py), which runs the suites
and applies the one verdict rule; tag the AMI verified or rejected; always clean up.

The checks themselves live in tests/infra and reach this module only through a
*runner* callable, so the flow is tested without SSH. When no key pair or security
group is configured, a temporary key pair (the private key never leaves this machine)
and a temporary security group (SSH from the runner's /32 only) are created for the
run. The instance, the key pair and the group are removed on success, on failure and
on Ctrl-C; each also carries `bakery:expires-at`, so `invoke janitor` removes what a
killed process could not.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions

from bakery.aws import tags
from bakery.aws.build import build_on_aws
from bakery.aws.clients import aws_errors, ec2_client
from bakery.aws.images import (
    check_instance_type,
    newest_first,
    role_image,
    role_images,
    status,
    tag_image,
)
from bakery.aws.network import (
    KEY_PAIR,
    SECURITY_GROUP,
    delete_while_it_exists,
    ingress_cidr_for,
    vpc_for,
)
from bakery.aws.progress import INSTANCE_WAIT, say, waiting
from bakery.aws.records import RECORDS_DIR, REPORTS_DIR, record_path
from bakery.config import BakeryConfig
from bakery.errors import BadInput, BakeryError, MissingTool, OperationFailed
from bakery.progress import installed_progress
from bakery.records import ImageRecord, read_record
from bakery.render import RenderedRole
from bakery.verify.gate import verify_record
from bakery.verify.launch import user_data
from bakery.verify.suites import SshTarget, SuiteResult, run_suites

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import (
        ImageTypeDef,
        IpPermissionTypeDef,
        RunInstancesRequestTypeDef,
        TagSpecificationTypeDef,
    )

# Long enough for a slow boot and the whole suite; after this the janitor may remove it.
TEST_RESOURCE_LIFETIME = timedelta(hours=3)
# A deleted instance holds its security group for a while after it is terminated.


@dataclass(frozen=True)
class InstanceUnderTest:
    """What a runner needs to reach the test instance and where to leave its report."""

    role: str
    ami_id: str
    instance_id: str
    host: str
    user: str
    key_file: Path
    junit_path: Path
    cfg: BakeryConfig
    # The launch-time settings the instance was given as user data.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def ssh_target(self) -> SshTarget:
        return SshTarget(
            self.host,
            22,
            self.user,
            self.key_file,
            machine=self.instance_id,
            known_hosts=self.key_file.parent / "known_hosts",
        )


# Runs the suites against the test instance: `run_testinfra`, or a test's stand-in.
Runner = Callable[[InstanceUnderTest], SuiteResult]


@dataclass(frozen=True)
class VerificationResult:
    """The verdict on one AMI, as tagged on it and written to its build record."""

    role: str
    ami_id: str
    region: str
    status: str
    failed_checks: tuple[str, ...]
    summary: str
    junit_path: Path | None
    instance_id: str

    @property
    def verified(self) -> bool:
        return self.status == tags.VERIFIED


def run_testinfra(target: InstanceUnderTest) -> SuiteResult:
    """The default runner: the shared suite runner against the instance."""
    return run_suites(target.ssh_target, target.cfg, target.settings, target.junit_path)


def summarise(failed: tuple[str, ...]) -> str:
    """A tag-sized (<= 256 characters) summary of the failed checks."""
    if not failed:
        return ""
    return tags.fit(f"{len(failed)} failed: " + ", ".join(failed))


def _tag_spec(kind: ResourceTypeType, values: dict[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": kind, "Tags": tags.as_list(values)}


class _Cleanup:
    """Undo steps run last-in first-out; a failing step is reported, not fatal."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []
        self.failures: list[str] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        while self.steps:
            what, step = self.steps.pop()
            try:
                step()
            except (
                BakeryError,
                botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError,
                OSError,
            ) as exc:
                self.failures.append(f"{what}: {exc}")


@contextmanager
def _cleaning_up(region: str) -> Iterator[_Cleanup]:
    """Run the undo steps however the block ends, Ctrl-C included."""
    cleanup = _Cleanup()
    try:
        yield cleanup
    except BaseException:
        cleanup.run()
        _report_leftovers(region, cleanup.failures)
        raise
    cleanup.run()
    if cleanup.failures:
        raise OperationFailed(_report_leftovers(region, cleanup.failures))


def _report_leftovers(region: str, failures: list[str]) -> str:
    message = (
        f"could not remove test resources in {region}: {'; '.join(failures)}; "
        "`invoke janitor --apply` removes them once expired"
    )
    if failures:
        say(f"[red]{message}[/]")
    return message


def _create_key_pair(ec2: EC2Client, cleanup: _Cleanup, name: str, values: dict[str, str]) -> Path:
    """A fresh ed25519 key: the public half is imported, the private half stays here."""
    if shutil.which("ssh-keygen") is None:
        raise MissingTool("ssh-keygen", "install openssh-client")
    folder = Path(tempfile.mkdtemp(prefix="bakery-verify-"))
    cleanup.add(f"removing {folder}", lambda: shutil.rmtree(folder, ignore_errors=True))
    key = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
    )
    with aws_errors(f"importing key pair {name}"):
        ec2.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=key.with_suffix(".pub").read_bytes(),
            TagSpecifications=[_tag_spec("key-pair", values)],
        )
    cleanup.add(f"deleting key pair {name}", lambda: delete_while_it_exists(ec2, KEY_PAIR, name))
    return key


def _create_security_group(
    ec2: EC2Client,
    cleanup: _Cleanup,
    cfg: BakeryConfig,
    name: str,
    cidr: str,
    values: dict[str, str],
    sleep: Callable[[float], None],
) -> str:
    vpc_id = vpc_for(ec2, cfg, "the test instance")
    with aws_errors(f"creating security group {name}"):
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=f"bakery: SSH to the {cfg.role} test instance from the runner only",
            VpcId=vpc_id,
            TagSpecifications=[_tag_spec("security-group", values)],
        )["GroupId"]
        cleanup.add(
            f"deleting security group {group_id}",
            lambda: delete_while_it_exists(ec2, SECURITY_GROUP, group_id, sleep),
        )
        rule: IpPermissionTypeDef = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
        if ":" in cidr:
            rule["Ipv6Ranges"] = [{"CidrIpv6": cidr}]
        else:
            rule["IpRanges"] = [{"CidrIp": cidr}]
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
    return group_id


def _terminate(ec2: EC2Client, instance_id: str) -> None:
    ec2.terminate_instances(InstanceIds=[instance_id])
    with waiting(f"test instance {instance_id} to terminate"):
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=[instance_id], WaiterConfig=INSTANCE_WAIT
        )


def _launch(
    ec2: EC2Client,
    cleanup: _Cleanup,
    cfg: BakeryConfig,
    ami_id: str,
    key_name: str,
    group_id: str,
    values: dict[str, str],
    settings: dict[str, str],
) -> str:
    request: RunInstancesRequestTypeDef = {
        "ImageId": ami_id,
        # Launch-time settings arrive as user data, exactly as for any instance.
        "UserData": user_data(None, settings),
        "InstanceType": cfg.instance_type,  # type: ignore[typeddict-item]
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "SecurityGroupIds": [group_id],
        # The image must work with IMDSv2 only, as in production.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [_tag_spec("instance", values), _tag_spec("volume", values)],
    }
    if cfg.aws.subnet_id:
        request["SubnetId"] = cfg.aws.subnet_id
    if cfg.aws.instance_profile:
        request["IamInstanceProfile"] = {"Name": cfg.aws.instance_profile}
    with aws_errors(f"launching a test instance from {ami_id}"):
        instance = ec2.run_instances(**request)["Instances"][0]
    instance_id = instance["InstanceId"]
    cleanup.add(f"terminating {instance_id}", lambda: _terminate(ec2, instance_id))
    return instance_id


def _wait_until_reachable(ec2: EC2Client, instance_id: str) -> str:
    """Wait for running and passed status checks; the address SSH should use."""
    with (
        waiting(f"test instance {instance_id} to boot and pass status checks"),
        aws_errors(f"waiting for {instance_id}"),
    ):
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[instance_id], WaiterConfig=INSTANCE_WAIT
        )
        ec2.get_waiter("instance_status_ok").wait(
            InstanceIds=[instance_id], WaiterConfig=INSTANCE_WAIT
        )
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    instance = found["Instances"][0]
    address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
    if not address:
        raise OperationFailed(f"test instance {instance_id} has no IP address")
    return address


def _image_to_verify(ec2: EC2Client, cfg: BakeryConfig, ami_id: str | None) -> ImageTypeDef:
    if ami_id is not None:
        return role_image(ec2, ami_id, cfg.role, cfg.aws.region, cfg.arch)
    built = [image for image in role_images(ec2, cfg.role, cfg.arch) if status(image) == tags.BUILT]
    if not built:
        arch = "" if cfg.arch == "x86_64" else f" --set arch={cfg.arch}"
        raise BadInput(
            f"no built (unverified) {cfg.arch} {cfg.role} AMI in {cfg.aws.region}: "
            f"run `invoke build --target aws --role {cfg.role}{arch}` or name an AMI id"
        )
    return newest_first(built)[0]


class AwsTarget:
    """The AWS adapter's boot and mark (see bakery/target.py; builds: bakery/aws/build.py):
    a test instance launched from the AMI with a temporary key pair and security group,
    all removed on exit; the verdict tagged on the AMI."""

    name = "aws"

    def __init__(
        self,
        ec2: EC2Client,
        image: ImageTypeDef,
        *,
        runner: Runner,
        ingress_cidr: str | None,
        junit_path: Path,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
    ) -> None:
        self.ec2 = ec2
        self.image = image
        self.runner = runner
        self.ingress_cidr = ingress_cidr
        self.junit_path = junit_path
        self.clock = clock
        self.sleep = sleep
        self.under_test: InstanceUnderTest | None = None

    def build(self, cfg: BakeryConfig, rendered: RenderedRole) -> ImageRecord:
        return build_on_aws(rendered, cfg)

    @contextmanager
    def boot(
        self, cfg: BakeryConfig, record: ImageRecord, settings: dict[str, str]
    ) -> Iterator[SshTarget]:
        ec2, ami_id = self.ec2, record.image
        cidr = None if cfg.aws.security_group_id else ingress_cidr_for(self.ingress_cidr)
        name = f"bakery-verify-{cfg.role}-{uuid.uuid4().hex[:8]}"
        values = {
            **cfg.aws.tags,
            "Name": name,
            tags.ROLE: cfg.role,
            tags.PURPOSE: tags.TEST_INSTANCE,
            tags.EXPIRES_AT: tags.timestamp(self.clock() + TEST_RESOURCE_LIFETIME),
        }
        with _cleaning_up(cfg.aws.region) as cleanup:
            key_file = _create_key_pair(ec2, cleanup, name, values)
            group_id = cfg.aws.security_group_id or _create_security_group(
                ec2, cleanup, cfg, name, str(cidr), values, self.sleep
            )
            instance_id = _launch(ec2, cleanup, cfg, ami_id, name, group_id, values, settings)
            host = _wait_until_reachable(ec2, instance_id)
            self.under_test = InstanceUnderTest(
                role=cfg.role,
                ami_id=ami_id,
                instance_id=instance_id,
                host=host,
                user=cfg.ssh_username,
                key_file=key_file,
                junit_path=self.junit_path,
                cfg=cfg,
                settings=settings,
            )
            yield self.under_test.ssh_target

    def run(
        self, ssh: SshTarget, cfg: BakeryConfig, settings: dict[str, str], junit: Path
    ) -> SuiteResult:
        """The gate's suite runner: this target's runner, given the instance under test."""
        assert self.under_test is not None and self.under_test.ssh_target == ssh
        return self.runner(self.under_test)

    def mark(self, cfg: BakeryConfig, record: ImageRecord, result: SuiteResult) -> None:
        """Tag the verdict on the AMI: status, when, and a tag-sized summary of failures."""
        summary = summarise(result.named_failures)
        values = {tags.STATUS: result.verdict, tags.VERIFIED_AT: tags.timestamp(self.clock())}
        if summary:
            values[tags.FAILED_CHECKS] = summary
        index = (result.hardening or {}).get("index")
        if isinstance(index, int):
            values[tags.HARDENING_INDEX] = str(index)
        tag_image(self.ec2, self.image, values)
        if not summary:
            with aws_errors(f"clearing old failed checks on {record.image}"):
                self.ec2.delete_tags(Resources=[record.image], Tags=[{"Key": tags.FAILED_CHECKS}])


def verify_image(
    cfg: BakeryConfig,
    ami_id: str | None = None,
    *,
    runner: Runner = run_testinfra,
    ingress_cidr: str | None = None,
    reports_dir: Path = REPORTS_DIR,
    records_dir: Path = RECORDS_DIR,
    clock: Callable[[], datetime] = tags.utc_now,
    sleep: Callable[[float], None] = time.sleep,
) -> VerificationResult:
    """Verify one AMI (default: the role's newest built one) on a test instance."""
    region = cfg.aws.region
    ec2 = ec2_client(region)
    image = _image_to_verify(ec2, cfg, ami_id)
    check_instance_type(ec2, cfg)
    ami_id = image["ImageId"]
    reports_dir.mkdir(parents=True, exist_ok=True)
    junit_path = reports_dir / f"{cfg.role}-{ami_id}.xml"
    path = record_path(records_dir, cfg.role, ami_id)
    record = read_record(path) or ImageRecord(
        role=cfg.role,
        os=cfg.os,
        arch=tags.as_dict(image.get("Tags")).get(tags.ARCH, cfg.arch),
        target="aws",
        image=ami_id,
        inputs_hash=tags.as_dict(image.get("Tags")).get(tags.INPUTS_HASH, ""),
        git_commit=tags.as_dict(image.get("Tags")).get(tags.GIT_COMMIT, ""),
        packer_version=tags.as_dict(image.get("Tags")).get(tags.PACKER_VERSION, ""),
        built_at=image.get("CreationDate", ""),
        path=path,
    )
    record.image = ami_id  # a record written before records had `image` names it so
    target = AwsTarget(
        ec2,
        image,
        runner=runner,
        ingress_cidr=ingress_cidr,
        junit_path=junit_path,
        clock=clock,
        sleep=sleep,
    )
    say(f"verifying {cfg.role} {ami_id} in {region}")
    result = verify_record(target, cfg, record, junit_path, installed_progress(), target.run)
    instance_id = target.under_test.instance_id if target.under_test else ""
    failed = result.named_failures
    summary = summarise(failed)
    colour = "green" if result.verified else "red"
    say(f"[{colour}]{result.verdict}[/] {cfg.role} {ami_id}" + (f": {summary}" if summary else ""))
    return VerificationResult(
        role=cfg.role,
        ami_id=ami_id,
        region=region,
        status=result.verdict,
        failed_checks=failed,
        summary=summary,
        junit_path=result.junit,
        instance_id=instance_id,
    )
