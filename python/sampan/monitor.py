"""The per-container monitor, Python implementation of docs/monitor.md:

    python3 -m sampan.monitor run CDIR ID RUNTIME_ROOT FD
    python3 -m sampan.monitor exec CDIR ID RUNTIME_ROOT EXEC_ID FD

Started by sampand in a new session; it forks once more (so it is nobody's child but init's
and outlives the daemon). Run mode creates the container through the runtime with its stdio on
pipes (or a pty received over a console socket), shakes hands with the daemon on FD (created →
start → started), serves `attach.sock` (output packets to any number of clients, stdin /
close-stdin / resize from them), writes every output line to `<id>-json.log` (or the path
monitor.json names) in docker's json-file format (with optional rotation), and records
`exit.json` atomically before it deletes the container from the runtime and exits. Exec mode
does the same for one process run inside a running container, without a log.

The Rust binary `sampan-monitor` follows the same protocol; this one is the fallback for a
source tree and a second implementation for the protocol tests. Import-light on purpose: only
os/sys/json/socket/select/struct/fcntl/termios/_thread and the runtime extension.
"""

import json
import os
import select
import socket
import struct
import sys
import time

from sampan.units import now_rfc3339

MAX_LINE = 16 * 1024  # docker splits longer lines into partial messages
PACKET = 32 * 1024  # output bytes per attach packet
CLIENT_BUFFER = 1024 * 1024  # a client that falls this far behind is dropped
STDIN_BUFFER = 1024 * 1024  # stop reading clients while the container does not read stdin
EXIT_GRACE = 2.0  # after an exec's process exited, how long its leftover children may hold
# the output open




def atomic_write(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(obj).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def exit_code_for(msg: str) -> int:
    """docker's codes for a process that could not be started."""
    low = msg.lower()
    if "not found" in low or "no such file" in low:
        return 127
    if "permission denied" in low or "is a directory" in low:
        return 126
    return 128


def read_options(path: str) -> dict:
    try:
        with open(path) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        opts = {}
    return opts if isinstance(opts, dict) else {}


class Log:
    """docker's json-file: one JSON object per line, lines over 16 KiB split, rotated at
    `max_size` keeping `max_file` files in all."""

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1):
        self.path = path
        self.max_size = max(0, int(max_size or 0))
        self.max_file = max(1, int(max_file or 1))
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        out = []
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line = buf[: i + 1]
            buf = buf[i + 1:]
            while len(line) > MAX_LINE:  # docker's partial messages, newline or not
                out.append(line[:MAX_LINE])
                line = line[MAX_LINE:]
            out.append(line)
        while len(buf) >= MAX_LINE:
            out.append(buf[:MAX_LINE])
            buf = buf[MAX_LINE:]
        self.partial[stream] = buf
        self._emit(stream, out)

    def flush(self, stream: str) -> None:
        if self.partial[stream]:
            self._emit(stream, [self.partial[stream]])
            self.partial[stream] = b""

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_file > 1:
            for n in range(self.max_file - 1, 0, -1):
                src = self.path + (f".{n - 1}" if n > 1 else "")
                try:
                    os.replace(src, f"{self.path}.{n}")
                except FileNotFoundError:
                    pass
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o640)
        self.size = 0

    def _emit(self, stream: str, lines: list) -> None:
        if not lines:
            return
        t = now_rfc3339()
        for ln in lines:
            data = (json.dumps({"log": ln.decode("utf-8", "replace"), "stream": stream,
                                "time": t}, separators=(",", ":")) + "\n").encode()
            if self.max_size and self.size and self.size + len(data) > self.max_size:
                self._rotate()
            self.size += len(data)
            while data:
                n = os.write(self.fd, data)
                data = data[n:]


class NoLog:
    def write(self, stream: str, data: bytes) -> None:
        pass

    def flush(self, stream: str) -> None:
        pass


def make_log(cdir: str, cid: str, opts: dict):
    conf = opts.get("log") or {}
    if conf.get("driver") == "none":
        return NoLog()
    # "path": where the daemon wants it (its --log-root, e.g. on tmpfs); relative to CDIR
    path = conf.get("path") or f"{cid}-json.log"
    return Log(os.path.join(cdir, path), conf.get("max_size") or 0,
               conf.get("max_file") or 1)


