"""Interactive streams: a hijacked HTTP connection relayed to a monitor's attach socket
(docs/monitor.md) — `POST /containers/{id}/attach`, `POST /containers/{id}/resize`, and the
relay `exec start` uses too.

Output packets (stream byte + data) become docker's 8-byte-header frames without a tty, raw
bytes with one. Stdin from the client becomes `0`+data packets. When the client's stdin ends,
docker's rule applies: with StdinOnce (always for exec) and no tty the container's stdin is
closed (`1`) and output goes on until the process ends; otherwise the attach ends there. With a
tty, the detach keys (default ctrl-p ctrl-q) end the attach and leave the process running.
When the monitor closes the socket (the process ended and all its output was sent), the
stream ends."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import Any, Callable

from sampan import termkeys
from sampan.daemon.server import Hijack, HijackedStream, HTTPError

log = logging.getLogger("sampand")

STDIN_PACKET = 32 * 1024


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def parse_detach_keys(spec: str | None) -> bytes:
    try:
        return termkeys.parse(spec)
    except ValueError as e:
        raise HTTPError(400, str(e)) from None


def connect(cdir: Path, name: str) -> Any:
    from sampan.containers.launch import connect as _connect

    return _connect(cdir, name)


async def send_packet(sock: Any, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def relay(s: HijackedStream, msock: Any, *, tty: bool, stdout: bool = True,
                stderr: bool = True, stdin: bool = False, close_stdin: bool = False,
                detach_keys: bytes = b"") -> str:
    """Relay until the process ends ("exited"), the client goes ("gone"), its stdin ends
    ("eof") or it detaches ("detached")."""
    loop = asyncio.get_running_loop()

    async def pump_out() -> str:
        while True:
            try:
                pkt = await loop.sock_recv(msock, 65536 + 1)
            except OSError:
                pkt = b""
            if not pkt:
                return "exited"
            stream, data = pkt[0], pkt[1:]
            if not data or (stream == 2 and not stderr) or (stream != 2 and not stdout):
                continue
            try:
                await s.write(data if tty else frame(2 if stream == 2 else 1, data))
            except (ConnectionError, OSError):
                return "gone"

    async def pump_in() -> str:
        det = termkeys.Detacher(detach_keys if tty else b"")
        while True:
            try:
                data = await s.read(STDIN_PACKET)
            except (ConnectionError, OSError):
                return "gone"
            if not data:
                if close_stdin and not tty:
                    try:
                        await send_packet(msock, b"\x01")
                    except OSError:
                        pass
                return "eof"
            data, detached = det.feed(data)
            try:
                if data:
                    await send_packet(msock, b"\x00" + data)
            except OSError:
                return "exited"
            if detached:
                return "detached"

    out_task = asyncio.ensure_future(pump_out())
    tasks = {out_task}
    in_task = None
    if stdin:
        in_task = asyncio.ensure_future(pump_in())
        tasks.add(in_task)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done:
            return out_task.result()
        assert in_task is not None
        why = in_task.result()
        if why == "eof" and close_stdin and not tty:
            return await out_task
        return why
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001 - cancelled or already reported
                pass
        msock.close()


async def end_stream(s: HijackedStream, linger: float = 2.0) -> None:
    """End the output (FIN) and drop what the client still sends until it closes: closing
    with unread input would reset the connection, and a reset can destroy output the client
    has not read yet (`yes | docker run -i busybox head -1`)."""
    s.close_write()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            data = await asyncio.wait_for(s.read(65536), left)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            return
        if not data:
            return


# --------------------------------------------------------------------------- waiting attaches


def _waiting(c: Any) -> dict[str, list[asyncio.Future]]:
    w = getattr(c, "_attach_waiting", None)
    if w is None:
        w = c._attach_waiting = {}
    return w


class StartHook:
    """Given to ContainerStore.start as `on_created`: connects the attach clients that waited
    for this start to the new monitor's attach.sock (in the worker thread, before the monitor
    is told to start, so they see the first byte). `finish()` fails the ones left over when the
    start failed before that."""

    def __init__(self, c: Any, rec: Any):
        self.loop = asyncio.get_running_loop()
        self.rec = rec
        self.futs = _waiting(c).pop(rec.id, [])

    def __call__(self) -> None:
        cfg = self.rec.doc["Config"]
        size = (self.rec.doc.get("HostConfig") or {}).get("ConsoleSize")
        if cfg.get("Tty") and isinstance(size, list) and len(size) == 2 and all(
                isinstance(x, int) and 0 < x < 65536 for x in size):
            try:  # before the start, so the process sees its size from the first instant
                send_resize(self.rec.dir, "attach.sock", size[0], size[1])
            except OSError:
                pass
        for f in self.futs:
            try:
                s = connect(self.rec.dir, "attach.sock")
            except OSError as e:
                self.loop.call_soon_threadsafe(_settle, f, None, e)
                continue
            self.loop.call_soon_threadsafe(_settle, f, s, None)

    def finish(self) -> None:
        for f in self.futs:
            if not f.done():
                f.set_result(None)


def _settle(f: asyncio.Future, s: Any, e: BaseException | None) -> None:
    if f.done():
        if s is not None:
            s.close()
        return
    if e is not None:
        f.set_result(None)
    else:
        f.set_result(s)


def start_hook(c: Any, rec: Any) -> StartHook | None:
    if not _waiting(c).get(rec.id) and not (rec.doc["Config"].get("Tty") and (
            rec.doc.get("HostConfig") or {}).get("ConsoleSize")):
        return None
    return StartHook(c, rec)


# --------------------------------------------------------------------------- endpoints


def _want(req: Any, name: str) -> bool:
    return req.qbool(name)


async def attach(req: Any, eng: Any) -> Hijack:
    from sampan.daemon import containers as cmod

    c = cmod.get(eng)
    rec = c.store.get(req.params["id"])
    if rec.state.get("Paused"):
        raise HTTPError(409, "You cannot attach to a paused container, unpause it first")
    stream = req.qbool("stream")
    logs = req.qbool("logs")
    tty = bool(rec.doc["Config"].get("Tty"))
    stdin = req.qbool("stdin") and bool(rec.doc["Config"].get("OpenStdin"))
    want_out, want_err = req.qbool("stdout"), req.qbool("stderr")
    keys = parse_detach_keys(req.q("detachKeys"))
    close_stdin = bool(rec.doc["Config"].get("StdinOnce"))
    # Registered before the 101 goes out: the client may call start right after it.
    fut: asyncio.Future | None = None
    msock = None
    if stream:
        if rec.running:
            try:
                msock = connect(rec.dir, "attach.sock")
            except OSError:
                msock = None  # it just ended: only the logs, if asked
        else:
            fut = asyncio.get_running_loop().create_future()
            _waiting(c).setdefault(rec.id, []).append(fut)

    _event(eng, rec, "attach")

    async def run(s: HijackedStream) -> None:
        nonlocal msock
        c.attach_begin(rec.id)
        try:
            if logs:
                # docker-py reads the hijacked socket itself once it has parsed the answer's
                # head, past http.client's buffer: bytes sent right behind the head would
                # land in that buffer and be lost. dockerd's log reader is slower than this.
                await asyncio.sleep(0.05)
                want = {n for n, w in (("stdout", want_out), ("stderr", want_err)) if w}
                async for chunk in cmod._follow_log(c, rec, 0, False, want, False, tty):
                    await s.write(chunk)
            if fut is not None:
                # until the start, or the container's removal (nothing will start then)
                gone = asyncio.ensure_future(c.removed_event(rec.id).wait())
                try:
                    await asyncio.wait({fut, gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    gone.cancel()
                msock = fut.result() if fut.done() and not fut.cancelled() else None
            if msock is not None:
                why = await relay(s, msock, tty=tty, stdout=want_out, stderr=want_err,
                                  stdin=stdin, close_stdin=close_stdin, detach_keys=keys)
                msock = None
                log.debug("attach %s ended: %s", rec.id[:12], why)
            await end_stream(s)
        except (ConnectionError, OSError):
            pass
        finally:
            if fut is not None and not fut.done():
                fut.cancel()
            lst = _waiting(c).get(rec.id)
            if lst and fut in lst:
                lst.remove(fut)
            if msock is not None:
                msock.close()
            c.attach_end(rec.id)

    ctype = "application/vnd.docker.raw-stream" if tty else \
        "application/vnd.docker.multiplexed-stream"
    return Hijack(run, ctype)


def parse_size(req: Any) -> tuple[int, int]:
    try:
        h = int(req.q("h") or 0)
        w = int(req.q("w") or 0)
    except ValueError:
        raise HTTPError(400, "strconv.Atoi: parsing height or width: invalid syntax") from None
    if not (0 <= h < 65536 and 0 <= w < 65536):
        raise HTTPError(400, f"invalid terminal size {h}x{w}")
    return h, w


def send_resize(cdir: Path, name: str, h: int, w: int) -> None:
    s = connect(cdir, name)
    try:
        s.setblocking(True)
        s.send(b"\x02" + f"{h} {w}".encode())
    finally:
        s.close()


async def resize(req: Any, eng: Any) -> Any:
    from sampan.daemon import containers as cmod
    from sampan.daemon.server import empty

    c = cmod.get(eng)
    rec = c.store.get(req.params["id"])
    h, w = parse_size(req)
    if not rec.running:
        raise HTTPError(409, f"container {rec.id} is not running")
    try:
        send_resize(rec.dir, "attach.sock", h, w)
    except OSError as e:
        raise HTTPError(409, f"container {rec.id} is not running ({e})") from None
    _event(eng, rec, "resize", height=h, width=w)
    return empty(200)


def _event(eng: Any, rec: Any, action: str, **attrs: Any) -> None:
    """docker's container events for attach, resize and execs (best effort)."""
    try:
        from sampan.daemon.events import emit_container

        emit_container(eng, rec, action, **attrs)
    except Exception as e:  # noqa: BLE001 - an event never fails the request
        log.debug("event %s: %s", action, e)


Hook = Callable[[], None]
