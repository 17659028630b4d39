"""Dev aid: boot a local image the way the gate does and keep it up for SSH iteration.

    flock /work/wt/guest-b.lock .venv/bin/python scripts/dev_boot.py build/images/frontend/X.qcow2

Prints the ssh command and stays up until Ctrl-C or SIGTERM; the VM and its work folder
go with it (bakery.local.vm.booted). Not part of any gate.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from bakery.local.vm import booted


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    image = Path(argv[1])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    work = Path("build/dev-boot")
    with booted(image, "dev", {}, work, "tcg", 2, 1024, 600, user="admin") as vm:
        print(
            f"up in {vm.boot_seconds}s: ssh -F {vm.ssh_config} -p {vm.ssh_port} admin@127.0.0.1",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
