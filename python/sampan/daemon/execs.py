"""Exec instances: `POST /containers/{id}/exec`, `POST /exec/{id}/start` (hijacked, or
detached), `POST /exec/{id}/resize`, `GET /exec/{id}/json`.

Each started exec runs under its own monitor in exec mode (docs/monitor.md), with the
container's process as the template: its env (plus the exec's Env and TERM with a tty), its
user unless User is given (resolved in the container's /etc/passwd), its capabilities (all of
them with Privileged), its seccomp profile (the runtime applies the container's). Records live
in the daemon's memory, as in dockerd: a daemon restart forgets them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sampan.daemon.attach import (
    _event,
    end_stream,
    frame,
    parse_detach_keys,
    relay,
    send_resize,
)
from sampan.daemon.engine import blocking
from sampan.daemon.server import Hijack, HijackedStream, HTTPError, empty, json_response

log = logging.getLogger("sampand")

MAX_FINISHED = 500  # finished records kept for inspect (docker keeps them until the container
# goes); the oldest are forgotten first


class Exec:
    def __init__(self, eid: str, rec: Any, runtime_root: Path, body: dict[str, Any],
                 eng: Any = None):
        self.id = eid
        self.rec = rec
        self.eng = eng
        self.runtime_root = runtime_root
        self.cmd: list[str] = list(body["Cmd"])
        self.env: list[str] = list(body.get("Env") or [])
        self.user: str = body.get("User") or ""
        self.workdir: str = body.get("WorkingDir") or ""
        self.tty = bool(body.get("Tty"))
        self.stdin = bool(body.get("AttachStdin"))
        self.stdout = bool(body.get("AttachStdout"))
        self.stderr = bool(body.get("AttachStderr"))
        self.privileged = bool(body.get("Privileged"))
        self.detach_keys_spec = body.get("DetachKeys") or ""
        self.console_size = body.get("ConsoleSize")
        self.started = False
        self.running = False
        self.exit_code: int | None = None
        self.pid = 0
        self.monitor = 0
        self.done = asyncio.Event()
        self.finished_at = 0.0
        self._pidfd = -1

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.cmd[0],
                              "arguments": self.cmd[1:], "privileged": self.privileged,
                              "user": self.user},
            "OpenStdin": self.stdin, "OpenStderr": self.stderr, "OpenStdout": self.stdout,
            "CanRemove": False, "ContainerID": self.rec.id,
            "DetachKeys": self.detach_keys_spec, "Pid": self.pid,
        }

    # ------------------------------------------------------------ the process

    def process(self) -> dict[str, Any]:
        from sampan.containers import spec as specmod

        oci = json.loads((self.rec.dir / "config.json").read_text())
        proc = dict(oci["process"])
        proc.pop("consoleSize", None)
        if self.tty and self.console_size:  # the pty has its size before the process runs
            proc["consoleSize"] = {"height": self.console_size[0],
                                   "width": self.console_size[1]}
        proc["args"] = list(self.cmd)
        proc["terminal"] = self.tty
        extra = (["TERM=xterm"] if self.tty else []) + self.env
        proc["env"] = specmod.merge_env(proc.get("env") or [], extra)
        if self.user:
            proc["user"] = specmod.resolve_user(self.user, Path(oci["root"]["path"]))
        if self.workdir:
            proc["cwd"] = self.workdir
        caps = dict(proc.get("capabilities") or {})
        if self.privileged:
            from sampan.containers.capsets import held

            bounding = held(list(specmod.ALL_CAPS))
        else:
            bounding = list(caps.get("bounding", []))
        root = (proc.get("user") or {}).get("uid", 0) == 0
        proc["capabilities"] = {"bounding": bounding,
                                "effective": bounding if root else [],
                                "permitted": bounding if root else []}
        return proc

    def exit_path(self) -> Path:
        return self.rec.dir / f"exec-{self.id}.exit.json"

    def finish(self) -> None:
        """The monitor is done (or gone): take its exit file, once."""
        if not self.running:
            return
        try:
            ex = json.loads(self.exit_path().read_text())
            code = int(ex.get("ExitCode", 126))
        except (OSError, ValueError):
            from sampan.containers.launch import _tail

            log.warning("exec %s: no exit status: %s", self.id[:12],
                        _tail(self.rec.dir / "monitor.log", 500))
            code = 126
        self.exit_code = code
        self.running = False
        self.finished_at = time.monotonic()
        self.done.set()
        _event(self.eng, self.rec, "exec_die", execID=self.id, exitCode=code)
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        for name in (f"exec-{self.id}.json", f"exec-{self.id}.exit.json",
                     f"exec-{self.id}.sock"):
            try:
                (self.rec.dir / name).unlink()
            except OSError:
                pass

    def watch(self, monitor_pid: int) -> None:
        self.monitor = monitor_pid
        try:
            self._pidfd = os.pidfd_open(monitor_pid)
        except OSError:
            asyncio.get_running_loop().call_soon(self.finish)
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self.finish)

    def launch(self, attach: bool) -> tuple[Any, dict[str, Any]]:
        """(blocking) Start the exec monitor and the process; (client socket or None, the
        monitor's answer: {"pid"} or {"error"})."""
        from sampan.containers import launch

        cfg = {"process": self.process(), "tty": self.tty, "stdin": self.stdin}
        m = launch.start_exec(self.rec.dir, self.rec.id, self.runtime_root, self.id, cfg)
        if isinstance(m, dict):
            return None, m
        sock = None
        try:
            self.monitor = int(m.ready.get("monitor") or 0)  # type: ignore[attr-defined]
            if attach:
                sock = launch.connect(self.rec.dir, f"exec-{self.id}.sock")
            m.send({"start": True})
            msg = m.recv()
        finally:
            m.close()
        return sock, msg


class Execs:
    def __init__(self) -> None:
        self.by_id: dict[str, Exec] = {}

    def get(self, eid: str) -> Exec:
        ex = self.by_id.get(eid)
        if ex is None:
            raise HTTPError(404, f"No such exec instance: {eid}")
        return ex

    def add(self, ex: Exec) -> None:
        done = [e for e in self.by_id.values() if e.exit_code is not None]
        if len(done) >= MAX_FINISHED:
            for e in sorted(done, key=lambda e: e.finished_at)[: len(done) - MAX_FINISHED + 1]:
                self.by_id.pop(e.id, None)
        self.by_id[ex.id] = ex


def _execs(eng: Any) -> Execs:
    x = getattr(eng, "_execs", None)
    if x is None:
        x = eng._execs = Execs()  # type: ignore[attr-defined]
    return x


def exec_ids(eng: Any, cid: str) -> list[str] | None:
    """A container's execs that have not exited, as dockerd lists them in inspect's ExecIDs
    (null when there are none)."""
    x = getattr(eng, "_execs", None)
    ids = [e.id for e in x.by_id.values() if e.rec.id == cid and e.exit_code is None] \
        if x is not None else []
    return ids or None


def _strings(v: Any, name: str) -> None:
    if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        raise HTTPError(400, f"{name} must be a list of strings")


def _running(rec: Any) -> None:
    if rec.state.get("Paused"):
        raise HTTPError(409, f"container {rec.id} is paused, unpause the container before exec")
    if not rec.running:
        raise HTTPError(409, f"container {rec.id} is not running")


def _console_size(v: Any) -> list[int] | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and
                                                        not isinstance(x, bool) and
                                                        0 <= x < 65536 for x in v)):
        raise HTTPError(400, "ConsoleSize must be [height, width]")
    return v if any(v) else None


