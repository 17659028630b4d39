"""write-rum-snippet, run at boot on the frontend: the page's CloudWatch RUM snippet from
the launch settings. The snippet it writes is run in Node with a stand-in page, the way a
browser runs it, to see what it hands the RUM web client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from program_fakes import ONIMAGE

SCRIPT = ONIMAGE / "write-rum-snippet"
MONITOR = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
POOL = "eu-west-1:12345678-90ab-4cde-8f01-23456789abcd"
ON = {"RUM_APP_MONITOR_ID": MONITOR, "RUM_IDENTITY_POOL_ID": POOL, "RUM_REGION": "eu-west-1"}
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# A page as far as the loader touches it; prints what the web client would find.
PAGE = """
const inserted = [];
const head = {
  getElementsByTagName: () => [{ src: "rum.js" }],
  insertBefore: (element, before) => inserted.push({ element, before }),
};
globalThis.window = globalThis;
globalThis.document = { head, createElement: (tag) => ({ tag }) };
require(process.argv[2]);
window.cwr("recordPageView", "/");
const scripts = inserted.map((i) => i.element);
console.log(JSON.stringify({ client: window.AwsRumClient, inserted: scripts }));
"""


def run_script(output: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **settings}
    return subprocess.run(
        [str(SCRIPT), "--output", str(output)], env=env, capture_output=True, text=True, check=False
    )


def run_in_page(snippet: Path, tmp_path: Path) -> dict[str, Any]:
    page = tmp_path / "page.js"
    page.write_text(PAGE)
    module = tmp_path / "snippet.js"
    module.write_text(snippet.read_text())
    result = subprocess.run(
        ["node", str(page), str(module)], capture_output=True, text=True, check=True
    )
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_without_an_app_monitor_rum_is_off(tmp_path: Path) -> None:
    output = tmp_path / "rum.js"
    result = run_script(output)
    assert result.returncode == 0, result.stderr
    assert "CloudWatch RUM is off" in result.stdout
    text = output.read_text()
    assert all(line.startswith("//") for line in text.splitlines()), text


@needs_node
def test_the_snippet_hands_the_web_client_the_launch_settings(tmp_path: Path) -> None:
    output = tmp_path / "run" / "rum.js"  # the folder is made as needed
    result = run_script(
        output, **ON, RUM_GUEST_ROLE_ARN="arn:aws:iam::123456789012:role/RUM-guest",
        RUM_SESSION_SAMPLE_RATE="0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"app monitor {MONITOR} in eu-west-1" in result.stdout
    page = run_in_page(output, tmp_path)
    client = page["client"]
    assert (client["n"], client["i"], client["r"]) == ("cwr", MONITOR, "eu-west-1")
    assert client["c"] == {
        "sessionSampleRate": 0.5,
        "identityPoolId": POOL,
        "endpoint": "https://dataplane.rum.eu-west-1.amazonaws.com",
        "telemetries": ["performance", "errors", ["http", {"addXRayTraceIdHeader": True}]],
        "allowCookies": True,
        "enableXRay": True,
        "guestRoleArn": "arn:aws:iam::123456789012:role/RUM-guest",
    }
    # Calls made before the client script loads wait in its queue.
    assert client["q"] == [{"c": "recordPageView", "p": "/"}]
    [script] = page["inserted"]
    assert script == {
        "tag": "script",
        "async": True,
        "src": "https://client.rum.us-east-1.amazonaws.com/1.x/cwr.js",
    }


@pytest.mark.parametrize("missing", ["RUM_IDENTITY_POOL_ID", "RUM_REGION"])
def test_an_app_monitor_without_its_pool_or_region_is_refused(tmp_path: Path, missing: str) -> None:
    output = tmp_path / "rum.js"
    output.write_text("// from an earlier boot\n")
    settings = {key: value for key, value in ON.items() if key != missing}
    result = run_script(output, **settings)
    assert result.returncode == 2
    assert f"{missing} is not set, but RUM_APP_MONITOR_ID is" in result.stderr
    # Nothing left behind, not even the earlier boot's snippet.
    assert not output.exists()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RUM_APP_MONITOR_ID", "my-monitor"),
        ("RUM_IDENTITY_POOL_ID", "12345678-90ab-4cde-8f01-23456789abcd"),
        ("RUM_REGION", "Europe"),
        ("RUM_GUEST_ROLE_ARN", "RUM-guest"),
        ("RUM_SESSION_SAMPLE_RATE", "50%"),
        ("RUM_REGION", 'eu-west-1"});alert(1);//'),
    ],
)
def test_malformed_settings_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    output = tmp_path / "rum.js"
    result = run_script(output, **{**ON, key: value})
    assert result.returncode == 2
    assert f"{key}={value!r} in /etc/bakery/launch.env must be" in result.stderr
    assert not output.exists()
