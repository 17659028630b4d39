"""Stand-ins for what the on-image programs call (the instance metadata service, the
agent's ctl, the aws CLI, the MariaDB client) and how systemd reads what they write."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

ONIMAGE = Path(__file__).resolve().parents[3] / "onimage"

SECRET = "p'a\"ss\\w$rd`x"


def load_program(name: str) -> ModuleType:
    """Import an on-image program (onimage/<name>, no .py suffix) as a module."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(ONIMAGE / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_program(path: Path, body: str) -> Path:
    """A shell script standing in for a program; it may record its arguments and stdin."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def read_systemd_env_line(line: str) -> tuple[str, str]:
    """systemd's EnvironmentFile= reading of one quoted KEY=value line (env-file.c)."""
    key, _, raw = line.rstrip("\n").partition("=")
    quote, body = raw[0], raw[1:-1]
    assert raw[-1] == quote and quote in "'\""
    if quote == "'":
        return key, body
    value, escaped = [], False
    for char in body:
        if escaped:
            value.append(char if char in '"\\`$' else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            value.append(char)
    return key, "".join(value)


class _FakeImds(http.server.BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._reply(b"token-123")
        else:
            self.send_error(400)

    def do_GET(self) -> None:
        if self.path.endswith("/placement/region") and (
            self.headers.get("X-aws-ec2-metadata-token") == "token-123"
        ):
            self._reply(b"eu-central-1")
        else:
            self.send_error(401)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def fake_imds() -> Iterator[str]:
    """IMDSv2 on 127.0.0.1: a token for a PUT, the region for a GET with that token."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeImds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers: IMDS that is not there."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
