"""Container endpoints of the Engine API over `sampan.containers.ContainerStore`.

The daemon learns a container's exit from its monitor's end: a pidfd of the monitor (which is
not the daemon's child, and survives a daemon restart) is watched by the event loop; the
monitor's exit.json holds the status. On start, running containers whose monitor lives are
watched again (live-restore); those whose monitor is gone get their recorded exit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from typing import Any

from sampan.daemon.engine import Engine, blocking
from sampan.daemon.events import emit_container
from sampan.daemon.images import parse_filters
from sampan.daemon.router import Router
from sampan.daemon.server import (
    Hijack,
    HTTPError,
    Request,
    Response,
    StreamResponse,
    empty,
    json_response,
)

log = logging.getLogger("sampand")


class Containers:
    def __init__(self, eng: Engine):
        from sampan.containers.store import ContainerStore

        self.eng = eng
        self.store = ContainerStore(eng.config.data_root, eng.config.exec_root,
                                    lambda: eng.graph, getattr(eng.config, "log_root", None))
        from sampan.containers import initproc

        extra = getattr(eng.config, "extra", None) or {}
        initproc.daemon_default = bool(extra.get("init"))
        from sampan.containers import logfiles

        try:
            logfiles.set_daemon_default(extra.get("log-driver"), extra.get("log-opts"))
        except Exception as e:  # noqa: BLE001 - a bad daemon.json value must not stop sampand
            log.warning("daemon.json log-driver/log-opts ignored: %s", e)
        from sampan.daemon.networks import controller

        self.store.network = controller(eng)  # type: ignore[attr-defined]
        self.store.network.lookup = self.store.get
        self.exited: dict[str, asyncio.Event] = {}   # replaced at each exit
        self.removed: dict[str, asyncio.Event] = {}
        self._pidfds: dict[str, int] = {}
        # Attach streams per container: an auto-removed container keeps its log until they
        # have read it (they follow the json log, not the process's pipes).
        self.attached: dict[str, int] = {}
        self._detached: dict[str, asyncio.Event] = {}  # set when the last attach ends

    # ---------------------------------------------------------------- exits

    def event(self, cid: str) -> asyncio.Event:
        ev = self.exited.get(cid)
        if ev is None:
            ev = self.exited[cid] = asyncio.Event()
        return ev

    def removed_event(self, cid: str) -> asyncio.Event:
        ev = self.removed.get(cid)
        if ev is None:
            ev = self.removed[cid] = asyncio.Event()
        return ev

    def watch(self, rec: Any, monitor_pid: int) -> None:
        if not monitor_pid:
            return  # a start that found it running (a concurrent start watches it)
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(monitor_pid)
        except OSError:
            loop.call_soon(self._exited, rec.id)
            return
        if not self.store.monitor_alive(rec):
            os.close(fd)
            loop.call_soon(self._exited, rec.id)
            return
        self._pidfds[rec.id] = fd
        loop.add_reader(fd, self._exited, rec.id)

    def _exited(self, cid: str) -> None:
        loop = asyncio.get_running_loop()
        fd = self._pidfds.pop(cid, None)
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)
        try:
            rec = self.store.get(cid)
        except Exception:  # noqa: BLE001
            return
        self.store.record_exit(rec)
        from sampan.containers import mounts

        mounts.on_stop(rec.id, mounts.volumes_for(self.eng.config.data_root))
        log.info("container %s exited with %s", cid[:12], rec.state["ExitCode"])
        from sampan.daemon.restarts import on_exit

        on_exit(self, rec)
        ev = self.exited.pop(cid, None)
        if ev is not None:
            ev.set()
        if rec.doc["HostConfig"].get("AutoRemove"):
            asyncio.ensure_future(self._auto_remove(rec))

    def attach_begin(self, cid: str) -> None:
        self.attached[cid] = self.attached.get(cid, 0) + 1

    def attach_end(self, cid: str) -> None:
        self.attached[cid] -= 1
        if not self.attached[cid]:
            del self.attached[cid]
            ev = self._detached.pop(cid, None)
            if ev is not None:
                ev.set()

    async def _auto_remove(self, rec: Any) -> None:
        if self.attached.get(rec.id):
            # woken the moment the last attached client has drained the log (a poll here
            # cost every `run --rm` up to its period)
            ev = self._detached.setdefault(rec.id, asyncio.Event())
            try:
                await asyncio.wait_for(ev.wait(), 10)
            except asyncio.TimeoutError:
                pass
            self._detached.pop(rec.id, None)
        await self.remove(rec, force=False, volumes=True)  # --rm takes anonymous volumes

    async def remove(self, rec: Any, force: bool, volumes: bool = False) -> None:
        if rec.running and force:
            await self.stop(rec, 0)
        await blocking(self.store.remove, rec, force, volumes)
        emit_container(self.eng, rec, "destroy")
        ev = self.removed.pop(rec.id, None)
        if ev is not None:
            ev.set()

    async def stop(self, rec: Any, timeout: int | None, sig: int | None = None) -> bool:
        """Signal, then SIGKILL after `timeout` seconds (-1: wait forever). False if it was
        not running."""
        from sampan.containers.store import parse_signal
        from sampan.daemon import container_ops, restarts

        if restarts.stopping(self, rec):
            return True  # a pending restart was cancelled
        if not rec.running:
            return False
        ev = self.event(rec.id)
        if sig is None:
            sig = parse_signal(rec.doc["Config"].get("StopSignal"), 15)
        if timeout is None:
            timeout = rec.doc["Config"].get("StopTimeout") or 10
        if timeout != 0:
            try:
                self.store.kill(rec, sig)
                emit_container(self.eng, rec, "kill", signal=sig)
                container_ops.thaw_for_signal(self, rec, sig)
            except Exception as e:  # noqa: BLE001
                log.debug("stop signal: %s", e)
            try:
                await asyncio.wait_for(ev.wait(), None if timeout < 0 else timeout)
            except asyncio.TimeoutError:
                pass
        if rec.running:
            try:
                self.store.kill(rec, 9)
                emit_container(self.eng, rec, "kill", signal=9)
                container_ops.thaw_for_signal(self, rec, 9)
            except Exception as e:  # noqa: BLE001
                log.debug("SIGKILL: %s", e)
            await ev.wait()
        emit_container(self.eng, rec, "stop")
        return True

    def reconcile(self) -> None:
        from sampan.daemon import recovery

        for d in self.store.leftovers():
            recovery.remove_unfinished_create(self, d)
        strays = recovery.stray_monitors(self.store.root)
        for rec in self.store.all():
            if rec.state.get("Status") == "removing":
                asyncio.ensure_future(self.remove(
                    rec, force=True,
                    volumes=bool((rec.doc.get("SampanRemoving") or {}).get("Volumes"))))
            elif not rec.running and strays.get(rec.id):
                recovery.recover(self, rec, strays[rec.id])  # a start the crash cut short
            elif rec.running:
                if self.store.monitor_alive(rec):
                    log.info("container %s: reattached to its monitor", rec.id[:12])
                    self.watch(rec, rec.doc["SampanMonitor"]["Pid"])
                else:
                    self._exited(rec.id)
        self.store.network.reconcile(self._running_record)

    def _running_record(self, cid: str) -> Any:
        try:
            rec = self.store.get(cid)
        except Exception:  # noqa: BLE001 - gone
            return None
        return rec if rec.running and self.store.monitor_alive(rec) else None


def get(eng: Engine) -> Containers:
    c = getattr(eng, "_containers", None)
    if c is None:
        c = eng._containers = Containers(eng)  # type: ignore[attr-defined]
    return c


def register(r: Router) -> None:
    r.add("POST", "/containers/create", create)
    r.add("GET", "/containers/json", list_)
    r.add("POST", "/containers/prune", prune)
    r.add("GET", "/containers/{id}/json", inspect)
    r.add("POST", "/containers/{id}/start", start)
    r.add("POST", "/containers/{id}/stop", stop)
    r.add("POST", "/containers/{id}/restart", restart)
    r.add("POST", "/containers/{id}/kill", kill)
    r.add("POST", "/containers/{id}/wait", wait)
    r.add("GET", "/containers/{id}/logs", logs)
    r.add("POST", "/containers/{id}/attach", attach)
    r.add("POST", "/containers/{id}/resize", resize)
    r.add("DELETE", "/containers/{id}", delete)
    from sampan.daemon import container_ops, restarts

    container_ops.register(r)
    try:
        get(r.engine).reconcile()
        restarts.on_daemon_start(get(r.engine))
    except Exception as e:  # noqa: BLE001 - the daemon still serves images
        log.error("container store: %s", e)


def _rec(req: Request, eng: Engine) -> Any:
    return get(eng).store.get(req.params["id"])


async def create(req: Request, eng: Engine) -> Response:
    body = await req.json({})
    if not isinstance(body, dict):
        raise HTTPError(400, "config cannot be empty in order to create a container")
    name = req.q("name") or None
    c = get(eng)
    from sampan.containers.createtypes import check_create
    from sampan.daemon import restarts

    check_create(body)
    restarts.validate_create(body)
    rec = await blocking(c.store.create, body, name)
    emit_container(eng, rec, "create")
    return json_response({"Id": rec.id, "Warnings": rec.warnings}, 201)


async def list_(req: Request, eng: Engine) -> Response:
    filters = parse_filters(req.q("filters"))
    out = get(eng).store.list(req.qbool("all"), filters)
    limit = req.qint("limit", -1)
    if limit > 0:
        out = out[:limit]
    return json_response(out)


async def prune(req: Request, eng: Engine) -> Response:
    c = get(eng)
    from sampan.daemon.params import prune_filter

    # only what the filters select: ignoring them would remove containers the user kept
    wanted = prune_filter(parse_filters(req.q("filters")))
    deleted = []
    for rec in c.store.all():
        if rec.state["Status"] in ("exited", "created", "dead") and wanted(rec):
            await c.remove(rec, False)
            deleted.append(rec.id)
    from sampan.daemon.events import emit

    emit(eng, "container", "prune", "", {"reclaimed": 0})
    return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})


async def inspect(req: Request, eng: Engine) -> Response:
    c = get(eng)
    rec = _rec(req, eng)
    doc = c.store.inspect(rec)
    from sampan.daemon.execs import exec_ids

    doc["ExecIDs"] = exec_ids(eng, rec.id)
    return json_response(doc)


async def start(req: Request, eng: Engine) -> Response:
    c = get(eng)
    rec = _rec(req, eng)
    if rec.state.get("Paused"):
        from sampan.errors import Conflict

        raise Conflict("cannot start a paused container, try unpause instead")
    if rec.running:
        return empty(304)
    c.event(rec.id)
    from sampan.daemon.attach import start_hook

    hook = start_hook(c, rec)
    try:
        mon = await blocking(c.store.start, rec, hook)
    except Exception:
        if hook is not None:
            hook.finish()
        c._exited(rec.id) if False else None
        ev = c.exited.pop(rec.id, None)
        if ev is not None:
            ev.set()
        if rec.doc["HostConfig"].get("AutoRemove") and not rec.running:
            asyncio.ensure_future(c.remove(rec, False))
        raise
    if not mon:  # a concurrent start won the race
        if hook is not None:
            hook.finish()
        return empty(304)
    c.watch(rec, mon)
    emit_container(eng, rec, "start")
    from sampan.daemon import restarts

    restarts.started(c, rec)
    return empty(204)


async def stop(req: Request, eng: Engine) -> Response:
    c = get(eng)
    rec = _rec(req, eng)
    sig = req.q("signal")
    from sampan.containers.store import parse_signal
    from sampan.daemon import params

    done = await c.stop(rec, params.timeout(req, "t", "timeout"),
                        parse_signal(sig) if sig else None)
    return empty(204 if done else 304)


async def restart(req: Request, eng: Engine) -> Response:
    c = get(eng)
    rec = _rec(req, eng)
    from sampan.daemon import params

    await c.stop(rec, params.timeout(req, "t"))
    c.event(rec.id)
    mon = await blocking(c.store.start, rec)
    c.watch(rec, mon)
    emit_container(eng, rec, "start")
    emit_container(eng, rec, "restart")
    from sampan.daemon import restarts

    restarts.started(c, rec)
    return empty(204)


async def kill(req: Request, eng: Engine) -> Response:
    from sampan.containers.store import parse_signal

    c = get(eng)
    rec = _rec(req, eng)
    sig = parse_signal(req.q("signal"), 9)
    c.store.kill(rec, sig)
    emit_container(eng, rec, "kill", signal=sig)
    from sampan.daemon import container_ops, restarts

    restarts.killed(c, rec)
    container_ops.thaw_for_signal(c, rec, sig)
    return empty(204)


async def wait(req: Request, eng: Engine) -> StreamResponse:
    c = get(eng)
    rec = _rec(req, eng)
    cond = req.q("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise HTTPError(400, f"invalid condition: {cond!r}")
    if cond == "removed":
        ev = c.removed_event(rec.id)
    elif cond == "next-exit" or rec.running:
        ev = c.event(rec.id)
    else:
        ev = None

    async def body():
        if ev is not None:
            await ev.wait()
        st = rec.state
        out: dict[str, Any] = {"StatusCode": st["ExitCode"]}
        if st.get("Error"):
            out["Error"] = {"Message": st["Error"]}
        else:
            out["Error"] = None
        yield json.dumps(out).encode() + b"\n"

    return StreamResponse(body(), 200, "application/json")


def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def _follow_log(c: Containers, rec: Any, offset: int, follow: bool,
                      want: set[str], timestamps: bool, tty: bool, tail: int = -1,
                      since: float = 0, until: float = 0):
    """Yield encoded log output from `offset` of the json log; while following, until the
    container stops (then what is left)."""
    from sampan.containers.store import parse_rfc3339

    path = rec.log_path
    ev = c.event(rec.id) if (follow and rec.running) else None
    pending = b""

    from sampan.containers.logfiles import LogReader

    # Rotated files first (oldest first), then the live file, followed across rotations.
    reader = LogReader(path, offset)

    def read_from(off: int) -> tuple[bytes, int]:
        data = reader.read()
        return data, off + len(data)

    first = True
    while True:
        data, offset = read_from(offset)
        pending += data
        lines = pending.split(b"\n")
        pending = lines.pop()
        entries = []
        for ln in lines:
            if not ln.strip():
                continue
            try:
                m = json.loads(ln)
            except ValueError:
                continue
            if m.get("stream") not in want:
                continue
            if since or until:
                t = parse_rfc3339(m.get("time", ""))
                if (since and t < since) or (until and t > until):
                    continue
            entries.append(m)
        if first and tail >= 0:
            entries = entries[len(entries) - tail:] if tail else []
        first = False
        out = []
        for m in entries:
            text = m.get("log", "")
            if timestamps:
                text = m.get("time", "") + " " + text
            b = text.encode()
            out.append(b if tty else _frame(1 if m["stream"] == "stdout" else 2, b))
        if out:
            yield b"".join(out)
        if ev is None:
            return
        if ev.is_set():
            ev = None  # one more read for what came last
            continue
        try:
            await asyncio.wait_for(asyncio.shield(ev.wait()), 0.1)
        except asyncio.TimeoutError:
            pass


async def logs(req: Request, eng: Engine) -> StreamResponse:
    c = get(eng)
    rec = _rec(req, eng)
    want = {s for s in ("stdout", "stderr") if req.qbool(s)}
    if not want:
        raise HTTPError(400, "Bad parameters: you must choose at least one stream")
    if (rec.doc["HostConfig"].get("LogConfig") or {}).get("Type") == "none":
        # dockerd's ErrReadLogsNotSupported, a 501
        raise HTTPError(501, "configured logging driver does not support reading")
    tail_s = req.q("tail") or "all"
    try:
        tail = -1 if tail_s == "all" else int(tail_s)
    except ValueError:
        tail = -1
    tty = bool(rec.doc["Config"].get("Tty"))
    from sampan.daemon import params

    since = params.timestamp(req, "since")
    until = params.timestamp(req, "until")
    gen = _follow_log(c, rec, 0, req.qbool("follow"), want, req.qbool("timestamps"), tty,
                      tail, since, until)
    ctype = "application/vnd.docker.raw-stream" if tty else \
        "application/vnd.docker.multiplexed-stream"
    return StreamResponse(gen, 200, ctype)


async def attach(req: Request, eng: Engine) -> Hijack:
    from sampan.daemon import attach as attachmod

    return await attachmod.attach(req, eng)


async def resize(req: Request, eng: Engine) -> Response:
    from sampan.daemon import attach as attachmod

    return await attachmod.resize(req, eng)


async def delete(req: Request, eng: Engine) -> Response:
    c = get(eng)
    rec = _rec(req, eng)
    force = req.qbool("force")
    if rec.state.get("Restarting") and not force:
        from sampan.errors import Conflict

        raise Conflict(f"You cannot remove a restarting container {rec.id}. Stop the "
                       "restarting container before attempting removal or force remove")
    if rec.running and not force:
        from sampan.errors import Conflict

        raise Conflict(f"cannot remove container \"/{rec.name}\": container is running: "
                       "stop the container before removing or force remove")
    await c.remove(rec, force, req.qbool("v"))
    return empty(204)
