"""The per-container monitor: `python3 -m sampan.monitor CONTAINER_DIR ID RUNTIME_ROOT FD`.

Started by sampand in a new session; it forks once more (so it is nobody's child but init's
and outlives the daemon), then creates and starts the container through the runtime with the
container's stdout/stderr on pipes it holds, reports `{"pid": …}` or `{"error": …}` on FD,
writes every output line to `<id>-json.log` in docker's json-file format, waits, and records
`exit.json` ({"ExitCode", "FinishedAt", "OOMKilled", "Error"}) atomically (temp + fsync +
rename) before it deletes the container from the runtime and exits.

Small on purpose: only os/sys/json and the runtime extension are imported.
"""

import json
import os
import sys
import time

MAX_LINE = 16 * 1024  # docker splits longer lines into partial messages


def now() -> str:
    ns = time.time_ns()
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def atomic_write(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(obj).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
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


class Log:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.partial = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        out = []
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            out.append(buf[: i + 1])
            buf = buf[i + 1:]
        while len(buf) >= MAX_LINE:
            out.append(buf[:MAX_LINE])
            buf = buf[MAX_LINE:]
        self.partial[stream] = buf
        self._emit(stream, out)

    def flush(self, stream: str) -> None:
        if self.partial[stream]:
            self._emit(stream, [self.partial[stream]])
            self.partial[stream] = b""

    def _emit(self, stream: str, lines: list) -> None:
        if not lines:
            return
        t = now()
        text = "".join(
            json.dumps({"log": ln.decode("utf-8", "replace"), "stream": stream, "time": t},
                       separators=(",", ":")) + "\n" for ln in lines)
        data = text.encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]


def main(argv: list) -> int:
    cdir, cid, root, fd = argv[0], argv[1], argv[2], int(argv[3])
    if os.fork():
        os._exit(0)  # the daemon reaps this one; the monitor goes on under init
    os.chdir(cdir)
    mlog = os.open(os.path.join(cdir, "monitor.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    exit_path = os.path.join(cdir, "exit.json")
    try:
        os.unlink(exit_path)
    except FileNotFoundError:
        pass
    log = Log(os.path.join(cdir, f"{cid}-json.log"))
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    from sampan import _runtime

    try:
        c = _runtime.Container.create(cid, cdir, root, None, None, 0)
    except Exception as e:  # noqa: BLE001 - reported to the daemon and recorded
        msg = str(e)
        os.dup2(mlog, 1)
        os.dup2(mlog, 2)
        atomic_write(exit_path, {"ExitCode": exit_code_for(msg), "FinishedAt": now(),
                                 "OOMKilled": False, "Error": msg})
        os.write(fd, json.dumps({"error": msg}).encode())
        os.close(fd)
        return 0
    os.dup2(mlog, 1)
    os.dup2(mlog, 2)
    os.dup2(null, 0)
    try:
        c.start()
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        try:
            c.delete(True)
        except Exception:  # noqa: BLE001
            pass
        atomic_write(exit_path, {"ExitCode": exit_code_for(msg), "FinishedAt": now(),
                                 "OOMKilled": False, "Error": msg})
        os.write(fd, json.dumps({"error": msg}).encode())
        os.close(fd)
        return 0
    started = now()
    os.write(fd, json.dumps({"pid": c.pid, "monitor": os.getpid(),
                             "started": started}).encode())
    os.close(fd)
    streams = {out_r: "stdout", err_r: "stderr"}
    import select

    poller = select.poll()
    for f in streams:
        poller.register(f, select.POLLIN)
    while streams:
        for f, _ev in poller.poll():
            data = os.read(f, 65536)
            if data:
                log.write(streams[f], data)
            else:
                log.flush(streams[f])
                poller.unregister(f)
                os.close(f)
                del streams[f]
    status = c.wait()
    oom = False
    try:
        oom = json.loads(c.stats()).get("oom_kills", 0) > 0
    except Exception:  # noqa: BLE001 - the cgroup may be gone
        pass
    atomic_write(exit_path, {"ExitCode": status, "FinishedAt": now(), "OOMKilled": oom,
                             "Error": ""})
    try:
        c.delete(True)
    except Exception as e:  # noqa: BLE001
        os.write(mlog, f"delete: {e}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
