"""bakery/local/mirror.py: the Debian mirror the base image comes from is the host's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.errors import BadInput
from bakery.local.mirror import host_debian_mirror


def test_mirror_comes_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert host_debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"
    assert host_debian_mirror("bookworm-security", tmp_path) == "http://mirror.invalid/security"


def test_mirror_comes_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
    )
    assert host_debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"


def test_no_mirror_is_bad_input_saying_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"sources\.list"):
        host_debian_mirror("bookworm", tmp_path)
