"""The terminal side of `run`, `start -a`, `attach` and `exec`: a hijacked connection relayed
to this terminal as docker does it — raw mode when stdin is a terminal and the process has a
tty, the tty's size sent at once and on SIGWINCH, the detach keys (default ctrl-p ctrl-q: the
process keeps running), signals proxied to the container without a tty, docker's multiplexed
frames split to stdout and stderr."""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
from typing import Any, Callable

from sampan import termkeys

PROXIED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM",
                   "SIGCONT", "SIGTSTP")


class Demux:
    """Docker's 8-byte-header frames → stdout/stderr, as they come."""

    def __init__(self, tty: bool, out: Any = None, err: Any = None):
        self.tty = tty
        self.out = out if out is not None else sys.stdout.buffer
        self.err = err if err is not None else sys.stderr.buffer
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        if self.tty:
            self.out.write(chunk)
            self.out.flush()
            return
        self.buf += chunk
        while len(self.buf) >= 8:
            kind, size = struct.unpack(">BxxxL", self.buf[:8])
            if len(self.buf) < 8 + size:
                break
            data, self.buf = self.buf[8:8 + size], self.buf[8 + size:]
            f = self.err if kind == 2 else self.out
            f.write(data)
            f.flush()


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of this terminal, from stdout or stdin."""
    import fcntl
    import termios

    for fd in (1, 0, 2):
        try:
            if os.isatty(fd):
                rows, cols, _x, _y = struct.unpack(
                    "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
                if rows and cols:
                    return rows, cols
        except OSError:
            continue
    return None


class Session:
    """Relay `h` (a client.Hijacked) until the stream ends. `resize(rows, cols)` and
    `kill(signum)` call the daemon."""

    def __init__(self, h: Any, *, tty: bool, stdin: bool, detach_keys: bytes = b"",
                 resize: Callable[[int, int], None] | None = None,
                 kill: Callable[[int], None] | None = None):
        self.h = h
        self.tty = tty
        self.stdin = stdin
        self.detacher = termkeys.Detacher(detach_keys if tty else b"")
        self.resize = resize
        self.kill = kill
        self.demux = Demux(tty)

    def _resize_now(self, *_: Any) -> None:
        size = terminal_size()
        if size and self.resize is not None:
            try:
                self.resize(*size)
            except Exception:  # noqa: BLE001 - a resize that fails is not worth a crash
                pass

    def _proxy(self, signum: int, _frame: Any) -> None:
        if self.kill is not None:
            try:
                self.kill(signum)
            except Exception:  # noqa: BLE001
                pass

    def run(self) -> str:
        """"exited" when the daemon closed the stream, "detached" after the detach keys."""
        saved_tty = None
        handlers: dict[int, Any] = {}
        in_fd = 0 if self.stdin else -1
        try:
            if self.tty and in_fd == 0 and os.isatty(0):
                import termios
                import tty

                saved_tty = termios.tcgetattr(0)
                tty.setraw(0, termios.TCSANOW)  # typeahead is kept, as docker does
            if self.tty and self.resize is not None:
                handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._resize_now)
                self._resize_now()
            if not self.tty and self.kill is not None:
                for name in PROXIED_SIGNALS:
                    sig = getattr(signal, name, None)
                    if sig is not None:
                        handlers[sig] = signal.signal(sig, self._proxy)
            return self._loop(in_fd)
        finally:
            if saved_tty is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.h.close()

    def _loop(self, in_fd: int) -> str:
        sock = self.h.sock
        while True:
            if self.h.leftover:
                self.demux.feed(self.h.recv())
                continue
            fds = [sock] + ([in_fd] if in_fd >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if sock in ready:
                try:
                    data = self.h.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    return "exited"
                self.demux.feed(data)
            if in_fd >= 0 and in_fd in ready:
                try:
                    data = os.read(in_fd, 32768)
                except OSError:
                    data = b""
                if not data:
                    self.h.close_write()  # the daemon closes the process's stdin (docker's rule)
                    in_fd = -1
                    continue
                data, detached = self.detacher.feed(data)
                try:
                    if data:
                        self.h.send(data)
                except OSError:
                    in_fd = -1
                if detached:
                    return "detached"
