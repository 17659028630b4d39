"""Layered config: later layers win, errors name the layer that set the bad key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bakery.config import CONFIG_DIR, json_schema, load_config
from bakery.errors import ConfigError


def test_role_layer_overrides_defaults() -> None:
    assert load_config("backend", "local").service.name == "fastapi-backend"
    assert load_config("database", "aws").instance_type == "t3.medium"
    assert load_config("frontend", "aws").instance_type == "t3.small"


def test_target_layer_picks_the_agent_package() -> None:
    assert load_config("backend", "local").agent.package == "test-double"
    assert load_config("backend", "aws").agent.package == "official"


def test_user_file_then_set_override_win(tmp_path: Path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text("service:\n  deployment_environment: staging\naws:\n  tags:\n    team: web\n")
    config = load_config(
        "backend", "aws", user, ["service.deployment_environment=dev", "aws.tags.cost=42"]
    )
    assert config.service.deployment_environment == "dev"
    assert config.aws.tags == {"project": "bakery", "team": "web", "cost": "42"}


def test_error_names_the_role_file_that_set_the_bad_value(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    (config_dir / "roles" / "backend.yaml").write_text("service:\n  name: 'my service'\n")
    with pytest.raises(ConfigError) as caught:
        load_config("backend", "local", config_dir=config_dir)
    assert caught.value.source.endswith("roles/backend.yaml")
    assert caught.value.key_path == "service.name"


def test_fingerprint_is_normalised() -> None:
    source = load_config("backend", "aws").agent_source
    assert source.gpg_fingerprint == "937616F3450B7D806CBD9725D58167303B789C72"


def test_agent_source_must_be_verifiable() -> None:
    with pytest.raises(ConfigError, match="verifiable"):
        load_config(
            "backend",
            "aws",
            overrides=[
                "agent.sources.debian12.x86_64.signature_url=null",
                "agent.sources.debian12.x86_64.gpg_key_url=null",
                "agent.sources.debian12.x86_64.gpg_fingerprint=null",
            ],
        )


def test_schema_describes_a_layer_without_role_or_target() -> None:
    schema = json_schema()
    assert "role" not in schema["properties"] and "target" not in schema["properties"]
    assert "aws" in schema["properties"] and "required" not in schema
