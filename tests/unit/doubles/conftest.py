"""Make the repository root importable, so tests can import `tests.doubles.*` as the
`python -m tests.doubles...` entry points do, whichever way pytest is started."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
