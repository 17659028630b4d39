"""bakery/aws/pipeline.py: what `build --target aws` and `verify --target aws` call."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.aws.pipeline import build as build_roles
from bakery.errors import BadInput
from bakery.packer import PackerVersion
from bakery.render import RenderedRole

from .conftest import make_config


def test_pipeline_build_needs_a_config_per_rendered_role(tmp_path: Path) -> None:
    rendered = RenderedRole("frontend", "aws", tmp_path, PackerVersion(1, 6, 6))
    with pytest.raises(BadInput, match="no config for rendered role"):
        build_roles([make_config("backend")], [rendered], records_dir=tmp_path)
