"""write-nginx-upstream: nginx's upstream for /api/ from the launch setting BACKEND_URL."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from program_fakes import load_program


@pytest.fixture(scope="module")
def upstream() -> ModuleType:
    return load_program("write-nginx-upstream")


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("http://10.0.1.20:8000", "10.0.1.20:8000"),
        ("http://10.0.1.20:8000/", "10.0.1.20:8000"),
        ("http://backend.internal", "backend.internal:80"),
        ("http://[fd00::5]:8000", "[fd00::5]:8000"),
        (" http://127.0.0.1:8000 ", "127.0.0.1:8000"),
    ],
)
def test_backend_url_becomes_an_upstream_server(
    upstream: ModuleType, url: str, server: str
) -> None:
    assert upstream.upstream_server(url) == server


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.1.20:8000",
        "10.0.1.20:8000",
        "http://10.0.1.20:8000/api",
        "http://user:pw@10.0.1.20",
        "http://10.0.1.20:99999",
        "http://bad_host;}:8000",
        "http://",
        "http://10.0.1.20:8000?x=1",
    ],
)
def test_bad_backend_urls_are_refused(upstream: ModuleType, url: str) -> None:
    with pytest.raises(upstream.BadBackendUrl):
        upstream.upstream_server(url)


def test_upstream_file_is_written_once(
    upstream: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "bakery-upstream.conf"
    monkeypatch.setenv("BACKEND_URL", "http://10.0.1.20:8000")
    assert upstream.main(["--output", str(output)]) == 0
    assert "upstream bakery_backend {\n    server 10.0.1.20:8000;\n" in output.read_text()
    assert upstream.main(["--output", str(output)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("(unchanged)")


def test_bad_backend_url_leaves_no_file(
    upstream: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "bakery-upstream.conf"
    monkeypatch.setenv("BACKEND_URL", "https://nope")
    assert upstream.main(["--output", str(output)]) == 1
    assert not output.exists()
