"""Test configuration shared by every test module."""

from __future__ import annotations

import sys
from pathlib import Path

# Helper modules beside the tests (webhook_fixtures, webhook_kits, live_server) import by name.
sys.path.insert(0, str(Path(__file__).parent))
# ... and what the tracker suites share (tracking_support), for the web suites too.
sys.path.insert(0, str(Path(__file__).parent / "tracking"))
