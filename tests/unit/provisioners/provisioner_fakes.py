"""A fake image for the provisioner tests: a command runner that records every command and
answers from a small model of the system (installed packages, enabled units, users,
pip's installed set), so that steps can run twice and show what they would change."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery_provision.backend import pinned_versions
from bakery_provision.commands import CommandFailed, CommandResult, CommandRunner
from bakery_provision.context import StepContext
from bakery_provision.signatures import primary_fingerprints

REPO_ROOT = Path(__file__).resolve().parents[3]
AGENT_PACKAGE = "amazon-cloudwatch-agent"
AGENT_VERSION_FILE = "opt/aws/amazon-cloudwatch-agent/bin/CWAGENT_VERSION"
INSTALL_PROGRAMS = (("apt-get", "install"), ("dnf", "install"))


def _targets(arguments: Sequence[str]) -> list[str]:
    """The non-option arguments of an install command (`-o X` takes a value)."""
    targets = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "-o":
            skip = True
        elif not argument.startswith("-"):
            targets.append(argument)
    return targets


class FakeSystem(CommandRunner):
    """Records commands; answers them from, and applies them to, its model of the image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.os = "debian12"
        self.commands: list[list[str]] = []
        self.envs: list[Mapping[str, str] | None] = []
        self.inputs: list[str | None] = []
        self.packages: dict[str, str] = {}
        # What `dpkg-deb --show` / `rpm -qp` say about any package file.
        self.package_file = (AGENT_PACKAGE, "1.300040.0b650-1")
        # What the installed agent writes to CWAGENT_VERSION.
        self.agent_reports = "1.300040.0b650"
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.users: dict[str, str] = {}
        self.groups: dict[str, list[str]] = {"cwagent": ["cwagent"]}
        self.pip: dict[str, str] = {}
        self.python_version = "3.11"
        self.programs = {"cloud-init", "gpg", "journalctl", "mariadb"}
        self.forced: dict[tuple[str, ...], CommandResult] = {}
        # Programs that really run (verification must be real to mean anything).
        self.delegated = {"gpg"}

    # -- what tests look at -----------------------------------------------------------

    def ran(self, *prefix: str) -> list[list[str]]:
        """The commands that started with prefix."""
        return [command for command in self.commands if tuple(command[: len(prefix)]) == prefix]

    def install_commands(self) -> list[list[str]]:
        """Commands that change installed software or users."""
        changing = [command for prefix in INSTALL_PROGRAMS for command in self.ran(*prefix)]
        changing += [c for c in self.commands if c[1:4] == ["-m", "pip", "install"]]
        changing += self.ran("useradd") + self.ran("usermod") + self.ran("systemctl", "enable")
        return changing

    def force(self, *prefix: str, returncode: int = 1, stdout: str = "", stderr: str = "") -> None:
        """Make commands starting with prefix give this result."""
        self.forced[prefix] = CommandResult(prefix, returncode, stdout, stderr)

    def reset_log(self) -> None:
        self.commands.clear()
        self.envs.clear()
        self.inputs.clear()

    # -- CommandRunner ----------------------------------------------------------------

    def exists(self, program: str) -> bool:
        return program in self.programs

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        command = [str(part) for part in argv]
        self.commands.append(command)
        self.envs.append(env)
        self.inputs.append(input_text)
        if command[0] in self.delegated:
            real = CommandRunner().run(command, env=env, input_text=input_text, check=check)
            return CommandResult(tuple(command), real.returncode, real.stdout, real.stderr)
        returncode, stdout, stderr = self._answer(command)
        for prefix, forced in self.forced.items():
            if tuple(command[: len(prefix)]) == prefix:
                returncode, stdout, stderr = forced.returncode, forced.stdout, forced.stderr
        result = CommandResult(tuple(command), returncode, stdout, stderr)
        if check and returncode != 0:
            raise CommandFailed(result)
        return result

    def _answer(self, command: list[str]) -> tuple[int, str, str]:
        program, arguments = command[0], command[1:]
        if program == "dpkg-query":
            return self._dpkg_query(arguments)
        if program == "rpm":
            return self._rpm(arguments)
        if program == "dpkg-deb":
            return 0, "\t".join(self.package_file), ""
        if tuple(command[:2]) in INSTALL_PROGRAMS:
            for target in _targets(arguments[1:]):
                self._install(target)
            return 0, "", ""
        if program == "systemctl":
            return self._systemctl(arguments)
        if program == "getent" and arguments[0] == "passwd":
            user = arguments[1]
            if user in self.users:
                return 0, f"{user}:x:998:998::/nonexistent:{self.users[user]}\n", ""
            return 2, "", ""
        if program == "useradd":
            shell = arguments[arguments.index("--shell") + 1]
            self.users[arguments[-1]] = shell
            return 0, "", ""
        if program == "usermod" and arguments[:2] == ["-a", "-G"]:
            self.groups.setdefault(arguments[3], []).append(arguments[2])
            return 0, "", ""
        if program == "id" and arguments[0] == "-nG":
            groups = self.groups.get(arguments[1])
            return (0, " ".join(groups) + "\n", "") if groups else (1, "", "no such user")
        if arguments[:1] == ["-c"] and "version_info" in arguments[1]:
            return 0, self.python_version + "\n", ""
        if arguments[:2] == ["-m", "venv"]:
            python = Path(arguments[2]) / "bin" / "python"
            python.parent.mkdir(parents=True, exist_ok=True)
            python.write_text("#!/bin/sh\n")
            return 0, "", ""
        if arguments[:3] == ["-m", "pip", "freeze"]:
            return 0, "".join(f"{n}=={v}\n" for n, v in sorted(self.pip.items())), ""
        if arguments[:3] == ["-m", "pip", "install"]:
            requirements = Path(arguments[arguments.index("-r") + 1])
            self.pip.update(pinned_versions(requirements.read_text()))
            return 0, "", ""
        return 0, "", ""

    def _install(self, target: str) -> None:
        if target.endswith((".deb", ".rpm")):
            name, version = self.package_file
            self.packages[name] = version
            if name == AGENT_PACKAGE:
                version_file = self.root / AGENT_VERSION_FILE
                version_file.parent.mkdir(parents=True, exist_ok=True)
                version_file.write_text(self.agent_reports + "\n")
                self.groups.setdefault("cwagent", ["cwagent"])
        else:
            self.packages[target] = "1.0-1"

    def _dpkg_query(self, arguments: list[str]) -> tuple[int, str, str]:
        if arguments[1].startswith("-f=${Status}"):
            name = arguments[2]
            if name in self.packages:
                return 0, f"install ok installed\t{self.packages[name]}", ""
            return 1, "", f"dpkg-query: no packages found matching {name}"
        lines = [f"{n}\t{v}\tamd64\n" for n, v in sorted(self.packages.items())]
        return 0, "".join(lines), ""

    def _rpm(self, arguments: list[str]) -> tuple[int, str, str]:
        if "-p" in arguments:
            return 0, "\t".join(self.package_file), ""
        if "-a" in arguments:
            lines = [f"{n}\t{v}\tx86_64\n" for n, v in sorted(self.packages.items())]
            return 0, "".join(lines), ""
        name = arguments[-1]
        if name in self.packages:
            return 0, self.packages[name], ""
        return 1, f"package {name} is not installed\n", ""

    def _systemctl(self, arguments: list[str]) -> tuple[int, str, str]:
        action, units = arguments[0], [a for a in arguments[1:] if not a.startswith("-")]
        if action == "is-enabled":
            return (0, "enabled\n", "") if units[0] in self.enabled else (1, "disabled\n", "")
        if action == "is-active":
            return (0, "active\n", "") if units[0] in self.active else (3, "inactive\n", "")
        if action == "list-unit-files":
            return 0, "".join(f"{unit} enabled enabled\n" for unit in sorted(self.enabled)), ""
        if action == "enable":
            self.enabled.update(units)
        elif action in ("start", "restart"):
            self.active.update(units)
        elif action == "stop":
            self.active.difference_update(units)
        return 0, "", ""


