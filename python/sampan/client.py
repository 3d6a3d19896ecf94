"""An Engine API client over a unix socket or tcp (optionally TLS with a client certificate),
built on http.client: JSON helpers, a streaming JSON-lines reader, the API version prefix,
errors carrying the daemon's message. Used by the `sampan` CLI."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

API_VERSION = "1.45"
DEFAULT_HOST = "unix:///run/sampan/sampan.sock"
HOST_ENV = "SAMPAN_HOST"


class ClientError(Exception):
    """Anything that went wrong talking to the daemon."""


class DaemonUnreachable(ClientError):
    def __init__(self, host: str, cause: BaseException):
        super().__init__(f"Cannot connect to the Sampan daemon at {host}. Is sampand running? "
                         f"({cause})")
        self.host = host
        self.cause = cause


class APIError(ClientError):
    """An error answer: `status` and the daemon's `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def from_body(cls, status: int, raw: bytes) -> APIError:
        """From an error answer's body: docker's {"message": ...}, else the text as it is."""
        msg = raw.decode("utf-8", "replace").strip()
        try:
            obj = json.loads(msg)
            if isinstance(obj, dict) and "message" in obj:
                msg = str(obj["message"])
        except ValueError:
            pass
        return cls(status, msg or f"HTTP {status}")


