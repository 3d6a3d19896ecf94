"""Console sockets: receive a container's pty master over a unix socket (SCM_RIGHTS), as the
OCI runtime's `--console-socket` protocol defines, and proxy it to this terminal."""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import sys
import tempfile
import termios
import threading
import tty
from typing import Optional


def recv_fd(conn: socket.socket) -> int:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_LEN(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            return fds[0]
    raise OSError("console socket: no file descriptor received")


class ConsoleSocket:
    """A listening console socket in a private temp dir; `.master` once the runtime sent it."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sampan-console-")
        self.path = os.path.join(self._dir, "console.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)
        self.master: Optional[int] = None
        self._got = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
            with conn:
                self.master = recv_fd(conn)
        except OSError:
            pass
        finally:
            self._got.set()

    def wait_master(self, timeout: Optional[float] = None) -> Optional[int]:
        self._got.wait(timeout)
        return self.master

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


def proxy(master: int, stop: threading.Event) -> None:
    """Copy stdin → master and master → stdout until the pty closes or `stop` is set."""
    stdin = sys.stdin.fileno() if sys.stdin else -1
    stdout = sys.stdout.fileno()
    old = None
    if stdin >= 0 and os.isatty(stdin):
        old = termios.tcgetattr(stdin)
        tty.setraw(stdin)
        _copy_winsize(stdin, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(stdin, master))
    try:
        fds = [master] + ([stdin] if stdin >= 0 else [])
        while not stop.is_set():
            r, _, _ = select.select(fds, [], [], 0.1)
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                os.write(stdout, data)
            if stdin in r:
                data = os.read(stdin, 65536)
                if not data:
                    fds.remove(stdin)
                    continue
                os.write(master, data)
    finally:
        if old is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, old)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl

    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    except OSError:
        pass
