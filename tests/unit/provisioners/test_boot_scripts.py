"""The scripts that run at every boot of an image (rootfs/*/usr/local/libexec/bakery):
agent config translation, nginx upstream, database init and the SSM password, with the
metadata service, the agent's ctl, the aws CLI and the MariaDB client faked."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from provisioner_fakes import REPO_ROOT

LIBEXEC = "usr/local/libexec/bakery"
COMMON_LIBEXEC = REPO_ROOT / "rootfs" / "common" / LIBEXEC
if str(COMMON_LIBEXEC) not in sys.path:
    sys.path.insert(0, str(COMMON_LIBEXEC))

import launch_settings  # noqa: E402


def load_script(layer: str, name: str) -> ModuleType:
    """Import a rootfs script (no .py suffix) as a module."""
    path = REPO_ROOT / "rootfs" / layer / LIBEXEC / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_program(path: Path, body: str) -> Path:
    """A shell script standing in for a program; it may record its arguments and stdin."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# -- the instance metadata service ------------------------------------------------------


class _FakeImds(http.server.BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._reply(b"token-123")
        else:
            self.send_error(400)

    def do_GET(self) -> None:
        if self.path.endswith("/placement/region") and (
            self.headers.get("X-aws-ec2-metadata-token") == "token-123"
        ):
            self._reply(b"eu-central-1")
        else:
            self.send_error(401)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers: IMDS that is not there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_imds_token_and_region_with_imdsv2(imds: str) -> None:
    assert launch_settings.imds_token(imds) == "token-123"
    assert launch_settings.imds_region(imds) == "eu-central-1"


def test_no_imds_gives_none_within_the_timeout(silent_endpoint: str) -> None:
    started = time.monotonic()
    assert launch_settings.imds_token(silent_endpoint, timeout=0.5) is None
    assert time.monotonic() - started < 2


# -- translate-agent-config ---------------------------------------------------------------


@pytest.fixture
def translate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_script("common", "translate-agent-config")
    args_file = tmp_path / "ctl-args"
    ctl = fake_program(tmp_path / "ctl", f'echo "$@" > {args_file}\n')
    monkeypatch.setattr(module, "CTL", str(ctl))
    monkeypatch.setattr(module, "RUNTIME_DIR", str(tmp_path / "run"))
    config = {
        "agent": {"run_as_user": "cwagent"},
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {"file_path": "/var/log/a.log", "log_group_name": "/aws/ec2/baked"}
                    ]
                }
            }
        },
    }
    source = tmp_path / "agent-config.json"
    source.write_text(json.dumps(config))
    monkeypatch.setenv("AGENT_CONFIG", str(source))
    monkeypatch.delenv("LOG_GROUP_NAME", raising=False)
    return module


def ctl_args(tmp_path: Path) -> str:
    return (tmp_path / "ctl-args").read_text().strip()


def test_translation_uses_ec2_mode_when_imds_answers(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: "token")
    assert translate.main() == 0
    copy = tmp_path / "run" / "agent-config.json"
    assert ctl_args(tmp_path) == f"-a fetch-config -m ec2 -c file:{copy}"
    assert "-s" not in ctl_args(tmp_path).split()


def test_translation_falls_back_to_on_premise(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: None)
    assert translate.main() == 0
    assert " -m onPremise " in f" {ctl_args(tmp_path)} "


def test_launch_log_group_replaces_the_baked_one(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: None)
    monkeypatch.setenv("LOG_GROUP_NAME", "/aws/ec2/staging-backend")
    assert translate.main() == 0
    copy = json.loads((tmp_path / "run" / "agent-config.json").read_text())
    [entry] = copy["logs"]["logs_collected"]["files"]["collect_list"]
    assert entry["log_group_name"] == "/aws/ec2/staging-backend"


def test_invalid_log_group_is_refused(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: None)
    monkeypatch.setenv("LOG_GROUP_NAME", "bad group;rm")
    assert translate.main() == 1
    assert not (tmp_path / "ctl-args").exists()


