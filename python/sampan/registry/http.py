"""The HTTP client of the registry code: a small Session/Response over urllib3 alone.

It replaces `requests`, whose dependencies (charset_normalizer, idna, certifi and requests
itself) install ~1.7 MB and load ~2 MiB more into the daemon, for features the registry client
never used (cookies, .netrc, proxies from the environment, charset guessing, hooks). What is
kept is the part of requests' interface the registry client speaks:

- `Session(verify, cert)`: `request(method, url, headers, data, params, stream, timeout,
  allow_redirects)`, `get`, `post`, `close`; `headers` sent on every request. `verify` is
  True (the system CAs), False, or the path of a CA bundle; `cert` a (cert, key) pair.
- `Response`: `status_code`, `reason`, `headers` (case-insensitive), `url`, `request.method`,
  `content`, `text`, `json()`, `close()`, and `raw`, the urllib3 response to stream from
  (`raw.stream(n, decode_content=False)`, `raw.read(n, decode_content=False)`).
- errors: `RequestException` ⊃ `ConnectionError` ⊃ `SSLError`, and `Timeout`.

Bodies are bytes, a dict (form-encoded), or a file-like object with `read` and `__len__`
(streamed with that Content-Length). Redirects are followed only with `allow_redirects=True`
(the registry client follows them itself, to drop Authorization across hosts). No retries
here: the callers retry.
"""

from __future__ import annotations

import json as _json
import ssl
from http.client import responses
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as _Urllib3SSLError

MAX_REDIRECTS = 10


class RequestException(OSError):
    """Any failure to get a response (the callers' `except` for network trouble)."""


class ConnectionError(RequestException):  # noqa: A001 - requests' name, on purpose
    pass


class SSLError(ConnectionError):
    pass


class Timeout(RequestException):
    pass


def _wrap(e: BaseException) -> RequestException:
    if isinstance(e, _Urllib3SSLError) or isinstance(e, ssl.SSLError):
        return SSLError(str(e))
    if isinstance(e, (ReadTimeoutError, TimeoutError)) and not isinstance(
            e, ConnectTimeoutError):
        return Timeout(str(e))
    if isinstance(e, (NewConnectionError, ConnectTimeoutError, ProtocolError, OSError)):
        return ConnectionError(str(e))
    return RequestException(str(e))


class Response:
    def __init__(self, raw: urllib3.BaseHTTPResponse, method: str, url: str, preloaded: bool):
        self.raw = raw
        self.status_code = raw.status
        self.reason = raw.reason or responses.get(raw.status, "")
        self.headers = raw.headers
        self.url = url
        self.request = SimpleNamespace(method=method)
        self._content: bytes | None = raw.data if preloaded else None

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self.raw.read(decode_content=True)
            except (HTTPError, OSError) as e:
                raise _wrap(e) from None
            finally:
                self.raw.release_conn()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def close(self) -> None:
        # an unread streamed body: the connection cannot be reused, drop it
        if self._content is None and not self.raw.closed:
            try:
                self.raw.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self.raw.release_conn()


class Session:
    def __init__(self, verify: bool | str = True, cert: tuple[str, str] | None = None,
                 pool_maxsize: int = 16):
        self.headers: dict[str, str] = {}
        self.verify = verify
        self.cert = cert
        self.pool_maxsize = pool_maxsize
        self._pool: urllib3.PoolManager | None = None

    def _manager(self) -> urllib3.PoolManager:
        if self._pool is None:
            kw: dict[str, Any] = {"num_pools": 4, "maxsize": self.pool_maxsize,
                                  "retries": False}
            if self.verify is False:
                kw["cert_reqs"] = "CERT_NONE"
            else:
                kw["cert_reqs"] = "CERT_REQUIRED"
                if isinstance(self.verify, str):
                    kw["ca_certs"] = self.verify
            if self.cert:
                kw["cert_file"], kw["key_file"] = self.cert
            self._pool = urllib3.PoolManager(**kw)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None

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
        to = urllib3.Timeout(connect=timeout, read=timeout) if timeout else None
        for _ in range(MAX_REDIRECTS + 1):
            try:
                raw = self._manager().request(
                    method, url, body=body, headers=hdrs, redirect=False, timeout=to,
                    preload_content=not stream, decode_content=not stream)
            except (HTTPError, OSError) as e:
                raise _wrap(e) from None
            resp = Response(raw, method, url, preloaded=not stream)
            if not allow_redirects or raw.status not in (301, 302, 303, 307, 308) or \
                    "Location" not in raw.headers:
                return resp
            nxt = urljoin(url, raw.headers["Location"])
            resp.close()
            if urlsplit(nxt).netloc != urlsplit(url).netloc:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            if raw.status == 303 or (raw.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                hdrs.pop("Content-Length", None)
            url = nxt
        raise RequestException(f"{method} {url}: stopped after {MAX_REDIRECTS} redirects")