# Files of the base image that steps edit rather than write (as Debian 12 ships them).
BASE_IMAGE_FILES = {
    "/etc/ssh/sshd_config": (
        "Include /etc/ssh/sshd_config.d/*.conf\n"
        "KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n"
    ),
    "/etc/profile": (
        'if [ "$(id -u)" -eq 0 ]; then\n  PATH="/usr/local/sbin:/usr/bin"\nfi\nexport PATH\n'
    ),
    "/etc/login.defs": (
        "# comment\nMAIL_DIR /var/mail\nPASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\n"
        "UMASK\t\t022\n#SHA_CRYPT_MIN_ROUNDS 5000\nENCRYPT_METHOD SHA512\n"
    ),
}


def put_base_image_files(root: Path) -> None:
    for absolute, text in BASE_IMAGE_FILES.items():
        path = root / absolute.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def plan_data(**changes: Any) -> dict[str, Any]:
    """A bake plan as the renderer writes it (backend, debian12, local test double)."""
    data: dict[str, Any] = {
        "role": "backend",
        "target": "local",
        "os": "debian12",
        "stage": "/tmp/bakery",
        "agent": {
            "package": "test-double",
            "url": "file:///tmp/bakery/artifacts/agent/amazon-cloudwatch-agent_0.1.0_amd64.deb",
            "signature_url": None,
            "gpg_key_url": None,
            "gpg_fingerprint": None,
            "sha256": "0" * 64,
            "min_version": "1.300040.0",
            "config_path": "/opt/aws/amazon-cloudwatch-agent/etc/bakery/agent-config.json",
        },
        "app": {"user": "app", "dir": "/opt/app", "port": 8000},
        "otel": {"distro_version": "0.21.0"},
        "steps": [
            "prepare",
            "install-agent",
            "install-backend",
            "harden",
            "record-manifest",
            "seal",
        ],
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if "role" in changes and "steps" not in changes:
        data["steps"] = [
            "prepare",
            "install-agent",
            f"install-{changes['role']}",
            "harden",
            "record-manifest",
            "seal",
        ]
    return data


MakeContext = Callable[..., StepContext]


def put_rendered_rootfs(ctx: StepContext, rendered_stage: Path) -> None:
    """Copy a real render's rootfs into the context's stage, as Packer uploads it."""
    shutil.copytree(rendered_stage / "rootfs", ctx.rootfs, dirs_exist_ok=True)


# -- throwaway GPG keys (real gpg) --------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    home: Path
    fingerprint: str
    public_key: Path

    def sign(self, file: Path) -> Path:
        signature = file.with_name(file.name + ".sig")
        subprocess.run(
            [*gpg(self.home), "--output", str(signature), "--detach-sign", str(file)],
            check=True,
            capture_output=True,
        )
        return signature


def gpg(home: Path) -> list[str]:
    return ["gpg", "--batch", "--no-tty", "--homedir", str(home)]


def make_key(name: str, out_dir: Path) -> SigningKey:
    # Short path: gpg-agent's socket lives in the home and socket paths are length-limited.
    home = Path(tempfile.mkdtemp(prefix="gpgt-"))
    home.chmod(0o700)
    subprocess.run(
        [
            *gpg(home),
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name}@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*gpg(home), "--with-colons", "--fingerprint"], check=True, capture_output=True, text=True
    ).stdout
    [fingerprint] = primary_fingerprints(listing)
    public_key = out_dir / f"{name}.asc"
    subprocess.run(
        [*gpg(home), "--armor", "--output", str(public_key), "--export", fingerprint],
        check=True,
        capture_output=True,
    )
    return SigningKey(home, fingerprint, public_key)