def test_ctl_failure_is_the_units_failure(
    translate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(translate, "imds_token", lambda: None)
    monkeypatch.setattr(translate, "CTL", str(fake_program(tmp_path / "bad-ctl", "exit 1\n")))
    assert translate.main() == 1


# -- write-nginx-upstream -----------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> ModuleType:
    return load_script("frontend", "write-nginx-upstream")


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("http://10.0.1.20:8000", "10.0.1.20:8000"),
        ("http://10.0.1.20:8000/", "10.0.1.20:8000"),
        ("http://backend.internal", "backend.internal:80"),
        ("http://[fd00::5]:8000", "[fd00::5]:8000"),
        (" http://127.0.0.1:8000 ", "127.0.0.1:8000"),
    ],
)
def test_backend_url_becomes_an_upstream_server(
    upstream: ModuleType, url: str, server: str
) -> None:
    assert upstream.upstream_server(url) == server


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.1.20:8000",
        "10.0.1.20:8000",
        "http://10.0.1.20:8000/api",
        "http://user:pw@10.0.1.20",
        "http://10.0.1.20:99999",
        "http://bad_host;}:8000",
        "http://",
        "http://10.0.1.20:8000?x=1",
    ],
)
def test_bad_backend_urls_are_refused(upstream: ModuleType, url: str) -> None:
    with pytest.raises(upstream.BadBackendUrl):
        upstream.upstream_server(url)


