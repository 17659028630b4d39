"""One escaping or validating function per sink, each fed that sink's hostile characters
and checked by the sink's own reader where one runs here: Packer reads the HCL back,
systemd-analyze reads the unit, Rich prints the error line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from systemd_units import hermetic_unit_tree, systemd_analyze
from tasks_module import load_tasks

from bakery.cli import exits_cleanly
from bakery.config import load_config
from bakery.errors import BadInput
from bakery.hcl import hcl_literal
from bakery.packer import PackerVersion
from bakery.render import env_file_value, render_role, unit_variable

HCL_HOSTILE = [
    "${var.secret}",
    "%{ if true }x%{ endif }",
    "$${already}",
    'quote " and \\ backslash',
    "line\nbreak\ttab",
    "non-BMP \U0001f600 and \u2028",
    "nul \x00 byte",
]
needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer not installed")


@needs_packer
def test_hcl_strings_read_back_by_packer_exactly(tmp_path: Path) -> None:
    lines = [
        f'variable "v{i}" {{\n  type    = string\n  default = {hcl_literal(value)}\n}}\n'
        for i, value in enumerate(HCL_HOSTILE)
    ]
    (tmp_path / "vars.pkr.hcl").write_text("".join(lines), encoding="utf-8")
    (tmp_path / "build.pkr.hcl").write_text(
        'source "null" "n" {\n  communicator = "none"\n}\n'
        'build {\n  sources = ["source.null.n"]\n}\n'
    )
    names = ", ".join(f"var.v{i}" for i in range(len(HCL_HOSTILE)))
    expressions = f"jsonencode([{names}])\n"
    result = subprocess.run(
        ["packer", "console", "."],
        input=expressions,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1", "HOME": str(tmp_path)},
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout) == HCL_HOSTILE


@pytest.mark.parametrize("value", ["{{ .SourceAMI }}", "a}}b", "{{"])
def test_hcl_refuses_what_packer_would_run_as_a_go_template(value: str) -> None:
    with pytest.raises(ValueError, match="Packer template"):
        hcl_literal(value)


def test_unit_variable_escapes_quotes_backslashes_and_specifiers() -> None:
    assert unit_variable('A=x%i"y\\z$HOME') == '"A=x%%i\\"y\\\\z$HOME"'
    for bad in ("A=a\nb", "A=a\x00b"):
        with pytest.raises(ValueError, match="control character"):
            unit_variable(bad)


def _render_backend(tmp_path: Path, endpoint: str) -> Path:
    cfg = load_config("backend", "aws", overrides=[f"otel.otlp_endpoint={endpoint}"])
    return render_role(cfg, PackerVersion(1, 6, 6), tmp_path / "out").stage


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_percent_in_a_setting_reaches_the_unit_escaped(tmp_path: Path) -> None:
    # %z is no specifier: systemd-analyze verify reports it where it is unescaped.
    stage = _render_backend(tmp_path, "http://127.0.0.1:4316/%z")
    unit = stage / "rootfs/etc/systemd/system/fastapi-otel.service"
    assert '"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4316/%%z/v1/traces"' in (
        unit.read_text()
    )

    out = tmp_path / "escaped"
    out.mkdir()
    tree, _ = hermetic_unit_tree([stage], out)
    assert systemd_analyze(tree, "verify", "--man=no", str(tree / unit.name)) == "exit 0\n"
    raw = tree / unit.name
    raw.write_text(raw.read_text().replace("%%z", "%z"))
    assert "Failed to resolve specifiers" in systemd_analyze(tree, "verify", "--man=no", str(raw))


def test_env_file_values_are_plain_or_single_quoted() -> None:
    assert env_file_value("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert env_file_value(5432) == "5432"
    assert env_file_value("a b$c") == "'a b$c'"
    for bad in ("a\nb", "it's"):
        with pytest.raises(ValueError):
            env_file_value(bad)


def test_agent_json_holds_hostile_text_as_data(tmp_path: Path) -> None:
    # The agent config is written by json.dumps only: a value reads back exactly.
    cfg = load_config("backend", "aws", overrides=["service.log_group=/aws/x#y_z.-"])
    stage = render_role(cfg, PackerVersion(1, 6, 6), tmp_path).stage
    config_path = json.loads((stage / "bake.json").read_text())["agent"]["config_path"]
    agent = json.loads((stage / "rootfs" / config_path.lstrip("/")).read_text())
    groups = [
        entry["log_group_name"]
        for entry in agent["logs"]["logs_collected"]["files"]["collect_list"]
    ]
    assert "/aws/x#y_z.-" in groups


@pytest.mark.parametrize("text", ["[/x]", "[bold red]x[/]", ":x: :thumbs_up:", "[link=x]y"])
def test_error_line_prints_markup_and_emoji_codes_as_text(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @exits_cleanly
    def fails() -> None:
        raise BadInput(f"--set aws.tags.k={text}: refused")

    with pytest.raises(SystemExit) as caught:
        fails()
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == f"bakery: bad input: --set aws.tags.k={text}: refused"


def test_filesystem_fault_is_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @exits_cleanly
    def writes() -> None:
        (tmp_path / "missing" / "x").write_text("x")

    with pytest.raises(SystemExit) as caught:
        writes()
    assert caught.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / "missing" / "x") in line and "No such file" in line


def test_paths_are_printed_as_text_not_markup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from invoke import Config, Context

    module = load_tasks()
    monkeypatch.chdir(tmp_path)
    module.schema(Context(Config(lazy=True)), output="a[/x]b[bold].json")
    module.iam(Context(Config(lazy=True)), output="iam[/x]", role=["backend"])
    err = capsys.readouterr().err
    assert "wrote a[/x]b[bold].json" in err
    assert "wrote iam[/x]/pipeline.json" in err
    assert (tmp_path / "a[" / "x]b[bold].json").is_file()
