"""Small questions the checks ask the instance, each the command a person would type.

Everything runs on the instance through testinfra's `host`; nothing here contacts
anything but the instance itself (HTTP requests are made *on* it, to 127.0.0.1).
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Host = Any  # testinfra.host.Host
T = TypeVar("T")

# GET a URL on the instance with its own python3 (curl may not be installed), no proxy.
# Prints the status on the first line (0: nothing answered), then the body.
_HTTP_GET = """\
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    response = opener.open(sys.argv[1], timeout=15)
except urllib.error.HTTPError as error:
    response = error
except OSError as error:
    print(0); print(error); sys.exit(0)
print(response.status if hasattr(response, "status") else response.code)
sys.stdout.write(response.read().decode("utf-8", "replace"))
"""


def http_get(host: Host, url: str) -> tuple[int, str]:
    """(status, body) of a GET made on the instance."""
    output = host.check_output("python3 -c %s %s", _HTTP_GET, url)
    status, _, body = output.partition("\n")
    return int(status), body


def sudo_text(host: Host, path: str) -> str:
    """A file's text, read as root."""
    return str(host.check_output("sudo cat %s", path))


def sudo_exists(host: Host, path: str) -> bool:
    return bool(host.run("sudo test -e %s", path).rc == 0)


def sudo_lines(host: Host, command: str) -> list[str]:
    """Non-empty output lines of a shell command run as root."""
    output = host.check_output("sudo sh -c %s", command)
    return [line for line in output.splitlines() if line.strip()]


def boot_time(host: Host) -> int:
    """When this boot began (seconds since the epoch), from /proc/stat btime."""
    for line in host.file("/proc/stat").content_string.splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise AssertionError("/proc/stat has no btime line")


def boot_id(host: Host) -> str:
    return str(host.file("/proc/sys/kernel/random/boot_id").content_string.strip())


def mtime(host: Host, path: str) -> int:
    return int(host.check_output("sudo stat -c %%Y %s", path))


def main_pid(host: Host, unit: str) -> int:
    pid = int(host.check_output("systemctl show -p MainPID --value %s", unit))
    assert pid > 0, f"{unit} has no main process"
    return pid


def process_environment(host: Host, pid: int) -> dict[str, str]:
    """The environment a running process was started with (/proc/PID/environ, as root)."""
    raw = host.check_output("sudo cat /proc/%s/environ | tr '\\0' '\\n'", str(pid))
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def unit_variables(host: Host, unit: str) -> dict[str, str]:
    """The unit's variables (its Environment= settings), as systemd has them."""
    text = host.check_output("systemctl show -p Environment --value %s", unit)
    return dict(item.split("=", 1) for item in shlex.split(text) if "=" in item)


def unit_processes(host: Host, unit: str) -> list[int]:
    """Every process in the unit's cgroup (its main process and any children)."""
    cgroup = host.check_output("systemctl show -p ControlGroup --value %s", unit)
    assert cgroup, f"{unit} has no control group: is it running?"
    procs = host.check_output("cat /sys/fs/cgroup%s/cgroup.procs", cgroup)
    return [int(pid) for pid in procs.split()]


def listens(host: Host, port: int) -> bool:
    """Whether something on the instance accepts TCP connections on 127.0.0.1:port."""
    return any(
        host.socket(f"tcp://{address}:{port}").is_listening
        for address in ("127.0.0.1", "0.0.0.0", "::")
    )


def numeric_version(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of a version: `1.300040.0b650-1` -> (1, 300040, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    assert match, f"{text!r} does not start with a version number"
    return tuple(int(part) for part in match.group(1).split("."))


def version_at_least(found: str, minimum: str) -> bool:
    have, want = numeric_version(found), numeric_version(minimum)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


def poll(probe: Callable[[], T], timeout_s: float, interval_s: float = 3.0) -> T:
    """The first truthy answer of probe within timeout_s, else its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = probe()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(interval_s)


def copy_folder(host: Host, remote: str, local: Path) -> list[Path]:
    """Copy a folder's files off the instance (as root, through tar and base64)."""
    encoded = host.check_output("sudo tar -C %s -cf - . | base64 -w0", remote)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded))) as archive:
        archive.extractall(local, filter="data")
    return sorted(path for path in local.rglob("*") if path.is_file())
