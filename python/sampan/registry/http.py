"""The HTTP client of the registry code: a small Session/Response over the standard library's
http.client, with keep-alive connections pooled per host.

It replaces `requests` and `urllib3`, which with their dependencies install ~2.2 MB — over a
quarter of a router's budget (issue 6) — for features the registry client never used (cookies,
.netrc, proxies from the environment, charset guessing, hooks, transparent decompression).
What is kept is the part of requests' interface the registry client speaks:

- `Session(verify, cert)`: `request(method, url, headers, data, params, stream, timeout,
  allow_redirects)`, `get`, `post`, `close`; `headers` sent on every request. `verify` is
  True (the system CAs), False, or the path of a CA bundle; `cert` a (cert, key) pair.
- `Response`: `status_code`, `reason`, `headers` (case-insensitive), `url`, `request.method`,
  `content`, `text`, `json()`, `close()`, and `raw` to stream the body from
  (`raw.stream(n)`, `raw.read(n)`; bytes as sent: no Accept-Encoding is ever asked for).
- errors: `RequestException` (an OSError) ⊃ `ConnectionError` ⊃ `SSLError`, and `Timeout`.

Bodies are bytes, a dict (form-encoded), or a file-like object with `read` and `__len__`
(streamed with that Content-Length). Redirects are followed only with `allow_redirects=True`
(the registry client follows them itself, to drop Authorization across hosts). No retries,
except once on a pooled connection the server had closed meanwhile (as urllib3 does): the
callers retry the rest.
"""

from __future__ import annotations

import http.client
import json as _json
import os
import ssl
import threading
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

MAX_REDIRECTS = 10
BLOCK = 256 * 1024                 # upload reads and socket buffer
IDLE_PER_HOST = 16
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem",
                   "/etc/pki/tls/certs/ca-bundle.crt")


class RequestException(OSError):
    """Any failure to get a response (the callers' `except` for network trouble)."""


class ConnectionError(RequestException):  # noqa: A001 - requests' name, on purpose
    pass


class SSLError(ConnectionError):
    pass


class Timeout(RequestException):
    pass


# what a read of a response body can raise (pull.py resumes after these)
BODY_ERRORS = (http.client.HTTPException, OSError)


def _wrap(e: BaseException, connecting: bool) -> RequestException:
    if isinstance(e, RequestException):
        return e
    if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
        return SSLError(str(e))
    if isinstance(e, TimeoutError) and not connecting:
        return Timeout(f"read timed out: {e}")
    return ConnectionError(str(e) or type(e).__name__)


class Raw:
    """The body of a streamed response, read as it arrives."""

    def __init__(self, resp: http.client.HTTPResponse, done):
        self._resp = resp
        self._done = done           # called once with True when fully read, False if cut

    @property
    def closed(self) -> bool:
        return self._resp.isclosed()

    def read(self, amt: int | None = None, decode_content: bool = False) -> bytes:
        data = self._resp.read(amt) if amt is not None else self._resp.read()
        if self._resp.isclosed():
            self._done(True)
        return data

    def stream(self, amt: int = BLOCK, decode_content: bool = False):
        while True:
            data = self.read(amt)
            if not data:
                return
            yield data


class Response:
    def __init__(self, resp: http.client.HTTPResponse, method: str, url: str, release,
                 stream: bool):
        self.status_code = resp.status
        self.reason = resp.reason or http.client.responses.get(resp.status, "")
        self.headers = resp.headers         # http.client.HTTPMessage: case-insensitive
        self.url = url
        self.request = SimpleNamespace(method=method)
        released = []

        # shared by the response and its body without a reference cycle: a dropped response
        # closes its socket at once (refcounting), not at some later garbage collection
        def end(reusable: bool) -> None:
            if not released:
                released.append(True)
                release(reusable)

        self._end = end
        self.raw = Raw(resp, end)
        self._content: bytes | None = None
        if not stream:
            self.content  # noqa: B018 - read now: the connection goes back to the pool

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self.raw.read()
            except BODY_ERRORS as e:
                self._end(False)
                raise _wrap(e, False) from None
            self._end(True)
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def close(self) -> None:
        # an unread body: the connection cannot carry another request, drop it
        self._end(self.raw.closed)


class Session:
    def __init__(self, verify: bool | str = True, cert: tuple[str, str] | None = None,
                 pool_maxsize: int = IDLE_PER_HOST):
        self.headers: dict[str, str] = {}
        self.verify = verify
        self.cert = cert
        self.pool_maxsize = pool_maxsize
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ctx: ssl.SSLContext | None = None

    # ---- connections ----------------------------------------------------------------------
    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            if self.verify is False:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif isinstance(self.verify, str):
                ctx = ssl.create_default_context(cafile=self.verify)
            else:
                ctx = ssl.create_default_context()
                if not ctx.cert_store_stats().get("x509_ca"):
                    # OpenSSL built with another default directory (routers): the bundle
                    for path in SYSTEM_CA_FILES:
                        if os.path.exists(path):
                            ctx.load_verify_locations(cafile=path)
                            break
            if self.cert:
                ctx.load_cert_chain(*self.cert)
            self._ctx = ctx
        return self._ctx

    def _connect(self, key: tuple, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self._context(), blocksize=BLOCK)
        return http.client.HTTPConnection(host, port, timeout=timeout, blocksize=BLOCK)

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.pool_maxsize:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()

    # ---- requests -------------------------------------------------------------------------
    def get(self, url: str, **kw: Any) -> Response:
        kw.setdefault("allow_redirects", True)
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                data: Any = None, params: Any = None, stream: bool = False,
                timeout: float | None = None, allow_redirects: bool = False) -> Response:
        if params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(params, doseq=True)
        hdrs = dict(self.headers)
        hdrs.update(headers or {})
        body: Any = data
        if isinstance(data, dict):
            body = urlencode(data).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if body is not None and not any(k.lower() == "content-length" for k in hdrs):
            try:
                hdrs["Content-Length"] = str(len(body))
            except TypeError:
                pass                      # an iterable without a length: sent chunked
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._once(method, url, hdrs, body, stream or allow_redirects, timeout)
            if not allow_redirects or resp.status_code not in (301, 302, 303, 307, 308) or \
                    "Location" not in resp.headers:
                if allow_redirects and not stream:
                    resp.content  # noqa: B018 - as asked: read now
                return resp
            nxt = urljoin(url, resp.headers["Location"])
            resp.close()
            if urlsplit(nxt).netloc != urlsplit(url).netloc:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, body = "GET", None
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "content-length"}
            url = nxt
        raise RequestException(f"{method} {url}: stopped after {MAX_REDIRECTS} redirects")

    def _once(self, method: str, url: str, hdrs: dict[str, str], body: Any, stream: bool,
              timeout: float | None) -> Response:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise RequestException(f"unsupported URL {url!r}")
        key = (u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80))
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        replayable = body is None or isinstance(body, (bytes, bytearray))
        conn = self._take(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(key, timeout)
            else:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            connecting = conn.sock is None
            try:
                if connecting:
                    conn.connect()
                    connecting = False
                conn.request(method, target, body=body, headers=hdrs)
                raw = conn.getresponse()
                break
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                stale = reused and isinstance(e, (http.client.RemoteDisconnected,
                                                  ConnectionResetError, BrokenPipeError))
                if stale and replayable:
                    conn, reused = None, False      # the server closed an idle connection
                    continue
                raise _wrap(e, connecting) from None

        def release(reusable: bool, conn=conn) -> None:
            if reusable and not raw.will_close:
                self._give(key, conn)
            else:
                conn.close()

        return Response(raw, method, url, release, stream)
