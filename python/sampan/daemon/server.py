"""HTTP/1.1 on asyncio with h11: keep-alive, request bodies (content-length and chunked, read as
a stream), chunked streaming responses, HEAD, `Expect: 100-continue`, and connection hijacking
(HTTP 101 upgrade, or docker's plain-200 hijack) for attach/exec.

Handlers are `async def handler(req: Request) -> Response | StreamResponse | Hijack`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger("sampand")

MAX_HEADER = 64 * 1024
MAX_JSON_BODY = 16 * 1024 * 1024
DRAIN_LIMIT = 1024 * 1024  # unread request body drained for keep-alive; beyond this: close

REASONS = {
    100: "Continue", 101: "UPGRADED", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
    413: "Request Entity Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}


class HTTPError(Exception):
    """An error answered as `{"message": …}` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- requests


class Body:
    """The request body as an async stream."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        self._buf = bytearray()
        self.done = False
        self.received = 0
        self.declared = -1  # Content-Length, when the request has one
        self.refused = False  # answered without reading it: the connection must close

    async def _fill(self) -> bool:
        if self.done:
            return False
        c = self._conn
        if c.h11.they_are_waiting_for_100_continue:
            await c.send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            ev = await c.next_event()
        except h11.RemoteProtocolError as e:  # e.g. a bad chunk size: the request's fault
            self.done = self.refused = True
            raise HTTPError(400, f"bad request: {e}") from None
        if isinstance(ev, h11.Data):
            self._buf += ev.data
            self.received += len(ev.data)
            return True
        if isinstance(ev, h11.EndOfMessage):
            self.done = True
            return False
        if isinstance(ev, h11.ConnectionClosed):
            self.done = True
            raise HTTPError(400, "unexpected end of request body")
        self.done = True
        return False

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all when n < 0); b"" at the end."""
        if n < 0:
            while await self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while not self._buf and await self._fill():
            pass
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read_limited(self, limit: int) -> bytes:
        if self.declared > limit:  # refused before a byte of it is read
            self.refused = True
            raise HTTPError(413, f"request body larger than {limit} bytes")
        while await self._fill():
            if len(self._buf) > limit:
                raise HTTPError(413, f"request body larger than {limit} bytes")
        out = bytes(self._buf)
        self._buf.clear()
        return out

    async def drain(self, limit: int) -> bool:
        """Discard the rest; False when more than `limit` bytes remained (the connection must
        then close)."""
        seen = len(self._buf)
        self._buf.clear()
        while not self.done and seen <= limit:
            await self._fill()
            seen += len(self._buf)
            self._buf.clear()
        return self.done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read(65536)
            if not chunk:
                return
            yield chunk