def test_upstream_file_is_written_once(
    upstream: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "bakery-upstream.conf"
    monkeypatch.setenv("BACKEND_URL", "http://10.0.1.20:8000")
    assert upstream.main(["--output", str(output)]) == 0
    assert "upstream bakery_backend {\n    server 10.0.1.20:8000;\n" in output.read_text()
    assert upstream.main(["--output", str(output)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("(unchanged)")


def test_bad_backend_url_leaves_no_file(
    upstream: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "bakery-upstream.conf"
    monkeypatch.setenv("BACKEND_URL", "https://nope")
    assert upstream.main(["--output", str(output)]) == 1
    assert not output.exists()


# -- the database password and init ------------------------------------------------------

SECRET = "p'a\"ss\\w$rd`x"


def read_systemd_env_line(line: str) -> tuple[str, str]:
    """systemd's EnvironmentFile= reading of one quoted KEY=value line (env-file.c)."""
    key, _, raw = line.rstrip("\n").partition("=")
    quote, body = raw[0], raw[1:-1]
    assert raw[-1] == quote and quote in "'\""
    if quote == "'":
        return key, body
    value, escaped = [], False
    for char in body:
        if escaped:
            value.append(char if char in '"\\`$' else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            value.append(char)
    return key, "".join(value)


@pytest.mark.parametrize("value", ["plain", "with space", SECRET, "back\\slash", "$HOME"])
def test_env_file_lines_read_back_exactly(value: str) -> None:
    assert read_systemd_env_line(launch_settings.env_file_line("DB_PASSWORD", value)) == (
        "DB_PASSWORD",
        value,
    )


def test_password_from_launch_env_wins() -> None:
    environ = {"DB_PASSWORD": "s3cret", "DB_PASSWORD_SSM_PARAMETER": "/x"}
    assert launch_settings.resolve_db_password(environ) == ("s3cret", "DB_PASSWORD")
    assert launch_settings.resolve_db_password({}) == (None, "none")


def test_password_from_ssm_through_the_aws_cli(tmp_path: Path) -> None:
    args = tmp_path / "aws-args"
    aws = fake_program(tmp_path / "aws", f'echo "$@" > {args}\nprintf "%s\\n" "from-ssm"\n')
    password, source = launch_settings.resolve_db_password(
        {"DB_PASSWORD_SSM_PARAMETER": "/bakery/db/password"},
        which=lambda name: str(aws),
        region_lookup=lambda: "eu-west-1",
    )
    assert (password, source) == ("from-ssm", "SSM parameter /bakery/db/password")
    assert args.read_text().split() == [
        "ssm",
        "get-parameter",
        "--name",
        "/bakery/db/password",
        "--with-decryption",
        "--query",
        "Parameter.Value",
        "--output",
        "text",
        "--region",
        "eu-west-1",
    ]


def test_ssm_without_the_aws_cli_says_what_to_do() -> None:
    with pytest.raises(launch_settings.LaunchSettingsError, match="aws CLI is not installed"):
        launch_settings.resolve_db_password(
            {"DB_PASSWORD_SSM_PARAMETER": "/x"}, which=lambda name: None
        )


def test_ssm_failure_is_reported(tmp_path: Path) -> None:
    aws = fake_program(tmp_path / "aws", 'echo "AccessDeniedException: no" >&2\nexit 254\n')
    with pytest.raises(launch_settings.LaunchSettingsError, match="AccessDeniedException"):
        launch_settings.resolve_db_password(
            {"DB_PASSWORD_SSM_PARAMETER": "/x", "AWS_REGION": "us-east-1"},
            which=lambda name: str(aws),
        )


def test_backend_secret_file_is_root_only_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_script("backend", "resolve-db-password")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    monkeypatch.setattr(module, "resolve_db_password", lambda environ: (SECRET, "SSM parameter /x"))
    output = tmp_path / "run" / "db-password.env"

    assert module.main(["resolve-db-password", str(output)]) == 0

    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    [line] = [x for x in output.read_text().splitlines(True) if not x.startswith("#")]
    assert read_systemd_env_line(line) == ("DB_PASSWORD", SECRET)


def test_backend_secret_file_goes_when_launch_env_has_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_script("backend", "resolve-db-password")
    output = tmp_path / "db-password.env"
    output.write_text("DB_PASSWORD='old'\n")
    monkeypatch.setenv("DB_PASSWORD", "direct")
    assert module.main(["resolve-db-password", str(output)]) == 0
    assert not output.exists()


@pytest.fixture
def init_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_script("database", "init-app-database")
    monkeypatch.setenv("DB_NAME", "appdb")
    monkeypatch.setenv("DB_USER", "app")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    monkeypatch.delenv("DB_PASSWORD_SSM_PARAMETER", raising=False)
    return module


def test_database_and_user_are_created_from_the_launch_password(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    received = tmp_path / "sql"
    client = fake_program(tmp_path / "mariadb", f'echo "$@" > {received}.args\ncat > {received}\n')
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    monkeypatch.setenv("DB_PASSWORD", SECRET)

    assert init_db.main() == 0

    sql = received.read_text()
    assert "CREATE DATABASE IF NOT EXISTS `appdb`" in sql
    assert "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'p\\'a\"ss\\\\w$rd`x';" in sql
    assert "GRANT ALL PRIVILEGES ON `appdb`.* TO 'app'@'%';" in sql
    assert SECRET not in Path(f"{received}.args").read_text()
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "appdb and user app@'%' are in place (password from DB_PASSWORD)" in out.out


def test_without_a_password_nothing_is_created(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = fake_program(tmp_path / "mariadb", f"touch {tmp_path}/ran\n")
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    assert init_db.main() == 0
    assert not (tmp_path / "ran").exists()
    assert "created no database and no user" in capsys.readouterr().out


def test_client_errors_never_show_the_password(
    init_db: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A client that quotes the whole statement back in its error, as MariaDB does.
    client = fake_program(tmp_path / "mariadb", "cat >&2\nexit 1\n")
    monkeypatch.setattr(init_db, "client", lambda: str(client))
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    assert init_db.main() == 1
    out = capsys.readouterr()
    assert "creating appdb" in out.err
    assert SECRET not in out.err and init_db.sql_string(SECRET)[1:-1] not in out.err


def test_bad_database_names_are_refused(
    init_db: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_NAME", "app`; DROP")
    monkeypatch.setenv("DB_PASSWORD", "x")
    assert init_db.main() == 1


def test_private_files_are_written_0600(tmp_path: Path) -> None:
    target = tmp_path / "run" / "secret.env"
    launch_settings.write_private_file(str(target), "X=1\n")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


# -- as the units run them: executables in the rendered rootfs -----------------------------


def run_rendered(
    render_stage: Callable[..., Path], role: str, script: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    path = render_stage(role) / "rootfs" / LIBEXEC / script
    return subprocess.run(
        [str(path), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3 here")
def test_rendered_scripts_run_as_programs(
    render_stage: Callable[..., Path], tmp_path: Path
) -> None:
    upstream_file = tmp_path / "bakery-upstream.conf"
    result = run_rendered(
        render_stage,
        "frontend",
        "write-nginx-upstream",
        "--output",
        str(upstream_file),
        BACKEND_URL="http://10.0.1.20:8000",
    )
    assert result.returncode == 0, result.stderr
    assert "server 10.0.1.20:8000;" in upstream_file.read_text()

    # The backend's script finds launch_settings beside it, as on the image.
    secret_file = tmp_path / "db-password.env"
    result = run_rendered(
        render_stage, "backend", "resolve-db-password", str(secret_file), DB_PASSWORD="x"
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to read" in result.stdout
    assert not list((render_stage("backend") / "rootfs" / LIBEXEC).glob("__pycache__"))


def test_no_metadata_call_leaves_a_machine_whose_firmware_is_not_ec2(tmp_path: Path) -> None:
    vendor = tmp_path / "sys_vendor"
    vendor.write_text("QEMU\n")
    assert not launch_settings.looks_like_ec2((str(vendor), str(tmp_path / "absent")))
    vendor.write_text("Amazon EC2\n")
    assert launch_settings.looks_like_ec2((str(vendor),))
    xen_uuid = tmp_path / "uuid"
    xen_uuid.write_text("ec2e1916-9099-7caf-fd21-012345abcdef\n")
    assert launch_settings.looks_like_ec2((str(xen_uuid),))
