"""Helpers for the attach/exec tests: a daemon per monitor kind (Python module or Rust binary),
a hijacked raw connection to the Engine API, and a program run under a real pseudo-terminal
(Python's pty module) that a test types into."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import socket
import struct
import termios
import time
from pathlib import Path

import pytest
from sampan.containers import monitorbin

MONITORS = ["python", "rust"]


def daemon_for(kind: str, root: Path, archive: bytes):
    from daemonlib import start_daemon

    if kind == "rust" and not os.access(monitorbin.BINARY, os.X_OK):
        pytest.skip("the Rust monitor is not built (python/sampan/libexec/sampan-monitor)")
    old = os.environ.get("SAMPAN_MONITOR")
    if kind == "python":
        os.environ["SAMPAN_MONITOR"] = "python"
    else:
        os.environ.pop("SAMPAN_MONITOR", None)
    try:
        d = start_daemon(root, archive)
        d.monitor_kind = kind
        return d
    finally:
        if old is None:
            os.environ.pop("SAMPAN_MONITOR", None)
        else:
            os.environ["SAMPAN_MONITOR"] = old


def stop_daemon(d) -> None:
    for c in d.json("GET", "/containers/json?all=1")[1] or []:
        d.request("DELETE", f"/containers/{c['Id']}?force=1")
    d.stop()


# --------------------------------------------------------------------------- raw hijack


class Raw:
    """A hijacked connection: `status`, `headers`, then bytes both ways."""

    def __init__(self, sock_path: str, method: str, path: str, body: bytes = b"",
                 upgrade: bool = True, timeout: float = 20):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
        if upgrade:
            head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.s.sendall(head.encode() + b"\r\n" + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head_b, _, self.pending = buf.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (ln.partition(":") for ln in lines[1:])}

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def close_write(self) -> None:
        self.s.shutdown(socket.SHUT_WR)

    def read_until_close(self, timeout: float = 20) -> bytes:
        out = self.pending
        self.pending = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return out
            out += chunk
        raise AssertionError(f"the stream did not end; got {out!r}")

    def read_until(self, marker: bytes, timeout: float = 20) -> bytes:
        out = self.pending
        self.pending = b""
        deadline = time.monotonic() + timeout
        while marker not in out:
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} not seen; got {out!r}")
            self.s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.s.recv(65536)
            if not chunk:
                raise AssertionError(f"stream ended before {marker!r}; got {out!r}")
            out += chunk
        return out

    def close(self) -> None:
        self.s.close()


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Docker's multiplexed stream → [(stream, payload)], merged per stream in order."""
    out: list[tuple[int, bytes]] = []
    while data:
        assert len(data) >= 8, data
        kind, size = struct.unpack(">BxxxL", data[:8])
        assert kind in (0, 1, 2), data[:8]
        out.append((kind, data[8:8 + size]))
        data = data[8 + size:]
    return out


def stream_bytes(data: bytes, which: int) -> bytes:
    return b"".join(p for k, p in frames(data) if k == which)


# --------------------------------------------------------------------------- pty


class PtyProc:
    """`argv` run with a pseudo-terminal (rows × cols) as its stdin/stdout/stderr."""

    def __init__(self, argv: list[str], env: dict, rows: int = 24, cols: int = 80):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its terminal gets the size, then the program runs
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.buf = b""
        self.code: int | None = None

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def expect(self, marker: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)) and marker not in self.buf:
                raise AssertionError(f"{marker!r} not seen; output so far {self.buf!r}")
        return self.buf

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._read(0.2):
                break
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._read(0.2)
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
        else:
            self.kill()
            raise AssertionError(f"still running after {timeout}s; output {self.buf!r}")
        _, status = os.waitpid(self.pid, 0)
        self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def close(self) -> None:
        if self.code is None:
            self.kill()
        try:
            os.close(self.fd)
        except OSError:
            pass


def docker_env(d) -> dict:
    e = dict(os.environ)
    e["DOCKER_HOST"] = d.host
    e["DOCKER_CONFIG"] = str(d.root / "docker-config")
    e.pop("DOCKER_TLS_VERIFY", None)
    e["TERM"] = "xterm"
    return e


def sampan_env(d) -> dict:
    from daemonlib import _pythonpath

    e = dict(os.environ)
    e["PYTHONPATH"] = _pythonpath()
    e["SAMPAN_HOST"] = d.host
    e["TERM"] = "xterm"
    return e


def wait_running(d, name: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        st, info = d.json("GET", f"/containers/{name}/json")
        if st == 200 and info["State"]["Running"]:
            return info
        time.sleep(0.05)
    raise AssertionError(f"{name} is not running: {info and info.get('State')}")