def recv_fd(conn: socket.socket) -> int:
    """The pty master the runtime sends over the console socket (SCM_RIGHTS)."""
    _msg, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4:
            return struct.unpack("i", data[:4])[0]
    raise OSError("console socket: no file descriptor received")


def _listen_unix(name: str, kind: int, backlog: int) -> socket.socket:
    """A fresh socket at `name` (a leftover of a previous run is replaced), owner-only."""
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    s.bind(name)
    os.chmod(name, 0o600)
    s.listen(backlog)
    return s


def listen_seqpacket(name: str) -> socket.socket:
    """`name` relative to the current directory (CDIR can be longer than sun_path)."""
    s = _listen_unix(name, socket.SOCK_SEQPACKET, 64)
    s.setblocking(False)
    return s


def listen_console(name: str) -> socket.socket:
    return _listen_unix(name, socket.SOCK_STREAM, 1)


def take_master(lsock: socket.socket, name: str, timeout: float = 10.0) -> int:
    lsock.settimeout(timeout)
    try:
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(timeout)
            return recv_fd(conn)
    finally:
        lsock.close()
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


class Client:
    __slots__ = ("sock", "fd", "queue", "queued", "wrote")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.queue: list = []
        self.queued = 0
        self.wrote = False  # sent stdin data (for stdin_once)


