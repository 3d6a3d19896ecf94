"""Launching monitors and the daemon's side of their start-up handshake (docs/monitor.md): a
SOCK_SEQPACKET socketpair, one JSON object per message.

Run mode: created → (the daemon connects waiting attach clients) → start → started.
Exec mode: ready → (the daemon connects the exec's client) → start → pid."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

from sampan.containers import monitorbin

# Creating a container runs hooks and mounts: generous, but a hung monitor must not hang the
# daemon's start request forever.
HANDSHAKE_TIMEOUT = 120.0


def _tail(p: Path, n: int = 2000) -> str:
    try:
        return p.read_text(errors="replace")[-n:].strip()
    except OSError:
        return "(no monitor log)"


class Monitor:
    """A monitor being started (`args` after the monitor's argv, FD appended);
    `.recv()` the next message, `.send()` one."""

    def __init__(self, args: list[str], cdir: Path):
        self.cdir = cdir
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        try:
            env = {k: v for k, v in os.environ.items()
                   if k in ("PATH", "PYTHONPATH", "LANG", "LC_ALL")}
            fd = theirs.fileno()
            with open(cdir / "monitor.log", "ab") as mlog:
                p = subprocess.Popen(
                    [*monitorbin.monitor_argv(), *args, str(fd)],
                    pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=mlog, start_new_session=True, env=env, close_fds=True)
        finally:
            theirs.close()  # EOF on ours if the monitor dies
        p.wait()  # the first process forks the monitor and exits at once
        self.sock.settimeout(HANDSHAKE_TIMEOUT)

    def recv(self) -> dict[str, Any]:
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            return {"error": f"no answer from the monitor: {e}"}
        if not data:
            return {"error": "the monitor died: " + _tail(self.cdir / "monitor.log")}
        try:
            msg = json.loads(data)
        except ValueError:
            return {"error": f"the monitor answered {data[:200]!r}"}
        return msg if isinstance(msg, dict) else {"error": f"the monitor answered {msg!r}"}

    def send(self, obj: dict[str, Any]) -> bool:
        try:
            self.sock.send(json.dumps(obj).encode())
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def start_run(cdir: Path, cid: str, runtime_root: Path, options: dict[str, Any],
              on_created: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write monitor.json, start the container's monitor and shake hands; the monitor's
    "started" message ({"pid", "monitor", "started"}) or {"error": …}."""
    from sampan.containers.spec import atomic_write

    atomic_write(cdir / "monitor.json", json.dumps(options).encode(), 0o600)
    m = Monitor(["run", str(cdir), cid, str(runtime_root)], cdir)
    try:
        msg = m.recv()
        if "error" in msg:
            return msg
        if on_created is not None:
            try:
                on_created()
            except Exception:  # noqa: BLE001 - attach clients are best effort; start anyway
                pass
        if not m.send({"start": True}):
            return m.recv()
        return m.recv()
    finally:
        m.close()


def start_exec(cdir: Path, cid: str, runtime_root: Path, eid: str, config: dict[str, Any]
               ) -> Monitor | dict[str, Any]:
    """Write exec-EID.json and start an exec monitor up to its "ready"; the Monitor (send
    start, then recv the pid) or {"error": …}."""
    from sampan.containers.spec import atomic_write

    atomic_write(cdir / f"exec-{eid}.json", json.dumps(config).encode(), 0o600)
    m = Monitor(["exec", str(cdir), cid, str(runtime_root), eid], cdir)
    msg = m.recv()
    if "error" in msg:
        m.close()
        return msg
    m.ready = msg  # type: ignore[attr-defined]
    return m


def connect(cdir: Path, name: str) -> socket.socket:
    """Connect to a monitor's socket in `cdir` (through /proc/self/fd: the path can be longer
    than sun_path). Non-blocking once connected."""
    dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(f"/proc/self/fd/{dfd}/{name}")
    except OSError:
        s.close()
        raise
    finally:
        os.close(dfd)
    s.setblocking(False)
    return s
