"""The bad-input matrix: hostile settings files, `--set` values, options and environments,
run through the real invoke tasks in this process. Every case must end in exactly one line
that names the key, option, variable or file, the right exit code, no traceback and no
change under build/."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from invoke import Config, Program
from tasks_module import task_collection

from bakery.cli import exits_cleanly
from bakery.config import MAX_USER_TAGS, REPO_ROOT, BakeryConfig, load_config
from bakery.packer import PackerVersion
from bakery.render import render_role

BUILD = REPO_ROOT / "build"


class RepoOnlyConfig(Config):  # type: ignore[misc]
    """Invoke's config without /etc/invoke.yaml or ~/.invoke.yaml: the host's files must
    not change what a case does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("lazy", True)
        super().__init__(*args, **kwargs)


TASKS = task_collection()


def _snapshot() -> dict[str, float]:
    if not BUILD.exists():
        return {}
    return {str(p.relative_to(BUILD)): p.stat().st_mtime_ns for p in BUILD.rglob("*")}


def run_task(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of `invoke ARGV`, run in this process."""
    program = Program(namespace=TASKS, config_class=RepoOnlyConfig, binary="invoke")
    code = 0
    try:
        program.run(["invoke", *argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def assert_one_clear_line(code: int, output: str, want_code: int, names: str) -> None:
    lines = output.strip().splitlines()
    assert code == want_code, output
    assert len(lines) == 1, output
    assert names in lines[0], output
    assert "Traceback" not in output


Files = Callable[[str, bytes | str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Files:
    def make(name: str, content: bytes | str) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return make


def _tags(count: int) -> str:
    return "aws:\n  tags:\n" + "".join(f"    t{i}: v\n" for i in range(count))


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "service: {name: *e}\n"
)

# (id, file content, text the one line must hold besides the file name)
FILE_CASES: list[tuple[str, bytes | str, str]] = [
    ("duplicate-top-key", "service:\n  name: a\nservice:\n  environment: b\n", "service"),
    ("duplicate-nested-key", "service:\n  name: a\n  name: b\n", "service.name"),
    ("duplicate-tag", "aws:\n  tags:\n    team: a\n    team: b\n", "aws.tags.team"),
    ("duplicate-line-named", "app:\n  port: 1\n  port: 2\n", "line 3"),
    ("alias-bomb", ALIAS_BOMB, "expands to more than"),
    ("alias-recursive", "a: &a [*a]\n", "loop"),
    ("deep-flow-list", "x: " + "[" * 20000 + "]" * 20000 + "\n", "nested deeper"),
    ("deep-mapping", "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v\n",
     "nested deeper"),
    ("utf16-file", "service:\n  name: x\n".encode("utf-16"), "not UTF-8"),
    ("latin1-file", "service:\n  name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("binary-file", bytes(range(256)) * 4, "not UTF-8"),
    ("nul-in-file", b"service:\n  name: a\x00b\n", "line 2"),
    ("escape-sequence", "service:\n  name: \"\\e[31mred\"\n", "service.name"),
    ("newline-in-value", 'service:\n  name: "a\\nb"\n', "service.name"),
    ("tab-in-tag", 'aws:\n  tags:\n    team: "a\\tb"\n', "aws.tags.team"),
    ("go-template-tag", 'aws:\n  tags:\n    src: "{{ .SourceAMI }}"\n', "aws.tags.src"),
    ("go-template-tag-key", 'aws:\n  tags:\n    "{{.Name}}": x\n', "aws.tags"),
    ("go-template-name-pattern", "aws:\n  source_images:\n    debian12:\n      x86_64:\n"
     "        name_pattern: 'debian-{{ .x }}'\n", "name_pattern"),
    ("too-many-tags", _tags(MAX_USER_TAGS + 1), "aws.tags"),
    ("five-thousand-tags", _tags(5000), "aws.tags"),
    ("aws-prefix-tag", "aws:\n  tags:\n    'aws:cost': x\n", "aws.tags"),
    ("aws-prefix-upper", "aws:\n  tags:\n    'AWS:cost': x\n", "aws.tags"),
    ("bakery-prefix-tag", "aws:\n  tags:\n    'bakery:role': x\n", "aws.tags"),
    ("tag-key-too-long", f"aws:\n  tags:\n    {'k' * 129}: x\n", "aws.tags"),
    ("tag-value-too-long", f"aws:\n  tags:\n    k: {'v' * 257}\n", "aws.tags.k"),
    ("tag-value-list", "aws:\n  tags:\n    k: [/x]\n", "aws.tags.k"),
    ("tags-not-mapping", "aws:\n  tags: [a, b]\n", "aws.tags"),
    ("lone-surrogate", 'service:\n  name: "\\ud800"\n', "service.name"),
    ("rich-markup-service", "service:\n  name: '[/x]'\n", "service.name"),
    ("rich-markup-environment", "service:\n  deployment_environment: '[bold]x[/]'\n",
     "service.deployment_environment"),
    ("root-user", "app:\n  user: root\n", "app.user"),
    ("etc-dir", "app:\n  dir: /etc\n", "app.dir"),
    ("https-backend", "launch:\n  backend_url: https://api.internal\n", "launch.backend_url"),
    ("cidr-db-host", "launch:\n  db_host: 10.0.0.0/33\n", "launch.db_host"),
    ("distro-mismatch", "otel:\n  distro_version: '0.1.0'\n", "otel.distro_version"),
    ("deprecate-overflow", "aws:\n  deprecate_after_days: 3000000\n",
     "aws.deprecate_after_days"),
    ("invalid-yaml", "service:\n  name: [unclosed\n", "invalid YAML"),
    ("unknown-key", "service:\n  nmae: typo\n", "service.nmae"),
    ("not-mapping", "- a\n- b\n", "mapping"),
    ("role-in-file", "role: backend\n", "role"),
    ("non-string-key", "service:\n  ? [a, b]\n  : x\n", "invalid YAML"),
    ("text-port", "app:\n  port: eighty\n", "app.port"),
    ("bool-port", "app:\n  port: yes\n", "app.port"),
    ("bool-cpus", "local:\n  cpus: true\n", "local.cpus"),
    ("quoted-number-port", "app:\n  port: '8000'\n", "app.port"),
    ("float-cpus", "local:\n  cpus: 1.5\n", "local.cpus"),
    ("huge-file", "# " + "x" * (1024 * 1024) + "\n", "larger than"),
    ("python-tag", "service: !!python/object:os.system {}\n", "invalid YAML"),
    ("empty-owners", "aws:\n  source_images:\n    debian12:\n      x86_64:\n        owners: []\n",
     "aws.source_images.debian12.x86_64.owners"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "content", "names"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_settings_file_is_one_line_naming_file_and_key(
    case: str, content: bytes | str, names: str, write: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(f"{case}.yaml", content)
    before = _snapshot()
    code, output = run_task(["render", "--role", "backend", "--config", str(path)], capsys)
    assert_one_clear_line(code, output, 2, names)
    assert str(path) in output
    assert _snapshot() == before


# (id, --set assignment, text the one line must hold)
SET_CASES: list[tuple[str, str, str]] = [
    ("user-root", "app.user=root", "app.user"),
    ("user-mysql", "app.user=mysql", "app.user"),
    ("user-nobody", "app.user=nobody", "app.user"),
    ("user-www-data", "app.user=www-data", "app.user"),
    ("user-uppercase", "app.user=App", "app.user"),
    ("dir-root", "app.dir=/", "app.dir"),
    ("dir-etc", "app.dir=/etc", "app.dir"),
    ("dir-under-etc", "app.dir=/etc/app", "app.dir"),
    ("dir-usr-lib", "app.dir=/usr/lib/app", "app.dir"),
    ("dir-opt", "app.dir=/opt", "app.dir"),
    ("dir-dotdot", "app.dir=/opt/../etc", "app.dir"),
    ("dir-tmp", "app.dir=/tmp/app", "app.dir"),
    ("dir-var-lib", "app.dir=/var/lib/app", "app.dir"),
    ("dir-trailing-slash", "app.dir=/opt/app/", "app.dir"),
    ("dir-relative", "app.dir=opt/app", "app.dir"),
    ("dir-agent-home", "app.dir=/opt/aws/app", "app.dir"),
    ("dir-space", "app.dir=/opt/my app", "app.dir"),
    ("backend-https", "launch.backend_url=https://10.0.0.1", "launch.backend_url"),
    ("backend-path", "launch.backend_url=http://10.0.0.1/api", "launch.backend_url"),
    ("backend-query", "launch.backend_url=http://10.0.0.1/?a=1", "launch.backend_url"),
    ("backend-fragment", "launch.backend_url=http://10.0.0.1/#x", "launch.backend_url"),
    ("backend-userinfo", "launch.backend_url=http://u:p@10.0.0.1", "launch.backend_url"),
    ("backend-bad-port", "launch.backend_url=http://10.0.0.1:99999", "launch.backend_url"),
    ("backend-bad-host", "launch.backend_url=http://bad_host", "launch.backend_url"),
    ("backend-no-host", "launch.backend_url=http://", "launch.backend_url"),
    ("backend-percent", "launch.backend_url=http://10.0.0.1/%", "launch.backend_url"),
    ("db-host-cidr", "launch.db_host=10.0.0.0/33", "launch.db_host"),
    ("db-host-cidr-ok-mask", "launch.db_host=10.0.0.0/8", "launch.db_host"),
    ("db-host-port", "launch.db_host=db:3306", "launch.db_host"),
    ("db-host-underscore", "launch.db_host=db_host", "launch.db_host"),
    ("db-host-url", "launch.db_host=mysql://db", "launch.db_host"),
    ("db-host-dash-start", "launch.db_host=-db", "launch.db_host"),
    ("distro-older", "otel.distro_version=0.20.0", "otel.distro_version"),
    ("distro-newer", "otel.distro_version=9.0.0", "otel.distro_version"),
    ("deprecate-huge", "aws.deprecate_after_days=3000000", "aws.deprecate_after_days"),
    ("deprecate-eleven-years", "aws.deprecate_after_days=4018", "aws.deprecate_after_days"),
    ("deprecate-zero", "aws.deprecate_after_days=0", "aws.deprecate_after_days"),
    ("tag-aws-prefix", "aws.tags.aws:x=1", "aws.tags"),
    ("tag-go-template", "aws.tags.src={{ .SourceAMI }}", "aws.tags.src"),
    ("tag-go-template-open", "aws.tags.src=a{{b", "aws.tags.src"),
    ("tag-go-template-close", "aws.tags.src=a}}b", "aws.tags.src"),
    ("tag-newline", 'aws.tags.t="a\\nb"', "aws.tags.t"),
    ("tag-nul", "aws.tags.t=a\x00b", "aws.tags.t"),
    ("tag-escape", "aws.tags.t=\x1b[2J", "aws.tags.t"),
    ("tag-list-markup", "aws.tags.t=[/x]", "aws.tags.t"),
    ("ami-name-open-brace", "aws.ami_name_pattern=x-{", "aws.ami_name_pattern"),
    ("ami-name-close-brace", "aws.ami_name_pattern=x-}-{timestamp}", "aws.ami_name_pattern"),
    ("ami-name-index", "aws.ami_name_pattern=x-{0}-{timestamp}", "aws.ami_name_pattern"),
    ("ami-name-attribute", "aws.ami_name_pattern=x-{role.x}-{timestamp}",
     "aws.ami_name_pattern"),
    ("ami-name-format-spec", "aws.ami_name_pattern=x-{role:>300}-{timestamp}",
     "aws.ami_name_pattern"),
    ("ami-name-double-brace", "aws.ami_name_pattern={{timestamp}}", "aws.ami_name_pattern"),
    ("service-markup", "service.name=[/x]", "service.name"),
    ("service-markup-text", "service.name=a[/x]", "service.name"),
    ("service-non-bmp", "service.name=app\U0001f600", "service.name"),
    ("service-percent", "service.name=a%i", "service.name"),
    ("service-backslash", "service.name=a\\b", "service.name"),
    ("environment-markup", "service.deployment_environment=[bold]x",
     "service.deployment_environment"),
    ("environment-emoji-code", "service.deployment_environment=:x:",
     "service.deployment_environment"),
    ("log-group-percent", "service.log_group=/aws/%h", "service.log_group"),
    ("log-group-non-bmp", "service.log_group=/aws/\U0001f600", "service.log_group"),
    ("otlp-quote", 'otel.otlp_endpoint=http://x"y', "otel.otlp_endpoint"),
    ("otlp-newline", "otel.otlp_endpoint=http://x\ny", "otel.otlp_endpoint"),
    ("owner-wildcard", "aws.source_images.debian12.x86_64.owners=['*']",
     "aws.source_images.debian12.x86_64.owners.0"),
    ("name-pattern-dollar", "aws.source_images.debian12.x86_64.name_pattern=${x}",
     "aws.source_images.debian12.x86_64.name_pattern"),
    ("kms-hcl", "aws.kms_key_id=${var.x}", "aws.kms_key_id"),
    ("instance-type-hcl", "aws.instance_types.x86_64=%{if true}x", "aws.instance_types.x86_64"),
    ("region-markup", "aws.region=[/x]", "aws.region"),
    ("copy-region-bad", "aws.copy_regions=[mars-1]", "aws.copy_regions.0"),
    ("volume-too-big", "aws.volume_size_gb=100000", "aws.volume_size_gb"),
    ("memory-too-small", "local.memory_mb=1", "local.memory_mb"),
    ("port-zero", "app.port=0", "app.port"),
    ("port-negative", "app.port=-1", "app.port"),
    ("db-port-text", "launch.db_port=abc", "launch.db_port"),
    ("db-name-dash", "launch.db_name=my-db", "launch.db_name"),
    ("db-user-long", f"launch.db_user={'u' * 33}", "launch.db_user"),
    ("retention-negative", "aws.retention=-3", "aws.retention"),
    ("exposure-over", "verify.max_exposure=11", "verify.max_exposure"),
    ("boot-timeout-tiny", "verify.boot_timeout_s=1", "verify.boot_timeout_s"),
    ("set-deep-nesting", "service.name=" + "[" * 5000, "service.name"),
    ("set-alias-bomb", "service.name=" + ALIAS_BOMB.replace("\n", " ").split("service")[0],
     "service.name"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "assignment", "names"), SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_value_is_one_line_naming_the_key(
    case: str, assignment: str, names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot()
    code, output = run_task(["render", "--role", "backend", "--set", assignment], capsys)
    assert_one_clear_line(code, output, 2, names)
    assert _snapshot() == before


# (id, argv, text the one line must hold)
OPTION_CASES: list[tuple[str, list[str], str]] = [
    *[
        (f"unknown-option-{name.split()[0]}", [*name.split(), "--no-such-option"],
         "--no-such-option")
        for name in ("render", "validate", "fmt", "build", "verify", "images", "schema",
                     "clean", "host-check", "release --environment x", "prune", "janitor", "iam",
                     "launch-template --role backend --environment x",
                     "enable-application-signals", "test")
    ],
    ("unknown-task", ["rendr"], "rendr"),
    ("missing-value-target", ["render", "--target"], "--target"),
    ("missing-value-config", ["render", "--config"], "--config"),
    ("missing-value-output", ["schema", "--output"], "--output"),
    ("missing-value-set", ["render", "--set"], "--set"),
    ("missing-value-role", ["render", "-r"], "-r"),
    ("missing-required-environment", ["release", "--role", "backend"], "environment"),
    ("missing-required-role", ["launch-template", "--environment", "staging"], "role"),
    ("iam-short-s-is-set", ["iam", "-s", "/x/"], "--set /x/"),
    ("secret-path-star", ["iam", "--secret-path", "*"], "--secret-path *"),
    ("secret-path-glob", ["iam", "--secret-path", "/bakery/*"], "--secret-path /bakery/*"),
    ("secret-path-relative", ["iam", "--secret-path", "bakery/secrets"], "--secret-path"),
    ("secret-path-empty-segment", ["iam", "--secret-path", "/a//b"], "--secret-path"),
    ("secret-path-question", ["iam", "--secret-path", "/a/?"], "--secret-path"),
    ("keep-text", ["prune", "--keep", "many"], "--keep many"),
    ("ami-id-markup", ["release", "-r", "backend", "-e", "staging", "--ami-id", "[/x]"],
     "--ami-id [/x]"),
    ("ami-id-short", ["release", "-r", "backend", "-e", "staging", "--ami-id", "ami-1"],
     "--ami-id ami-1"),
    ("instance-profile-hcl", ["launch-template", "-r", "backend", "-e", "staging",
                              "--instance-profile", "${x}"], "--instance-profile ${x}"),
    ("launch-template-output-folder", ["launch-template", "-r", "backend", "-e", "staging",
                                       "--output", "config"], "--output config"),
    ("environment-markup", ["release", "-r", "backend", "-e", "[/x]"], "--environment '[/x]'"),
    ("unknown-target", ["render", "--target", "gcp"], "--target gcp"),
    ("unknown-role", ["render", "--role", "cache"], "--role cache"),
    ("role-markup", ["render", "--role", "[/x]"], "--role [/x]"),
    ("target-markup", ["render", "--target", "[bold]x"], "--target [bold]x"),
    ("missing-config-file", ["render", "--config", "no-such-file.yaml"], "no-such-file.yaml"),
    ("config-is-folder", ["render", "--config", "config"], "config"),
    ("config-is-dev-zero", ["render", "--config", "/dev/zero"], "/dev/zero"),
    ("config-is-dev-null", ["render", "--config", "/dev/null"], "/dev/null"),
    ("set-no-equals", ["render", "--set", "service.name"], "--set service.name"),
    ("set-unknown", ["render", "--set", "servcie.name=x"], "servcie"),
    ("set-role", ["render", "--set", "role=backend"], "--role"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "names"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_is_one_line_and_exit_2(
    case: str, argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot()
    code, output = run_task(argv, capsys)
    assert_one_clear_line(code, output, 2, names)
    assert _snapshot() == before


ENV_CASES = [
    ("pkr-var-region", "PKR_VAR_region", "eu-west-1"),
    ("pkr-var-encrypt", "PKR_VAR_encrypt", "false"),
    ("pkr-var-owners", "PKR_VAR_source_ami_owners", '["self"]'),
    ("packer-plugin-path", "PACKER_PLUGIN_PATH", "/tmp/plugins"),
    ("packer-config", "PACKER_CONFIG", "/tmp/packerconfig"),
    ("packer-config-dir", "PACKER_CONFIG_DIR", "/tmp"),
]


@pytest.mark.parametrize(("case", "name", "value"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_packer_variable_in_the_environment_is_refused(
    case: str,
    name: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    before = _snapshot()
    code, output = run_task(["render", "--role", "backend"], capsys)
    assert_one_clear_line(code, output, 2, name)
    assert _snapshot() == before


def test_schema_output_that_is_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_task(["schema", "--output", str(tmp_path)], capsys)
    assert_one_clear_line(code, output, 2, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_schema_output_under_a_file_fails_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, output = run_task(["schema", "--output", str(blocker / "schema.json")], capsys)
    assert_one_clear_line(code, output, 1, str(blocker))
    assert blocker.read_text() == "x"


def test_iam_output_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "iam.json"
    target.write_text("keep")
    code, output = run_task(["iam", "--output", str(target)], capsys)
    assert_one_clear_line(code, output, 2, "--output")
    assert target.read_text() == "keep"


def test_file_where_the_build_folder_goes_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "build"
    blocker.write_text("not a folder")
    code, output = run_render(lambda: render_role(_backend(), PACKER, blocker), capsys)
    assert_one_clear_line(code, output, 1, str(blocker))
    assert blocker.read_text() == "not a folder"


def test_full_disk_during_a_render_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    render_role(_backend(), PACKER, tmp_path)  # the previous render stays as it was
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    write_text = Path.write_text

    def disk_full_at_bake_json(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "bake.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_at_bake_json)
    code, output = run_render(lambda: render_role(_backend(), PACKER, tmp_path), capsys)
    assert_one_clear_line(code, output, 1, "bake.json")
    assert "No space left" in output
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


PACKER = PackerVersion(1, 6, 6)


def _backend() -> BakeryConfig:
    return load_config("backend", "aws")


def run_render(render: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        exits_cleanly(render)()
    except SystemExit as exc:
        captured = capsys.readouterr()
        return (exc.code if isinstance(exc.code, int) else 1), captured.err + captured.out
    return 0, capsys.readouterr().err


def test_the_matrix_holds_at_least_120_cases() -> None:
    total = len(FILE_CASES) + len(SET_CASES) + len(OPTION_CASES) + len(ENV_CASES) + 3
    assert total >= 120
