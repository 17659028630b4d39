"""A fake instance for appsignals-doctor: a healthy backend as files under a root folder,
with the doctor's system probes (systemctl, HTTP, instance metadata) replaced by fakes."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from bakery.agent_config import agent_config
from bakery.config import load_config
from bakery.packer import PackerVersion
from bakery.render import render_role

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCTOR = REPO_ROOT / "onimage/appsignals-doctor"
LAUNCH_SETTINGS = REPO_ROOT / "onimage/launch_settings.py"
AGENT_HOME = "opt/aws/amazon-cloudwatch-agent"
BOOT_ID = "0f8e2d4c-1111-4222-8333-944455556666"
BOOT_TIME = 1_700_000_000
PASSWORD = "s3cret-'launch'-password"


@functools.cache
def rendered_app_unit() -> str:
    """The backend's fastapi-otel.service exactly as a bake renders it."""
    with tempfile.TemporaryDirectory() as scratch:
        cfg = load_config("backend", "local")
        stage = render_role(cfg, PackerVersion(1, 6, 6), Path(scratch)).stage
        return (stage / "rootfs/etc/systemd/system/fastapi-otel.service").read_text()


def load_doctor() -> ModuleType:
    """The doctor as a module (it is a script without .py on the image)."""
    loader = importlib.machinery.SourceFileLoader("appsignals_doctor", str(DOCTOR))
    spec = importlib.util.spec_from_loader("appsignals_doctor", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["appsignals_doctor"] = module
    loader.exec_module(module)
    return module


@dataclass
class FakeProbes:
    """systemctl, HTTP and IMDS answers; every unit is active unless told otherwise."""

    unit_states: dict[str, str] = field(default_factory=dict)
    http: dict[str, int | None] = field(default_factory=dict)
    metadata_answers: dict[str, str | None] = field(default_factory=dict)
    metadata_asked: list[str] = field(default_factory=list)

    def unit_state(self, unit: str) -> str:
        return self.unit_states.get(unit, "active")

    def http_status(self, url: str) -> int | None:
        return self.http.get(url, 200)

    def metadata(self, path: str) -> str | None:
        self.metadata_asked.append(path)
        return self.metadata_answers.get(path)


def listen_row(index: int, port: int) -> str:
    """A /proc/net/tcp line for 127.0.0.1:port in LISTEN state (0A)."""
    return (
        f"{index:4d}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000   999        0 12345 1 0000000000000000 100 0 0 10 0"
    )


class FakeInstance:
    """A healthy backend instance under `root`; methods break one thing at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.probes = FakeProbes()
        cfg = load_config("backend", "local")
        self.write("usr/local/libexec/bakery/launch_settings.py", LAUNCH_SETTINGS.read_text())
        self.write("etc/systemd/system/fastapi-otel.service", rendered_app_unit())
        self.write(
            "etc/bakery/defaults.env",
            f"SERVICE_NAME={cfg.service.name}\nDEPLOYMENT_ENVIRONMENT={cfg.service.deployment_environment}\n"
            f"LOG_GROUP_NAME={cfg.service.log_group}\nBACKEND_URL={cfg.launch.backend_url}\n"
            f"DB_HOST={cfg.launch.db_host}\nDB_PORT={cfg.launch.db_port}\n"
            f"DB_NAME={cfg.launch.db_name}\nDB_USER={cfg.launch.db_user}\n",
        )
        self.write_launch_env(
            'SERVICE_NAME="checkout"\nDEPLOYMENT_ENVIRONMENT="staging"\n'
            'LOG_GROUP_NAME="/aws/ec2/staging/checkout"\nDB_HOST="10.0.2.30"\n'
            'DB_PORT="3306"\nDB_NAME="appdb"\nDB_USER="app"\n'
            f'DB_PASSWORD="{PASSWORD}"\n'
        )
        config_path = f"/{AGENT_HOME}/etc/bakery/agent-config.json"
        self.write("etc/bakery/agent.env", f"AGENT_CONFIG={config_path}\n")
        self.agent_config = agent_config(cfg)
        self.write(config_path, json.dumps(self.agent_config))
        self.write(
            f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.d/file_agent-config.json",
            json.dumps(self.agent_config),
        )
        self.write(f"{AGENT_HOME}/bin/CWAGENT_VERSION", "1.300040.0b650\n")
        self.translate(boot_id=BOOT_ID, region="us-east-1")
        self.write(
            f"{AGENT_HOME}/logs/amazon-cloudwatch-agent.log",
            "2024-01-01T00:00:00Z I! starting\n2024-01-01T00:00:01Z I! listening\n",
        )
        self.write("proc/sys/kernel/random/boot_id", BOOT_ID + "\n")
        self.write("proc/stat", f"cpu  1 2 3 4\nbtime {BOOT_TIME}\nprocesses 100\n")
        self.listen(2000, 4315, 4316, cfg.app.port)

    def write(self, relative: str, text: str, mode: int = 0o644) -> Path:
        path = self.root / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def write_launch_env(self, text: str) -> None:
        self.write("etc/bakery/launch.env", text, mode=0o600)

    def translate(self, boot_id: str | None, region: str) -> None:
        """The agent's translation; with boot_id as the test double writes it."""
        recorded = f'boot_id = "{boot_id}"\n' if boot_id else ""
        self.write(
            f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.toml",
            f'[agent]\n  region = "{region}"\n{recorded}',
        )
        self.write(f"{AGENT_HOME}/etc/amazon-cloudwatch-agent.yaml", f"  region: {region}\n")

    def listen(self, *ports: int) -> None:
        header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
        rows = "\n".join(listen_row(index, port) for index, port in enumerate(ports))
        self.write("proc/net/tcp", header + rows + "\n")
        self.write("proc/net/tcp6", header)

    def as_ec2(self, region: str | None, instance_profile: bool = True) -> None:
        """DMI says EC2, and the metadata service answers as given."""
        self.write("sys/class/dmi/id/sys_vendor", "Amazon EC2\n")
        self.probes.metadata_answers["placement/region"] = region
        if instance_profile:
            self.probes.metadata_answers["iam/info"] = json.dumps(
                {"Code": "Success", "InstanceProfileArn": "arn:aws:iam::123456789012:"
                 "instance-profile/bakery-backend"}
            )  # fmt: skip

    def remove(self, relative: str) -> None:
        path = self.root / relative.lstrip("/")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
