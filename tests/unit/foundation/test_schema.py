"""`invoke schema` writes a JSON Schema that every config layer the repo ships, and the
documented examples, validate against (checked by jsonschema, not by our own code)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from invoke import Config, Context
from tasks_module import load_tasks

from bakery.config import CONFIG_DIR, REPO_ROOT

# The vulnerability gate's allow-list sits in config/ to be reviewed there, but it is
# not a settings layer (bakery/vuln/allowlist.py checks it).
SHIPPED_LAYERS = sorted(set(CONFIG_DIR.rglob("*.yaml")) - {CONFIG_DIR / "vuln-allowlist.yaml"})


def documented_bakery_config() -> dict[str, object]:
    """The BAKERY_CONFIG example of docs/ci.md (the yaml block after 'For example')."""
    text = (REPO_ROOT / "docs/ci.md").read_text()
    block = re.search(r"For example, `BAKERY_CONFIG`:\n\n *```yaml\n(.*?)```", text, re.S)
    assert block is not None, "docs/ci.md lost its BAKERY_CONFIG example"
    data = yaml.safe_load(textwrap.dedent(block.group(1)))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def written_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    module = load_tasks()
    out = tmp_path_factory.mktemp("schema") / "bakery.schema.json"
    module.schema(Context(Config(lazy=True)), output=str(out))
    schema: dict[str, object] = json.loads(out.read_text())
    return schema


def test_repo_ships_the_layers_the_schema_is_checked_on() -> None:
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in SHIPPED_LAYERS}
    assert {"defaults.yaml", "roles/backend.yaml", "targets/aws.yaml"} <= names


@pytest.mark.parametrize(
    "layer", SHIPPED_LAYERS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix()
)
def test_every_shipped_layer_validates_against_the_schema(
    written_schema: dict[str, object], layer: Path
) -> None:
    jsonschema.validate(yaml.safe_load(layer.read_text()) or {}, written_schema)


def test_documented_bakery_config_validates_against_the_schema(
    written_schema: dict[str, object],
) -> None:
    jsonschema.validate(documented_bakery_config(), written_schema)


@pytest.mark.parametrize(
    "layer",
    [{"service": {"nmae": "x"}}, {"app": {"port": "eighty"}}, {"aws": {"tags": ["a"]}}],
    ids=["unknown-key", "wrong-type", "tags-not-mapping"],
)
def test_schema_still_refuses_unknown_keys_and_wrong_types(
    written_schema: dict[str, object], layer: dict[str, object]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(layer, written_schema)


def test_schema_output_is_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_tasks()
    monkeypatch.chdir(tmp_path)
    module.schema(Context(Config(lazy=True)), output="here.json")
    assert json.loads((tmp_path / "here.json").read_text())["title"]