async def create(req: Any, eng: Any) -> Any:
    from sampan.daemon import containers as cmod

    c = cmod.get(eng)
    rec = c.store.get(req.params["id"])
    body = await req.json({})
    if not isinstance(body, dict):
        raise HTTPError(400, "exec config must be an object")
    _strings(body.get("Cmd"), "Cmd")
    _strings(body.get("Env"), "Env")
    if not body.get("Cmd"):
        raise HTTPError(400, "No exec command specified")
    for k in ("User", "WorkingDir", "DetachKeys"):
        if body.get(k) is not None and not isinstance(body[k], str):
            raise HTTPError(400, f"{k} must be a string")
    for k in ("Tty", "AttachStdin", "AttachStdout", "AttachStderr", "Privileged"):
        if body.get(k) is not None and not isinstance(body[k], bool):
            raise HTTPError(400, f"{k} must be a boolean")
    wd = body.get("WorkingDir") or ""
    if wd and not wd.startswith("/"):
        raise HTTPError(400, f"invalid WorkingDir: {wd!r}: it needs to be an absolute path")
    for e in body.get("Env") or []:
        if not e.partition("=")[0]:
            raise HTTPError(400, f"invalid environment variable: {e!r}")
    parse_detach_keys(body.get("DetachKeys") or None)
    body["ConsoleSize"] = _console_size(body.get("ConsoleSize"))
    _running(rec)
    ex = Exec(os.urandom(32).hex(), rec, c.store.runtime_root, body, eng)
    _execs(eng).add(ex)
    _event(eng, rec, "exec_create: " + " ".join(ex.cmd), execID=ex.id)
    return json_response({"Id": ex.id}, 201)


