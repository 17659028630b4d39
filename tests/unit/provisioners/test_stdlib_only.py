"""What runs on the image uses the Python standard library only, and parses (and, where a
3.9 interpreter is at hand, imports) on Python 3.9, Amazon Linux 2023's python3."""

from __future__ import annotations

import ast
import glob
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from provisioner_fakes import REPO_ROOT

PROVISIONERS = REPO_ROOT / "provisioners"
# Modules of our own that on-image code may import besides the standard library.
OWN_MODULES = {"bakery_provision", "launch_settings"}


def on_image_python_files() -> list[Path]:
    files = sorted(PROVISIONERS.rglob("*.py"))
    # The programs in onimage/, and anything that would slip into the rootfs/ files.
    scripts = [*(REPO_ROOT / "onimage").rglob("*"), *(REPO_ROOT / "rootfs").rglob("*")]
    for script in sorted(scripts):
        if (
            script.is_file()
            and "__pycache__" not in script.parts
            and (script.suffix == ".py" or script.read_bytes().startswith(b"#!/usr/bin/python3"))
        ):
            files.append(script)
    return files


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_there_is_on_image_code_to_check() -> None:
    names = {path.name for path in on_image_python_files()}
    assert {"provision.py", "seal.py", "translate-agent-config", "launch_settings.py"} <= names


@pytest.mark.parametrize(
    "path", on_image_python_files(), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_imports_only_the_standard_library(path: Path) -> None:
    foreign = imported_top_level_modules(path) - set(sys.stdlib_module_names) - OWN_MODULES
    assert not foreign, f"{path} imports {sorted(foreign)}: the image has no third-party packages"


@pytest.mark.parametrize(
    "path", on_image_python_files(), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_parses_as_python_39_with_postponed_annotations(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    ast.parse(source, filename=str(path), feature_version=(3, 9))
    if "def " in source and path.name != "__init__.py":
        # `X | Y` and builtin generics in annotations only stay unevaluated with this.
        assert "from __future__ import annotations" in source, path


def python39() -> str | None:
    candidates = [
        shutil.which("python3.9"),
        *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")),
    ]
    for candidate in candidates:
        if (
            candidate
            and subprocess.run(
                [candidate, "--version"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return candidate
    return None


def test_everything_imports_on_python_39(tmp_path: Path) -> None:
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 interpreter here")
    libexec = [str(p.parent) for p in on_image_python_files() if p.name == "launch_settings.py"]
    scripts = [p for p in on_image_python_files() if p.suffix != ".py"]
    program = (
        "import sys, importlib.machinery, importlib.util\n"
        f"sys.path[:0] = {[str(PROVISIONERS), *libexec]!r}\n"
        "import bakery_provision.steps, launch_settings\n"
        f"for path in {[str(p) for p in scripts]!r}:\n"
        "    loader = importlib.machinery.SourceFileLoader('script', path)\n"
        "    spec = importlib.util.spec_from_loader('script', loader)\n"
        "    loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [interpreter, "-B", "-c", program],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "ok", result.stderr
