"""One word per concept (docs/architecture.md, "Glossary"): a bare `environment` is the
release environment, a key or option of the release tasks only; the Application Signals
attribute is `deployment_environment`, a unit's `Environment=` lines are unit variables;
the host is checked by `host-check`, an instance by `appsignals-doctor`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import yaml
from invoke import Task
from tasks_module import load_tasks

from bakery.config import REPO_ROOT, json_schema

# The tasks that act on a release environment (the tracker's `invoke canary -e ENV`).
# Tasks that act on what a release environment runs: its AMI, its SLOs, its sampling rule.
RELEASE_TASKS = {"release", "launch_template", "canary", "slo", "sampling"}
BARE = "environment"


def tasks() -> dict[str, Task[Any]]:
    return {
        value.body.__name__: value
        for value in vars(load_tasks()).values()
        if isinstance(value, Task)
    }


def schema_keys(schema: dict[str, Any]) -> Iterator[str]:
    """Every key a settings file can hold, as a dotted path (refs to $defs followed)."""
    defs = schema.get("$defs", {})

    def walk(node: Any, path: str, seen: frozenset[str]) -> Iterator[str]:
        if isinstance(node, list):
            for item in node:
                yield from walk(item, path, seen)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/") and ref not in seen:
            yield from walk(defs[ref.removeprefix("#/$defs/")], path, seen | {ref})
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    yield f"{path}.{name}".lstrip(".")
                    yield from walk(sub, f"{path}.{name}", seen)
            elif key not in ("$defs", "$ref"):
                yield from walk(value, path, seen)

    yield from walk(schema, "", frozenset())


def yaml_keys(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}".lstrip(".")
            yield from yaml_keys(value, f"{path}.{key}")


def test_no_config_key_is_a_bare_environment() -> None:
    keys = list(schema_keys(json_schema()))
    assert "service.deployment_environment" in keys  # the walk sees nested keys
    bare = [key for key in keys if key.rsplit(".", 1)[-1] == BARE]
    assert not bare, f"{bare}: say which environment (deployment_environment, ...)"


def test_no_settings_file_has_a_bare_environment_key() -> None:
    files = sorted((REPO_ROOT / "config").rglob("*.yaml"))
    assert files
    for path in files:
        keys = list(yaml_keys(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
        bare = [key for key in keys if key.rsplit(".", 1)[-1] == BARE]
        assert not bare, f"{path.relative_to(REPO_ROOT)}: {bare}"


def test_only_release_tasks_take_an_environment() -> None:
    found = tasks()
    assert set(found) >= RELEASE_TASKS, "a release task was renamed: update RELEASE_TASKS"
    taking = {
        name for name, task in found.items() if BARE in inspect.signature(task.body).parameters
    }
    assert taking == RELEASE_TASKS


def test_the_host_is_checked_by_host_check_and_no_task_is_a_doctor() -> None:
    names = set(tasks())
    assert "host_check" in names
    assert not {name for name in names if "doctor" in name}


def test_the_docs_name_no_invoke_doctor() -> None:
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    for path in docs:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"invoke doctor\b", text), f"{path}: it is `invoke host-check`"


def test_the_image_doctor_is_appsignals_doctor() -> None:
    assert (REPO_ROOT / "onimage" / "appsignals-doctor").is_file()
