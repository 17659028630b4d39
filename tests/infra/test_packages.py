"""The tools a user of the original guide types on an instance are there on every role,
as on Debian's own EC2 image (the local base image follows its package list)."""

from __future__ import annotations

from typing import Any

from roles import ALL

ROLES = ALL


def test_curl_is_installed(host: Any) -> None:
    assert host.exists("curl"), "curl is missing: the guide's `curl localhost:8000/` fails"
    assert host.run("curl --version").rc == 0
