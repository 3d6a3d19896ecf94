"""Drive a container monitor (Rust binary or Python module) through its protocol
(docs/monitor.md) without the daemon: a busybox bundle, monitor.json, the SEQPACKET handshake,
attach clients, exit.json and the json log."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sampan.bundle import make_bundle
from sampan.containers import monitorbin

REPO = Path(__file__).resolve().parents[2]
# Where the sampan these tests import lives (site-packages, or the source tree with its built
# extension): a Python monitor started with PYTHONPATH=PKG_PATH runs the same code.
PKG_PATH = str(Path(monitorbin.__file__).resolve().parents[2])


def monitor_cmd(kind: str) -> list[str]:
    if kind == "rust":
        return [str(monitorbin.BINARY)]
    return [sys.executable, "-B", "-m", "sampan.monitor"]


def rust_available() -> bool:
    return os.access(monitorbin.BINARY, os.X_OK)


class Mon:
    """One container under a monitor, created and (optionally) started."""

    def __init__(self, kind: str, base: Path, args: list[str], *, tty: bool = False,
                 stdin: bool = False, stdin_once: bool = False, log: dict | None = None,
                 **tweaks: Any):
        self.kind = kind
        self.id = "t" + secrets.token_hex(6)
        self.dir = base / self.id
        self.root = base / "runtime"
        self.root.mkdir(exist_ok=True)
        make_bundle(self.dir, args, terminal=tty, **tweaks)
        opts: dict[str, Any] = {"tty": tty, "stdin": stdin, "stdin_once": stdin_once}
        if log is not None:
            opts["log"] = log
        (self.dir / "monitor.json").write_text(json.dumps(opts))
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PATH
        with open(self.dir / "monitor.log", "ab") as err:
            p = subprocess.Popen(
                monitor_cmd(kind) + ["run", str(self.dir), self.id, str(self.root),
                                     str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, env=env)
        theirs.close()
        assert p.wait() == 0  # the first process exits at once; the monitor lives on
        self.ctl.settimeout(30)
        self.created = self.recv()
        self.monitor = self.created.get("monitor")
        self.started: dict | None = None

    def recv(self) -> dict:
        data = self.ctl.recv(65536)
        return json.loads(data) if data else {}

    def attach(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(30)
        s.connect(str(self.dir / "attach.sock"))
        return s

    def start(self) -> dict:
        self.ctl.send(json.dumps({"start": True}).encode())
        self.started = self.recv()
        return self.started

    def wait_exit(self, timeout: float = 30) -> dict:
        p = self.dir / "exit.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.exists() and (not self.monitor or not _alive(self.monitor)):
                return json.loads(p.read_text())
            time.sleep(0.02)
        raise TimeoutError(f"no exit.json in {timeout}s; monitor.log: "
                           f"{(self.dir / 'monitor.log').read_text(errors='replace')}")

    def log_entries(self, name: str | None = None) -> list[dict]:
        path = self.dir / (name or f"{self.id}-json.log")
        return [json.loads(ln) for ln in path.read_text().splitlines()]

    def log_bytes(self) -> bytes:
        return (self.dir / f"{self.id}-json.log").read_bytes()


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return st not in ("Z", "X")


def read_all(s: socket.socket) -> list[tuple[int, bytes]]:
    """Every packet until the monitor closes the client."""
    out = []
    while True:
        pkt = s.recv(65536)
        if not pkt:
            return out
        out.append((pkt[0], pkt[1:]))


def joined(pkts: list[tuple[int, bytes]], stream: int | None = None) -> bytes:
    return b"".join(d for s, d in pkts if stream is None or s == stream)
