"""Which monitor to run: the Rust binary shipped in the package, else the Python one.

See docs/monitor.md for the protocol both follow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BINARY = Path(__file__).resolve().parents[1] / "libexec" / "sampan-monitor"


def binary() -> Path | None:
    if os.environ.get("SAMPAN_MONITOR") == "python":
        return None
    return BINARY if os.access(BINARY, os.X_OK) else None


def monitor_argv() -> list[str]:
    """The command before `run …` / `exec …` arguments."""
    b = binary()
    if b is not None:
        return [str(b)]
    return [sys.executable, "-B", "-m", "sampan.monitor"]
