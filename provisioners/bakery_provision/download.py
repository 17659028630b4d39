"""Fetching the agent package, its signature and key: file:// (local bakes) and https://.

Plain urllib with the system's trust store, which holds the bake CA during the bake
when a corporate proxy needs one. Nothing fetched here is trusted until verified.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from bakery_provision.errors import ProvisionError

ALLOWED_SCHEMES = ("file://", "https://")
TIMEOUT_S = 60
ATTEMPTS = 3


def fetch(url: str, destination: Path, attempts: int = ATTEMPTS) -> Path:
    """Download url to destination (replacing it); retry network errors a few times."""
    if not url.startswith(ALLOWED_SCHEMES):
        raise ProvisionError(f"refusing to fetch {url}: only file:// and https:// are allowed")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            with (
                urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
                partial.open("wb") as handle,
            ):
                shutil.copyfileobj(response, handle)
            partial.replace(destination)
            return destination
        except urllib.error.HTTPError as exc:
            # 4xx will not change on a retry: a wrong URL or a missing object.
            if 400 <= exc.code < 500:
                raise ProvisionError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from exc
            last_error = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last_error = str(reason)
            if url.startswith("file://"):
                break
        if attempt < attempts:
            time.sleep(2 * attempt)
    partial.unlink(missing_ok=True)
    hint = ""
    if "CERTIFICATE_VERIFY_FAILED" in last_error:
        hint = " (behind a TLS-intercepting proxy? put its CA in artifacts/ca/bake-ca.pem)"
    raise ProvisionError(f"cannot fetch {url}: {last_error}{hint}")
