"""Test doubles of Packer, QEMU and mmdebstrap for the fault tests (tests/unit/local/).

Put this folder first on PATH. Each double behaves like the real tool where the fault
tests need it (process tree, exit codes, output files), as `DOUBLE_PACKER_MODE` and
`QEMU_DOUBLE` say; none of them boots anything.
"""

from pathlib import Path

DOUBLES_BIN = Path(__file__).resolve().parent / "bin"
