"""dockerd's JSON progress messages (the stream of `POST /images/create` and `/push`)."""

from __future__ import annotations

import threading
import time
from typing import Callable

from sampan.errors import SampanError

Progress = Callable[[dict], None]
MIN_INTERVAL = 0.1              # seconds between two progress updates of one layer


def human_size(n: float) -> str:
    """docker's units.HumanSize: decimal units, 4 significant digits ("2.152MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    i = 0
    n = float(n)
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{units[i]}"


def progress_bar(current: int, total: int) -> str:
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = int(current / total * 100) // 2
    pct = min(pct, 50)
    bar = "[" + "=" * pct + ">" + " " * (50 - pct) + "] "
    return f"{bar}{human_size(current):>8}/{human_size(total)}"


def error_message(exc: BaseException) -> dict:
    """The message that ends a stream with an error."""
    msg = exc.message if isinstance(exc, SampanError) else str(exc) or type(exc).__name__
    return {"errorDetail": {"message": msg}, "error": msg}


class Reporter:
    """Thread-safe sender of progress messages, with per-id rate limiting."""

    def __init__(self, sink: Progress | None):
        self.sink = sink
        self._lock = threading.Lock()
        self._last: dict = {}

    def send(self, msg: dict) -> None:
        if self.sink is None:
            return
        with self._lock:
            self.sink(msg)

    def status(self, status: str, id: str | None = None) -> None:
        msg: dict = {"status": status}
        if id is not None:
            msg["progressDetail"] = {}
            msg["id"] = id
        self.send(msg)

    def plain(self, status: str, id: str | None = None) -> None:
        """A status without progressDetail ({"status": …, "id": …})."""
        msg: dict = {"status": status}
        if id is not None:
            msg["id"] = id
        self.send(msg)

    def update(self, status: str, id: str, current: int, total: int, force=False) -> None:
        now = time.monotonic()
        key = (status, id)
        if not force and current < total and now - self._last.get(key, 0.0) < MIN_INTERVAL:
            return
        self._last[key] = now
        self.send({"status": status, "progressDetail": {"current": current, "total": total},
                   "progress": progress_bar(current, total), "id": id})