class StreamError(APIError):
    """An `errorDetail` line inside a streamed answer (pull, push, load)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def parse_host(host: str) -> tuple[str, str, int]:
    """("unix", path, 0) or ("tcp", host, port)."""
    host = host.strip()
    if host.startswith("unix://"):
        return "unix", host[len("unix://"):] or DEFAULT_HOST[len("unix://"):], 0
    if host.startswith("/"):
        return "unix", host, 0
    if host.startswith(("tcp://", "http://", "https://")):
        rest = host.split("://", 1)[1]
    elif "://" in host:
        raise ClientError(f"unsupported host {host!r}: use unix:///path or tcp://host:port")
    else:
        rest = host
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):
        h, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        h, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        p = int(port) if port else 2375
    except ValueError:
        raise ClientError(f"invalid host {host!r}: bad port") from None
    return "tcp", h or "127.0.0.1", p


class TLSConfig:
    def __init__(self, verify: bool = False, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None):
        self.verify = verify
        self.cacert = cacert
        self.cert = cert
        self.key = key

    def context(self) -> Any:
        import ssl

        if self.verify:
            ctx = ssl.create_default_context(cafile=self.cacert)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert and self.key:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def encode_auth(auth: dict[str, Any] | None) -> str:
    """X-Registry-Auth: base64url of the AuthConfig JSON."""
    return base64.urlsafe_b64encode(json.dumps(auth or {}).encode()).decode()


class Response:
    """A streamed answer; iterate `chunks()` or `json_lines()`, or `read()` it whole."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection):
        self.raw = resp
        self.status = resp.status
        self.headers = resp.headers
        self._conn = conn

    def read(self) -> bytes:
        return self.raw.read()

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        while True:
            data = self.raw.read1(size) if hasattr(self.raw, "read1") else self.raw.read(size)
            if not data:
                return
            yield data

    def json_lines(self) -> Iterator[dict[str, Any]]:
        """The objects of a JSON stream (one per line, or concatenated). An `errorDetail` object
        raises StreamError."""
        decoder = json.JSONDecoder()
        buf = ""
        for chunk in self.chunks():
            buf += chunk.decode("utf-8", "replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    obj, end = decoder.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                yield _check_stream(obj)
        buf = buf.strip()
        if buf:
            try:
                yield _check_stream(json.loads(buf))
            except ValueError:
                raise ClientError(f"bad JSON from the daemon: {buf[:200]!r}") from None

    def close(self) -> None:
        self.raw.close()


def _check_stream(obj: Any) -> Any:
    if isinstance(obj, dict) and (obj.get("errorDetail") or obj.get("error")):
        detail = obj.get("errorDetail") or {}
        msg = detail.get("message") or obj.get("error") or "unknown error"
        raise StreamError(int(detail.get("code") or 0), msg)
    return obj


class Client:
    def __init__(self, host: str | None = None, tls: TLSConfig | None = None,
                 timeout: float | None = None, version: str = API_VERSION):
        self.host = host or os.environ.get(HOST_ENV) or DEFAULT_HOST
        self.scheme, self.addr, self.port = parse_host(self.host)
        if self.host.startswith("https://") and tls is None:
            tls = TLSConfig()
        self.tls = tls
        self.timeout = timeout
        self.version = version
        self._conn: http.client.HTTPConnection | None = None

    # ---------------------------------------------------------------- plumbing

    def _new_conn(self) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return _UnixConnection(self.addr, self.timeout)
        if self.tls is not None:
            return http.client.HTTPSConnection(self.addr, self.port, timeout=self.timeout,
                                               context=self.tls.context())
        return http.client.HTTPConnection(self.addr, self.port, timeout=self.timeout)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        prefix = f"/v{self.version}" if self.version else ""
        q = ""
        if params:
            items = []
            for k, v in params.items():
                if v is None:
                    continue
                if isinstance(v, bool):
                    v = "1" if v else "0"
                if isinstance(v, (list, tuple)):
                    items.extend((k, str(x)) for x in v)
                else:
                    items.append((k, str(v)))
            if items:
                q = "?" + urlencode(items)
        return prefix + path + q

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                body: Any = None, headers: dict[str, str] | None = None,
                stream: bool = False) -> Response:
        """Send a request; error answers raise APIError. `body`: bytes, a dict/list (sent as
        JSON), or a binary file / iterable of bytes (sent chunked)."""
        hdrs = {"User-Agent": "sampan-cli", **(headers or {})}
        data: Any = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = body
        target = self.url(path, params)
        for attempt in (0, 1):
            conn = self._conn
            fresh = conn is None
            if conn is None:
                conn = self._conn = self._new_conn()
            try:
                chunked = data is not None and not isinstance(data, (bytes, bytearray))
                if chunked and "Content-Length" in hdrs:
                    chunked = False
                conn.request(method, target, body=data, headers=hdrs, encode_chunked=chunked)
                resp = conn.getresponse()
                break
            except (ConnectionRefusedError, FileNotFoundError, socket.gaierror,
                    PermissionError) as e:
                self.close()
                raise DaemonUnreachable(self.host, e) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # a kept-alive connection the daemon closed: retry once on a new one
                self.close()
                if fresh or attempt or (data is not None and not isinstance(
                        data, (bytes, bytearray))):
                    raise DaemonUnreachable(self.host, e) from None
            except OSError as e:
                self.close()
                if type(e).__name__.startswith("SSL"):
                    raise ClientError(f"TLS with {self.host} failed: {e}") from None
                raise DaemonUnreachable(self.host, e) from None
        r = Response(resp, conn)
        if r.status >= 400:
            raw = r.read()
            self._after(resp)
            raise APIError.from_body(r.status, raw)
        if not stream:
            data_out = r.read()
            self._after(resp)
            r._body = data_out  # type: ignore[attr-defined]
        return r

    def _after(self, resp: http.client.HTTPResponse) -> None:
        if resp.will_close:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    # ---------------------------------------------------------------- helpers

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json_body(self.request("GET", path, params))

    def post_json(self, path: str, params: dict[str, Any] | None = None, body: Any = None,
                  headers: dict[str, str] | None = None) -> Any:
        return _json_body(self.request("POST", path, params, body, headers))

    def delete_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json_body(self.request("DELETE", path, params))

    def stream_json(self, method: str, path: str, params: dict[str, Any] | None = None,
                    body: Any = None, headers: dict[str, str] | None = None
                    ) -> Iterator[dict[str, Any]]:
        r = self.request(method, path, params, body, headers, stream=True)
        try:
            yield from r.json_lines()
        finally:
            self._after(r.raw)
            if not r.raw.isclosed():
                # abandoned mid-stream: this connection cannot be reused
                self.close()

    # ---------------------------------------------------------------- the API

    def ping(self) -> bool:
        return _body(self.request("GET", "/_ping")) == b"OK"

    def version_info(self) -> dict[str, Any]:
        return self.get_json("/version")

    def info(self) -> dict[str, Any]:
        return self.get_json("/info")

    def df(self) -> dict[str, Any]:
        return self.get_json("/system/df")

    def images(self, all: bool = False, filters: dict[str, list[str]] | None = None,
               digests: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"all": all}
        if filters:
            params["filters"] = json.dumps({k: {v: True for v in vs} for k, vs in
                                            filters.items()})
        if digests:
            params["digests"] = True
        return self.get_json("/images/json", params)

    def inspect_image(self, name: str) -> dict[str, Any]:
        return self.get_json(f"/images/{_p(name)}/json")

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.get_json(f"/images/{_p(name)}/history")

    def tag(self, name: str, repo: str, tag: str | None) -> None:
        self.request("POST", f"/images/{_p(name)}/tag", {"repo": repo, "tag": tag})

    def remove_image(self, name: str, force: bool = False,
                     noprune: bool = False) -> list[dict[str, Any]]:
        return self.delete_json(f"/images/{_p(name)}", {"force": force, "noprune": noprune})

    def prune_images(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        params = {}
        if filters:
            params["filters"] = json.dumps({k: {v: True for v in vs} for k, vs in
                                            filters.items()})
        return self.post_json("/images/prune", params)

    def pull(self, name: str, tag: str | None, platform: str | None = None,
             auth: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        params = {"fromImage": name, "tag": tag, "platform": platform}
        return self.stream_json("POST", "/images/create", params,
                                headers={"X-Registry-Auth": encode_auth(auth)})

    def push(self, name: str, tag: str | None,
             auth: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        return self.stream_json("POST", f"/images/{_p(name)}/push", {"tag": tag},
                                headers={"X-Registry-Auth": encode_auth(auth)})

    def save(self, names: list[str]) -> Response:
        return self.request("GET", "/images/get", {"names": names}, stream=True)

    def load(self, data: BinaryIO | Iterable[bytes] | bytes, quiet: bool = False,
             size: int | None = None) -> Iterator[dict[str, Any]]:
        headers = {"Content-Type": "application/x-tar"}
        if size is not None:
            headers["Content-Length"] = str(size)
        return self.stream_json("POST", "/images/load", {"quiet": quiet}, body=data,
                                headers=headers)

    def login(self, auth: dict[str, Any]) -> dict[str, Any]:
        return self.post_json("/auth", body=auth)

    def hijack(self, path: str, params: dict[str, Any] | None = None,
               body: Any = None) -> Hijacked:
        """POST asking for a connection upgrade (attach, exec start); the raw connection
        after the daemon's 101 (or docker's plain 200). Error answers raise APIError."""
        conn = self._new_conn()
        try:
            conn.connect()
        except (ConnectionRefusedError, FileNotFoundError, socket.gaierror,
                PermissionError) as e:
            raise DaemonUnreachable(self.host, e) from None
        sock = conn.sock
        data = json.dumps(body).encode() if body is not None else b""
        host = "localhost" if self.scheme == "unix" else self.addr
        head = (f"POST {self.url(path, params)} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: sampan-cli\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        sock.settimeout(None)
        sock.sendall(head.encode("latin-1") + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise ClientError("the daemon closed the connection before answering")
            buf += chunk
            if len(buf) > 65536:
                sock.close()
                raise ClientError("the daemon's answer has no end of headers")
        head_b, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            sock.close()
            raise ClientError(f"bad answer from the daemon: {lines[0]!r}") from None
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if status >= 400:
            n = int(headers.get("content-length") or 0)
            while len(rest) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            sock.close()
            raise APIError.from_body(status, rest)
        return Hijacked(sock, rest, headers)

    def fork(self) -> Client:
        """A client to the same daemon on its own connection (for a second request while a
        stream is open)."""
        return Client(self.host, tls=self.tls, timeout=self.timeout, version=self.version)


class Hijacked:
    """A hijacked connection: bytes from the daemon (`leftover` first), bytes to it."""

    def __init__(self, sock: socket.socket, leftover: bytes, headers: dict[str, str]):
        self.sock = sock
        self.leftover = leftover
        self.headers = headers

    def recv(self, n: int = 65536) -> bytes:
        if self.leftover:
            out, self.leftover = self.leftover[:n], self.leftover[n:]
            return out
        return self.sock.recv(n)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        if hasattr(self.sock, "unwrap"):
            self._close_notify()
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError, NotImplementedError):
            pass

    def _close_notify(self) -> None:
        """TLS's half-close, as docker's CloseWrite: send close_notify and keep reading.
        (SSLSocket.shutdown would drop the TLS layer, and a blocking unwrap would wait for the
        daemon's close_notify, throwing away the output meanwhile.) Non-blocking, unwrap sends
        the alert and stops at "want read", leaving the TLS session in place for reads."""
        import ssl

        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            self.sock.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            pass
        finally:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _p(name: str) -> str:
    """A name in a path: slashes stay (the daemon routes them), the rest is escaped."""
    return quote(name, safe="/:@")


def _body(r: Response) -> bytes:
    return getattr(r, "_body", b"")


def _json_body(r: Response) -> Any:
    data = _body(r)
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise ClientError(f"bad JSON from the daemon: {data[:200]!r}") from None