class Relay:
    """The attach socket and the container's stdio: output to the log and every client,
    stdin/close/resize from the clients."""

    def __init__(self, listener: socket.socket, log, tty: bool, stdin_once: bool,
                 stdin: bool = False):
        self.listener = listener
        self.wants_stdin = stdin  # buffer input even before the process's stdin exists
        self.log = log
        self.tty = tty
        self.stdin_once = stdin_once
        self.clients: dict = {}
        self.outputs: dict = {}  # fd → stream number (1 stdout, 2 stderr)
        self.master = -1
        self.stdin = -1  # where the container's stdin is written (pipe or pty master)
        self.stdin_buf = bytearray()
        self.stdin_close = False  # close once stdin_buf is written

    # ------------------------------------------------------------ clients

    def accept(self) -> None:
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            s.setblocking(False)
            c = Client(s)
            self.clients[c.fd] = c
            # what it sent before it was accepted comes before what other clients send next:
            # a resize on its own connection must take effect before the stdin that follows
            while c.fd in self.clients:
                try:
                    pkt = s.recv(65536, socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if not pkt:
                    break  # its end is handled by the poll loop
                self.client_input(c)

    def drop(self, c: Client) -> None:
        self.clients.pop(c.fd, None)
        try:
            c.sock.close()
        except OSError:
            pass
        if self.stdin_once and c.wrote:
            self.close_stdin()

    def broadcast(self, stream: int, data: bytes) -> None:
        head = bytes((stream,))
        packets = [head + data[i:i + PACKET] for i in range(0, len(data), PACKET)]
        for c in list(self.clients.values()):
            for p in packets:
                c.queue.append(p)
                c.queued += len(p)
            self.flush_client(c)

    def flush_client(self, c: Client) -> None:
        while c.queue:
            p = c.queue[0]
            try:
                c.sock.send(p)
            except (BlockingIOError, InterruptedError):
                if c.queued > CLIENT_BUFFER:
                    self.drop(c)  # the container never waits for a client
                return
            except OSError:
                self.drop(c)
                return
            c.queue.pop(0)
            c.queued -= len(p)

    def client_input(self, c: Client) -> None:
        try:
            pkt = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pkt = b""
        if not pkt:
            self.drop(c)
            return
        kind, body = pkt[0], pkt[1:]
        if kind == 0:
            if (self.stdin >= 0 or self.wants_stdin) and not self.stdin_close and body:
                c.wrote = True
                self.stdin_buf += body
                self.write_stdin()
        elif kind == 1:
            self.close_stdin()
        elif kind == 2:
            self.resize(body)

    # ------------------------------------------------------------ container side

    def resize(self, body: bytes) -> None:
        if self.master < 0:
            return
        try:
            rows, cols = (int(x) for x in body.decode().split())
        except ValueError:
            return
        if not (0 <= rows < 65536 and 0 <= cols < 65536):
            return
        import fcntl
        import termios

        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except OSError:
            pass

    def close_stdin(self) -> None:
        if self.tty or self.master >= 0 or (self.stdin < 0 and not self.wants_stdin):
            return  # a pty cannot be half-closed
        self.stdin_close = True  # applied once what is buffered is written
        self.write_stdin()

    def write_stdin(self) -> None:
        while self.stdin_buf and self.stdin >= 0:
            try:
                n = os.write(self.stdin, self.stdin_buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the container closed its stdin: what it did not read is lost
                self.stdin_buf.clear()
                self.stdin_close = True
                if self.master < 0:
                    os.close(self.stdin)
                    self.stdin = -1
                return
            del self.stdin_buf[:n]
        if self.stdin_close and self.stdin >= 0 and self.master < 0:
            os.close(self.stdin)
            self.stdin = -1

    def output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the pty's last slave closed
            data = b""
        stream = self.outputs[fd]
        name = "stderr" if stream == 2 else "stdout"
        if data:
            self.log.write(name, data)
            self.broadcast(stream, data)
            return
        self.log.flush(name)
        del self.outputs[fd]
        if fd == self.master:
            return  # closed at the end: resize/stdin may still target it meanwhile
        os.close(fd)

    # ------------------------------------------------------------ the loop

    def poll_once(self, extra: dict, timeout: float | None) -> list:
        """One poll over the relay's fds and `extra` (fd → events); the events of `extra`
        fds that fired."""
        p = select.poll()
        p.register(self.listener.fileno(), select.POLLIN)
        for fd in self.outputs:
            p.register(fd, select.POLLIN)
        want_in = len(self.stdin_buf) < STDIN_BUFFER
        for c in self.clients.values():
            ev = (select.POLLIN if want_in else 0) | (select.POLLOUT if c.queue else 0)
            p.register(c.fd, ev or select.POLLHUP)
        if self.stdin_buf and self.stdin >= 0 and self.stdin not in self.outputs:
            p.register(self.stdin, select.POLLOUT)
        for fd, ev in extra.items():
            p.register(fd, ev)
        try:
            ready = p.poll(None if timeout is None else int(timeout * 1000))
        except InterruptedError:
            return []
        fired = []
        for fd, ev in ready:
            if fd in extra:
                fired.append((fd, ev))
            elif fd == self.listener.fileno():
                self.accept()
            elif fd in self.outputs:
                self.output(fd)
                if fd == self.stdin and self.stdin_buf and ev & select.POLLOUT:
                    self.write_stdin()
            elif fd in self.clients:
                c = self.clients[fd]
                if ev & select.POLLOUT:
                    self.flush_client(c)
                if fd in self.clients and ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self.client_input(c)
            elif fd == self.stdin:
                self.write_stdin()
        if self.stdin_buf and self.master >= 0:
            self.write_stdin()
        return fired

    def finish(self) -> None:
        """After the last output: deliver what is queued (briefly), then close every client
        and the listener."""
        deadline = time.monotonic() + 2.0
        for c in list(self.clients.values()):
            try:
                c.sock.setblocking(True)
                c.sock.settimeout(max(0.05, deadline - time.monotonic()))
                for p in c.queue:
                    c.sock.send(p)
            except OSError:
                pass
            try:
                c.sock.close()
            except OSError:
                pass
        self.clients.clear()
        self.listener.close()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.stdin >= 0:
            try:
                os.close(self.stdin)
            except OSError:
                pass
            self.stdin = -1


def send(fd: int, obj: dict) -> None:
    try:
        os.write(fd, json.dumps(obj).encode())
    except OSError:
        pass  # the daemon is gone; the monitor carries on


def setup_stdio(relay: Relay, opts: dict, console: str) -> tuple:
    """Point fds 0/1/2 at what the container must inherit; returns (listening console socket
    or None, fds to close in the monitor once the process exists)."""
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    theirs = []
    if opts.get("tty"):
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        return listen_console(console), theirs
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    if opts.get("stdin"):
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        os.dup2(in_r, 0)
        os.close(in_r)
        os.set_blocking(in_w, False)
        relay.stdin = in_w
    else:
        os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for f in (out_w, err_w, null):
        os.close(f)
    relay.outputs[out_r] = 1
    relay.outputs[err_r] = 2
    return None, theirs


def own_stdio(mlog: int) -> None:
    """The container has its copies: the monitor's 0/1/2 go back to its own log, so that the
    pipes' ends are the container's only."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(mlog, 1)
    os.dup2(mlog, 2)


def adopt_master(relay: Relay, master: int) -> None:
    os.set_blocking(master, False)
    relay.master = master
    relay.stdin = master
    relay.outputs[master] = 1


def wait_start(relay: Relay, fd: int) -> bool:
    """Serve attach clients until the daemon says start (True) or goes away (False)."""
    while True:
        fired = relay.poll_once({fd: select.POLLIN}, None)
        for _f, _ev in fired:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                return False
            try:
                if json.loads(data).get("start"):
                    relay.accept()  # clients that connected just before the start see it all
                    return True
            except ValueError:
                return False


def fail(fd: int, exit_path: str, msg: str, exec_mode: bool = False) -> int:
    if exec_mode:
        doc = {"ExitCode": exit_code_for(msg), "Error": msg}
    else:
        doc = {"ExitCode": exit_code_for(msg), "FinishedAt": now_rfc3339(), "OOMKilled": False,
               "Error": msg}
    atomic_write(exit_path, doc)
    send(fd, {"error": msg})
    os.close(fd)
    return 0


def open_monitor_log(cdir: str) -> int:
    return os.open(os.path.join(cdir, "monitor.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def run(argv: list) -> int:
    cdir, cid, root, fd = argv[0], argv[1], argv[2], int(argv[3])
    if os.fork():
        os._exit(0)  # the daemon reaps this one; the monitor goes on under init
    os.chdir(cdir)
    mlog = open_monitor_log(cdir)
    exit_path = os.path.join(cdir, "exit.json")
    try:
        os.unlink(exit_path)
    except FileNotFoundError:
        pass
    opts = read_options(os.path.join(cdir, "monitor.json"))
    try:
        log = make_log(cdir, cid, opts)
    except OSError as e:  # as the Rust monitor: reported, recorded, no container made
        return fail(fd, exit_path, f"open log: {e.strerror} (os error {e.errno})")
    tty = bool(opts.get("tty"))
    relay = Relay(listen_seqpacket("attach.sock"), log, tty, bool(opts.get("stdin_once")),
                  bool(opts.get("stdin")))
    console, _ = setup_stdio(relay, opts, "console.sock")
    from sampan import _runtime

    try:
        c = _runtime.Container.create(cid, cdir, root, "console.sock" if tty else None,
                                      None, 0)
    except Exception as e:  # noqa: BLE001 - reported to the daemon and recorded
        own_stdio(mlog)
        return fail(fd, exit_path, str(e))
    own_stdio(mlog)
    if console is not None:
        try:
            adopt_master(relay, take_master(console, "console.sock"))
        except OSError as e:
            try:
                c.delete(True)
            except Exception:  # noqa: BLE001
                pass
            return fail(fd, exit_path, f"receiving the pty master: {e}")
    send(fd, {"created": True, "pid": c.pid, "monitor": os.getpid()})
    if not wait_start(relay, fd):
        try:
            c.delete(True)
        except Exception:  # noqa: BLE001
            pass
        relay.finish()
        return fail(fd, exit_path, "the daemon went away before the start")
    try:
        c.start()
    except Exception as e:  # noqa: BLE001
        try:
            c.delete(True)
        except Exception:  # noqa: BLE001
            pass
        relay.finish()
        return fail(fd, exit_path, str(e))
    send(fd, {"pid": c.pid, "monitor": os.getpid(), "started": now_rfc3339()})
    os.close(fd)
    try:
        pidfd = os.pidfd_open(c.pid)
    except OSError:
        pidfd = -1
    exited = pidfd < 0
    deadline = None
    while relay.outputs or not exited:
        timeout = None
        if exited:
            if deadline is None:
                # Without a pid namespace of its own, what the init left behind can hold the
                # output open forever: it goes, as runc does at delete.
                try:
                    c.kill(9, True)
                except Exception:  # noqa: BLE001 - nothing left to kill
                    pass
                deadline = time.monotonic() + EXIT_GRACE
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
        extra = {pidfd: select.POLLIN} if not exited else {}
        if relay.poll_once(extra, timeout):
            exited = True
    for f, stream in list(relay.outputs.items()):
        relay.log.flush("stderr" if stream == 2 else "stdout")
        if f != relay.master:
            os.close(f)
    relay.outputs.clear()
    status = c.wait()
    if pidfd >= 0:
        os.close(pidfd)
    oom = False
    try:
        oom = c.oom_kills() > 0
    except Exception:  # noqa: BLE001 - the cgroup may be gone
        pass
    atomic_write(exit_path, {"ExitCode": status, "FinishedAt": now_rfc3339(), "OOMKilled": oom,
                             "Error": ""})
    relay.finish()
    try:
        c.delete(True)
    except Exception as e:  # noqa: BLE001
        os.write(mlog, f"delete: {e}\n".encode())
    return 0


def exec_(argv: list) -> int:
    cdir, cid, root, eid, fd = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    if os.fork():
        os._exit(0)
    os.chdir(cdir)
    mlog = open_monitor_log(cdir)
    base = f"exec-{eid}"
    exit_path = os.path.join(cdir, base + ".exit.json")
    pid_path = os.path.join(cdir, base + ".pid")
    for p in (exit_path, pid_path):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    opts = read_options(os.path.join(cdir, base + ".json"))
    process = opts.get("process") or {}
    tty = bool(opts.get("tty"))
    process["terminal"] = tty
    relay = Relay(listen_seqpacket(base + ".sock"), NoLog(), tty, True, bool(opts.get("stdin")))
    send(fd, {"ready": True, "monitor": os.getpid()})
    if not wait_start(relay, fd):
        relay.finish()
        return fail(fd, exit_path, "the daemon went away before the start", True)
    console_name = base + ".console"
    console, _ = setup_stdio(relay, opts, console_name)
    import _thread

    from sampan import _runtime

    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    result: dict = {}

    def go() -> None:
        try:
            c = _runtime.Container.load(cid, root)
            _pid, status = c.exec(json.dumps(process), console_name if tty else None, False,
                                  pid_path, 0)
            result["status"] = status
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            result["error"] = str(e)
        os.write(done_w, b"x")

    _thread.start_new_thread(go, ())
    # the pid file appears once the process runs (it was cloned with our 0/1/2)
    pid = 0
    while not pid:
        over = "error" in result or "status" in result  # read the file once more after
        try:
            with open(pid_path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            if over:
                break
            time.sleep(0.005)
    own_stdio(mlog)
    relay.write_stdin()  # input (or its end) that came before the process existed
    if console is not None:
        if "error" not in result:  # even if the process is gone, its output waits in the pty
            try:
                adopt_master(relay, take_master(console, console_name))
            except OSError as e:
                os.write(mlog, f"exec {eid}: pty: {e}\n".encode())
        else:
            console.close()
    if "error" in result:
        relay.outputs.clear()
        relay.finish()
        return fail(fd, exit_path, result["error"], True)
    send(fd, {"pid": pid})
    os.close(fd)
    exited_at = None
    while relay.outputs or exited_at is None:
        timeout = None
        if exited_at is not None:
            timeout = exited_at + EXIT_GRACE - time.monotonic()
            if timeout <= 0:
                break
        extra = {done_r: select.POLLIN} if exited_at is None else {}
        if relay.poll_once(extra, timeout):
            exited_at = time.monotonic()
    for f in list(relay.outputs):
        relay.log.flush("stdout")
        if f != relay.master:
            os.close(f)
    relay.outputs.clear()
    while "status" not in result and "error" not in result:
        os.read(done_r, 1)
    if "error" in result:
        doc = {"ExitCode": exit_code_for(result["error"]), "Error": result["error"]}
    else:
        doc = {"ExitCode": result["status"], "Error": ""}
    atomic_write(exit_path, doc)
    relay.finish()
    try:
        os.unlink(pid_path)
    except FileNotFoundError:
        pass
    return 0


def main(argv: list) -> int:
    if argv and argv[0] == "run":
        return run(argv[1:])
    if argv and argv[0] == "exec":
        return exec_(argv[1:])
    print("usage: sampan.monitor run CDIR ID ROOT FD | exec CDIR ID ROOT EXEC_ID FD",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