async def start(req: Any, eng: Any) -> Any:
    ex = _execs(eng).get(req.params["id"])
    body = await req.json({})
    if not isinstance(body, dict):
        raise HTTPError(400, "exec start config must be an object")
    detach = bool(body.get("Detach"))
    if body.get("Tty") is not None:
        ex.tty = bool(body.get("Tty"))
    size = _console_size(body.get("ConsoleSize"))
    if size:
        ex.console_size = size
    if ex.started:
        if ex.running:
            raise HTTPError(409, f"Error: Exec command {ex.id} is already running")
        raise HTTPError(409, f"Error: Exec command {ex.id} has already run")
    _running(ex.rec)
    ex.started = True
    ex.running = True
    _event(eng, ex.rec, "exec_start: " + " ".join(ex.cmd), execID=ex.id)
    keys = parse_detach_keys(ex.detach_keys_spec or None)

    if detach:
        try:
            sock, msg = await blocking(ex.launch, False)
        except BaseException:
            ex.running = False
            ex.exit_code = 126
            raise
        if ex.monitor:
            ex.watch(ex.monitor)
        if "error" in msg:
            ex.finish()
            raise HTTPError(500, f"OCI runtime exec failed: {msg['error']}")
        ex.pid = int(msg.get("pid") or 0)
        return empty(200)

    async def run(s: HijackedStream) -> None:
        try:
            sock, msg = await blocking(ex.launch, True)
        except Exception as e:  # noqa: BLE001 - written to the stream, as docker does
            ex.running = False
            ex.exit_code = 126
            ex.done.set()
            text = f"OCI runtime exec failed: {e}\r\n".encode()
            await s.write(text if ex.tty else frame(1, text))
            return
        if ex.monitor:
            ex.watch(ex.monitor)
        if "error" in msg:
            if sock is not None:
                sock.close()
            text = f"OCI runtime exec failed: {msg['error']}\r\n".encode()
            await _wait_finish(ex)
            await s.write(text if ex.tty else frame(1, text))
            return
        ex.pid = int(msg.get("pid") or 0)
        if sock is None:
            return
        if ex.tty and ex.console_size:
            try:
                await asyncio.get_running_loop().sock_sendall(
                    sock, b"\x02" + f"{ex.console_size[0]} {ex.console_size[1]}".encode())
            except OSError:
                pass
        why = await relay(s, sock, tty=ex.tty, stdout=ex.stdout, stderr=ex.stderr,
                          stdin=ex.stdin, close_stdin=True, detach_keys=keys)
        if why == "exited":
            # the monitor wrote the exit file before it closed us: inspect right after the
            # stream ends (as the docker CLI does) must see the exit code
            await _wait_finish(ex)
        await end_stream(s)

    ctype = "application/vnd.docker.raw-stream" if ex.tty else \
        "application/vnd.docker.multiplexed-stream"
    return Hijack(run, ctype)


async def _wait_finish(ex: Exec) -> None:
    if ex.exit_path().exists():
        ex.finish()
        return
    try:
        await asyncio.wait_for(ex.done.wait(), 5)
    except asyncio.TimeoutError:
        ex.finish()


async def resize(req: Any, eng: Any) -> Any:
    from sampan.daemon.attach import parse_size

    ex = _execs(eng).get(req.params["id"])
    h, w = parse_size(req)
    if not ex.running:
        raise HTTPError(409, f"Exec {ex.id} is not running")
    try:
        await blocking(send_resize, ex.rec.dir, f"exec-{ex.id}.sock", h, w)
    except OSError as e:
        raise HTTPError(409, f"Exec {ex.id} is not running ({e})") from None
    return empty(200)


async def inspect(req: Any, eng: Any) -> Any:
    return json_response(_execs(eng).get(req.params["id"]).inspect())


def register(r: Any) -> None:
    r.add("POST", "/containers/{id}/exec", create)
    r.add("POST", "/exec/{id}/start", start)
    r.add("POST", "/exec/{id}/resize", resize)
    r.add("GET", "/exec/{id}/json", inspect)