class Request:
    def __init__(self, method: str, target: str, http_version: str,
                 headers: list[tuple[str, str]], body: Body):
        self.method = method
        self.target = target
        self.http_version = http_version
        split = urlsplit(target)
        self.raw_path = split.path
        self.path = unquote(split.path)
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers = {}
        for k, v in headers:
            self.headers[k.lower()] = v
        self.raw_headers = headers
        self.body = body
        self.params: dict[str, str] = {}
        self.api_version: str | None = None
        self.app: Any = None  # set by the router's owner (the daemon's Engine)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def q(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[0] if v else default

    def qlist(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def qbool(self, name: str, default: bool = False) -> bool:
        """dockerd's BoolValue: anything but "", 0, no, false, none is true."""
        v = self.query.get(name)
        if not v:
            return default
        return v[0].strip().lower() not in ("", "0", "no", "false", "none")

    def qint(self, name: str, default: int = 0) -> int:
        v = self.q(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise HTTPError(400, f"invalid value for {name}: {v!r} is not an integer") from None

    async def json(self, default: Any = None) -> Any:
        data = await self.body.read_limited(MAX_JSON_BODY)
        if not data.strip():
            return default
        ctype = (self.header("content-type") or "application/json").split(";")[0].strip()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            raise HTTPError(400, f"unsupported Content-Type header ({ctype}): must be "
                                 "'application/json'")
        try:
            return json.loads(data)
        except ValueError as e:
            raise HTTPError(400, f"invalid JSON: {e}") from None
        except RecursionError:  # "[[[[…" a hundred thousand deep: the client's fault
            raise HTTPError(400, "invalid JSON: nested too deeply") from None

    def wants_upgrade(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "upgrade" in conn and bool(self.headers.get("upgrade"))


# --------------------------------------------------------------------------- responses


class Response:
    def __init__(self, status: int = 200, body: bytes = b"",
                 content_type: str | None = "application/json",
                 headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        if content_type and body:
            self.headers.append(("Content-Type", content_type))


def json_response(obj: Any, status: int = 200,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json", headers)


def error_response(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


def empty(status: int = 204) -> Response:
    return Response(status, b"", None)


class StreamResponse:
    """A body produced as it goes: chunked to HTTP/1.1 clients."""

    def __init__(self, chunks: AsyncIterator[bytes], status: int = 200,
                 content_type: str = "application/json",
                 headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.chunks = chunks
        self.headers = [("Content-Type", content_type), *(headers or [])]


class HijackedStream:
    """The raw connection after a hijack: bytes the client sent ahead come first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 leftover: bytes, eof: bool):
        self.reader = reader
        self.writer = writer
        self._leftover = leftover
        self._eof = eof

    async def read(self, n: int = 65536) -> bytes:
        if self._leftover:
            out, self._leftover = self._leftover[:n], self._leftover[n:]
            return out
        if self._eof:
            return b""
        return await self.reader.read(n)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close_write(self) -> None:
        if self.writer.can_write_eof():
            try:
                self.writer.write_eof()
            except OSError:
                pass

    def close(self) -> None:
        self.writer.close()


class Hijack:
    """Take the connection over (attach, exec start). With `Connection: Upgrade` the answer is
    `101 UPGRADED` (Upgrade: tcp); without, docker's `200 OK` with no framing. Then `run`
    owns the stream until it returns, and the connection is closed."""

    def __init__(self, run: Callable[[HijackedStream], Awaitable[None]],
                 content_type: str = "application/vnd.docker.raw-stream",
                 headers: list[tuple[str, str]] | None = None):
        self.run = run
        self.content_type = content_type
        self.headers = list(headers or [])


Handler = Callable[[Request], Awaitable[Any]]


# --------------------------------------------------------------------------- connections


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 app: Handler, common_headers: list[tuple[str, str]]):
        self.reader = reader
        self.writer = writer
        self.app = app
        self.common = common_headers
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
        self.busy = False  # inside a request (idle keep-alive connections close at once)

    async def next_event(self) -> Any:
        while True:
            ev = self.h11.next_event()
            if ev is h11.NEED_DATA:
                if self.h11.they_are_waiting_for_100_continue:
                    await self.send(h11.InformationalResponse(status_code=100, headers=[]))
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, OSError):
                    data = b""
                self.h11.receive_data(data)
                continue
            return ev

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def _headers(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [*self.common, *extra]

    async def serve(self) -> None:
        try:
            while True:
                try:
                    ev = await self.next_event()
                except h11.RemoteProtocolError as e:
                    await self._bad_request(e)
                    return
                if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    return
                if not isinstance(ev, h11.Request):
                    return
                self.busy = True
                try:
                    keep = await self._one(ev)
                finally:
                    self.busy = False
                if not keep:
                    return
                if self.h11.our_state is h11.MUST_CLOSE or \
                        self.h11.their_state is h11.MUST_CLOSE:
                    return
                try:
                    self.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # one broken connection never takes the daemon down
            log.exception("connection failed")
        finally:
            try:
                self.writer.close()
            except (OSError, RuntimeError) as e:
                log.debug("closing a connection: %s", e)

    async def _bad_request(self, e: Exception) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = getattr(e, "error_status_hint", 400)
            body = json.dumps({"message": f"bad request: {e}"}).encode() + b"\n"
            head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            try:
                self.writer.write(head + body)
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass

    async def _one(self, ev: h11.Request) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers]
        body = Body(self)
        req = Request(ev.method.decode("ascii", "replace").upper(),
                      ev.target.decode("latin-1"), ev.http_version.decode(), headers, body)
        cl = req.header("content-length")
        if cl and cl.strip().isdigit():
            body.declared = int(cl)
        head = req.method == "HEAD"
        try:
            resp = await self.app(req)
        except HTTPError as e:
            resp = error_response(e.status, e.message)
        if isinstance(resp, Hijack):
            await self._hijack(req, resp)
            return False
        keep = not body.refused
        if not body.done:
            # the handler left (part of) the body unread: drain a little of it to keep the
            # connection, else answer and close
            if self.h11.they_are_waiting_for_100_continue or body.refused:
                keep = False
            else:
                try:
                    keep = await body.drain(DRAIN_LIMIT)
                except HTTPError:
                    return False
        if isinstance(resp, StreamResponse):
            await self._stream(resp, head, keep)
        else:
            hdrs = self._headers(resp.headers)
            hdrs.append(("Content-Length", str(len(resp.body))))
            if not keep:
                hdrs.append(("Connection", "close"))
            await self.send(h11.Response(status_code=resp.status, headers=hdrs,
                                         reason=REASONS.get(resp.status, "")))
            if resp.body and not head:
                await self.send(h11.Data(data=resp.body))
            await self.send(h11.EndOfMessage())
        return keep

    async def _stream(self, resp: StreamResponse, head: bool, keep: bool) -> None:
        hdrs = self._headers(resp.headers)
        if not keep:
            hdrs.append(("Connection", "close"))
        await self.send(h11.Response(status_code=resp.status, headers=hdrs,
                                     reason=REASONS.get(resp.status, "")))
        chunks = resp.chunks
        try:
            if not head:
                async for chunk in chunks:
                    if chunk:
                        await self.send(h11.Data(data=chunk))
            await self.send(h11.EndOfMessage())
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _hijack(self, req: Request, resp: Hijack) -> None:
        if not req.body.done:
            await req.body.drain(DRAIN_LIMIT)
        extra = [("Content-Type", resp.content_type), *resp.headers]
        if req.wants_upgrade():
            hdrs = self._headers(extra) + [("Connection", "Upgrade"),
                                           ("Upgrade", req.header("upgrade") or "tcp")]
            while self.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL and \
                    self.h11.their_state is not h11.SWITCHED_PROTOCOL:
                ev = await self.next_event()
                if ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
                    break
            await self.send(h11.InformationalResponse(status_code=101, headers=hdrs,
                                                      reason=REASONS[101]))
        else:
            head = "HTTP/1.1 200 OK\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in self._headers(extra)) + "\r\n"
            self.writer.write(head.encode("latin-1"))
            await self.writer.drain()
        leftover, eof = self.h11.trailing_data
        stream = HijackedStream(self.reader, self.writer, leftover, eof)
        try:
            await resp.run(stream)
        finally:
            stream.close()


class Server:
    """Serves `app` on already-bound listening sockets."""

    def __init__(self, app: Handler, common_headers: list[tuple[str, str]]):
        self.app = app
        self.common = common_headers
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: dict[asyncio.Task, _Connection] = {}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = _Connection(reader, writer, self.app, self.common)
        if task is not None:
            self.tasks[task] = conn
        try:
            await conn.serve()
        finally:
            if task is not None:
                self.tasks.pop(task, None)

    async def listen(self, sock: Any, ssl_ctx: Any = None) -> None:
        import socket

        if sock.family == socket.AF_UNIX:
            srv = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_HEADER)
        elif ssl_ctx is not None:
            from sampan.daemon.tlsserver import start_tls_server

            srv = await start_tls_server(self._client, sock, ssl_ctx, MAX_HEADER)
        else:
            srv = await asyncio.start_server(self._client, sock=sock, limit=MAX_HEADER)
        self.servers.append(srv)

    async def close(self, grace: float = 2.0) -> None:
        for srv in self.servers:
            srv.close()
        for task, conn in list(self.tasks.items()):
            if not conn.busy:
                task.cancel()
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
