"""Make the backend's flat modules (main, database, models) importable, as on the image.

The image runs `uvicorn main:app` from /opt/app, so the backend is not a package; the
tests put its folder on sys.path the same way.
"""

import sys
from pathlib import Path

BACKEND_DIR = Path(__file__).resolve().parents[3] / "app" / "backend"

if str(BACKEND_DIR) not in sys.path:
    sys.path.insert(0, str(BACKEND_DIR))
