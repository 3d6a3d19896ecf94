"""What happens when a container's process ends: its events (oom, die), then its restart
policy."""

from __future__ import annotations

import logging
from typing import Any

from sampan.daemon.events import emit_container

log = logging.getLogger("sampand")


def on_exit(c: Any, rec: Any) -> None:
    """Called on the event loop by `Containers._exited`, after the exit is recorded."""
    from sampan.containers.store import parse_rfc3339

    st = rec.state
    if st.get("OOMKilled"):
        emit_container(c.eng, rec, "oom")
    started = parse_rfc3339(st.get("StartedAt", ""))
    finished = parse_rfc3339(st.get("FinishedAt", ""))
    duration = int(finished - started) if started and finished >= started else 0
    emit_container(c.eng, rec, "die", exitCode=st.get("ExitCode", 0), execDuration=duration)
