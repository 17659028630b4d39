"""The AWS tasks are thin and documented: a one-line docstring, help for every option."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from invoke import Collection, Config, Context
from invoke.tasks import Task
from tasks_module import task_collection

from bakery.aws import tasks

# Every task `invoke --list` shows, the AWS ones and the rest alike.
_root = task_collection()
TASKS = {name: _root[name] for name in _root.task_names}


def test_every_lifecycle_task_is_listed() -> None:
    wanted = {"render", "validate", "fmt", "schema", "clean", "build", "images", "release",
              "prune", "janitor", "iam", "enable-application-signals", "test"}  # fmt: skip
    assert wanted <= set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_is_documented(name: str) -> None:
    task = TASKS[name]
    assert isinstance(task, Task)
    collection = Collection(task)
    assert name in collection.task_names
    doc = inspect.getdoc(task.body) or ""
    assert doc and "\n" not in doc.strip()
    arguments = [p for p in inspect.signature(task.body).parameters if p != "c"]
    assert sorted(task.help) == sorted(arguments), f"{name}: help= must cover every option"


def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        tasks.prune(Context(Config(lazy=True)), keep=0)
    assert caught.value.code == 2
    assert "--keep 0" in capsys.readouterr().err


def test_iam_task_writes_the_documents(tmp_path: Path) -> None:
    tasks.iam(Context(Config(lazy=True)), output=str(tmp_path))
    assert json.loads((tmp_path / "pipeline.json").read_text())["Version"] == "2012-10-17"


def _sids(folder: Path) -> list[str]:
    return [s["Sid"] for s in json.loads((folder / "pipeline.json").read_text())["Statement"]]


def test_iam_task_renders_the_pipeline_policy_for_the_packer_version_asked(
    tmp_path: Path,
) -> None:
    for version, folder in [("1.6.6", "old"), ("1.10.0", "plugin"), ("any", "any")]:
        tasks.iam(Context(Config(lazy=True)), output=str(tmp_path / folder), packer_version=version)
    assert "RemoveUntaggedBuildImages" in _sids(tmp_path / "old")
    assert "RemoveUntaggedBuildImages" in _sids(tmp_path / "any")
    assert "RemoveUntaggedBuildImages" not in _sids(tmp_path / "plugin")


def test_iam_task_refuses_a_packer_version_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        tasks.iam(Context(Config(lazy=True)), output=str(tmp_path), packer_version="latest")
    assert caught.value.code == 2
    assert "--packer-version latest" in capsys.readouterr().err
    assert not (tmp_path / "pipeline.json").exists()
