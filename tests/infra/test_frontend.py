"""The frontend: nginx serves the page and sends /api/ to the backend named at launch."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Any

from guest import http_get, sudo_lines, sudo_text

ROLES = {"frontend"}

UPSTREAM_FILE = "/etc/nginx/conf.d/bakery-upstream.conf"
ACCESS_LOG = "/var/log/nginx/access.log"
PAGE_SOURCE = Path(__file__).resolve().parents[2] / "app/frontend/index.html"


def upstream_server(backend_url: str) -> str:
    """nginx's `server` for a BACKEND_URL: host:port, port 80 when none is given."""
    parts = urllib.parse.urlsplit(backend_url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{parts.port or 80}"


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def page_title() -> str:
    match = re.search(r"<title>(.*?)</title>", PAGE_SOURCE.read_text(encoding="utf-8"))
    assert match, f"{PAGE_SOURCE} has no <title>"
    return match.group(0)


def test_nginx_config_is_valid(host: Any) -> None:
    result = host.run("sudo nginx -t")
    assert result.rc == 0, result.stderr


def test_nginx_is_enabled_and_running(host: Any) -> None:
    nginx = host.service("nginx")
    assert nginx.is_enabled
    assert nginx.is_running


def test_page_is_served(host: Any) -> None:
    status, body = http_get(host, "http://127.0.0.1/")
    assert status == 200
    assert page_title() in body


def test_upstream_is_the_launch_time_backend(host: Any, expect: dict[str, Any]) -> None:
    upstream = sudo_text(host, UPSTREAM_FILE)
    assert f"server {upstream_server(expect['backend_url'])};" in upstream, upstream


def test_api_is_proxied_to_the_backend(host: Any, expect: dict[str, Any]) -> None:
    status, body = http_get(host, "http://127.0.0.1/api/health")
    # 502/504: nginx tried the backend, which does not answer here; 200: it answered.
    assert status in (200, 502, 504), f"{status}: {body[:200]}"
    [logged] = sudo_lines(host, f"grep -F 'GET /api/health ' {ACCESS_LOG} | tail -n 1")
    # The access log (bakery format) names the address nginx sent the request to: the
    # backend's own for an IP address, whatever a DNS name resolved to otherwise.
    used = re.search(r" upstream=(\S+)", logged)
    assert used and used.group(1) != "-", logged
    hostname = urllib.parse.urlsplit(expect["backend_url"]).hostname or ""
    if is_ip_address(hostname):
        assert used.group(1) == upstream_server(expect["backend_url"]), logged


# GET a URL on the instance with a traceparent header; prints the status (0: no answer).
_GET_TRACED = """\
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(sys.argv[1], headers={"traceparent": sys.argv[2]})
try:
    print(opener.open(request, timeout=15).status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print(0)
"""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def test_access_log_carries_the_trace_header_and_the_backends_span(host: Any) -> None:
    status = int(host.check_output("python3 -c %s %s %s", _GET_TRACED,
                                   "http://127.0.0.1/api/health?traced", TRACEPARENT))  # fmt: skip
    assert status in (200, 502, 504), status
    [logged] = sudo_lines(host, f"grep -F 'GET /api/health?traced ' {ACCESS_LOG} | tail -n 1")
    assert f" traceparent={TRACEPARENT} " in logged, logged
    backend_trace = re.search(r" backend_trace=(\S+)", logged)
    assert backend_trace, logged
    if status == 200:
        # The backend continued the client's trace: its span is in the same trace.
        assert backend_trace.group(1).startswith(f"00-{TRACE_ID}-"), logged
    else:
        assert backend_trace.group(1) == "-", logged


RUM_WRITER = "/usr/local/libexec/bakery/write-rum-snippet"
LAUNCH_ENV = "/etc/bakery/launch.env"


def test_rum_snippet_is_served_and_follows_the_launch_settings(host: Any) -> None:
    status, body = http_get(host, "http://127.0.0.1/rum.js")
    assert status == 200, body
    launch = sudo_text(host, LAUNCH_ENV) if host.run("sudo test -e %s", LAUNCH_ENV).rc == 0 else ""
    monitor = re.search(r"^RUM_APP_MONITOR_ID=['\"]?([0-9a-fA-F-]{36})", launch, re.M)
    if monitor:
        assert f'"{monitor.group(1)}"' in body, body[:300]
    else:
        # Off by default: nothing about RUM is baked into the image.
        assert "CloudWatch RUM is off" in body, body[:300]
    assert "rum.js" in http_get(host, "http://127.0.0.1/")[1]


def test_rum_snippet_writer_turns_rum_on_from_settings(host: Any) -> None:
    # The image's own script, with the image's Python, into a scratch file.
    output = host.check_output("mktemp -u /tmp/rum-XXXXXX.js")
    monitor = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    try:
        host.check_output(
            "env RUM_APP_MONITOR_ID=%s RUM_IDENTITY_POOL_ID=%s RUM_REGION=eu-west-1 %s --output %s",
            monitor, "eu-west-1:12345678-90ab-4cde-8f01-23456789abcd", RUM_WRITER, output,
        )  # fmt: skip
        snippet = host.file(output).content_string
    finally:
        host.run("rm -f %s", output)
    assert f'"{monitor}"' in snippet
    assert '"https://dataplane.rum.eu-west-1.amazonaws.com"' in snippet
