"""The HTTP side of the registry API (OCI distribution / Docker Registry HTTP API v2).

`Registry` is one endpoint (scheme + host) with its session, its `/v2/` ping and its
authenticator; `Repository` is one repository on it. Every request:
  * carries the Authorization the endpoint's challenge asks for (a token for the scopes the
    operation needs), refreshed once when the registry answers 401;
  * is retried with exponential backoff on connection errors, 5xx and 429 when it can be
    (GET/HEAD always, bodies only when they can be replayed);
  * follows redirects itself, dropping Authorization when the redirect leaves the registry's
    host (blob downloads are commonly redirected to a CDN or object store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Callable, Union
from urllib.parse import urlencode, urljoin, urlsplit

from sampan.errors import NotFound, RegistryError, Unauthorized
from sampan.registry import http
from sampan.registry.auth import Authenticator, TokenCache, _registry_message, repository_scope
from sampan.registry.config import Endpoint, RegistryConfig

log = logging.getLogger("sampan.registry")

USER_AGENT = "sampan/0.1 (docker-compatible)"
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10

Body = Union[None, bytes, Callable[[], object]]


class ConnectError(RegistryError):
    """The endpoint could not be reached at all (TLS, refused, DNS): try the next one."""


def _describe(e: Exception) -> str:
    s = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in s:
        if "unable to get local issuer" in s or "self-signed" in s or "self signed" in s:
            return ("tls: failed to verify certificate: x509: certificate signed by unknown "
                    "authority")
        if "Hostname mismatch" in s or "doesn't match" in s:
            return "tls: failed to verify certificate: x509: certificate is not valid for host"
        return "tls: failed to verify certificate"
    if "Connection refused" in s:
        return "connect: connection refused"
    if "Name or service not known" in s or "Temporary failure in name resolution" in s:
        return "dial tcp: lookup failed: no such host"
    return s if len(s) < 300 else s[:300] + "…"


def make_session(endpoint: Endpoint) -> http.Session:
    # no proxies from the environment, no .netrc: only what the daemon is configured with
    s = http.Session(endpoint.verify, endpoint.cert, pool_maxsize=16)
    s.headers["User-Agent"] = USER_AGENT
    return s


class Registry:
    """One registry endpoint: session, ping, auth, retried requests."""

    def __init__(self, endpoint: Endpoint, config: RegistryConfig, creds: dict | None,
                 tokens: TokenCache | None = None):
        self.endpoint = endpoint
        self.config = config
        self.session = make_session(endpoint)
        self.auth = Authenticator(self.session, creds, tokens or TokenCache(), config.timeout)
        self.pinged = False
        self._ping_lock = threading.Lock()

    @property
    def base(self) -> str:
        return self.endpoint.url

    def close(self) -> None:
        self.session.close()

    # ---- ping ---------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: learn the auth challenge. Raises ConnectError when unreachable."""
        with self._ping_lock:
            if self.pinged:
                return
            url = self.base + "/v2/"
            last: Exception | None = None
            for attempt in range(max(1, self.config.max_download_attempts)):
                try:
                    resp = self.session.get(url, timeout=self.config.timeout,
                                            allow_redirects=True)
                except (http.SSLError, http.ConnectionError) as e:
                    # TLS failures, refused connections: try the next endpoint right away
                    raise ConnectError(f"Get \"{url}\": {_describe(e)}") from None
                except http.RequestException as e:
                    last = e
                    self._sleep(attempt)
                    continue
                if resp.status_code in RETRY_STATUS:
                    last = RegistryError(f"Get \"{url}\": {resp.status_code} {resp.reason}")
                    resp.close()
                    self._sleep(attempt)
                    continue
                break
            else:
                raise ConnectError(f"Get \"{url}\": {_describe(last)}")
            if resp.status_code == 401:
                self.auth.update(resp.headers.get("WWW-Authenticate", ""))
            elif resp.status_code >= 500:
                resp.close()
                raise ConnectError(f"Get \"{url}\": the registry answered {resp.status_code} "
                                   f"{resp.reason}")
            resp.close()
            self.pinged = True

    def login(self) -> None:
        """Check credentials: ping, then obtain an authorization for no particular scope."""
        self.ping()
        c = self.auth.challenge
        url = self.base + "/v2/"
        if c is None:
            return
        if c.scheme == "bearer":
            self.auth.fetch_token([])
            return
        hdr = self.auth.header([])
        resp = self.session.get(url, headers={"Authorization": hdr} if hdr else {},
                                timeout=self.config.timeout)
        if resp.status_code == 401:
            raise Unauthorized(f"login attempt to {url} failed with status: 401 Unauthorized")
        if resp.status_code >= 400:
            raise RegistryError(f"login attempt to {url} failed with status: "
                                f"{resp.status_code} {resp.reason}")

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.config.backoff * (2 ** attempt), 4.0))

    # ---- requests -----------------------------------------------------------------------
    def request(self, method: str, url: str, scopes: Sequence[str], *,
                headers: dict[str, str] | None = None, body: Body = None,
                stream: bool = False, retry: bool = True,
                ok: Iterable[int] = ()) -> http.Response:
        """Send one API request; `url` absolute or a path below the endpoint.

        Returns the final response (after redirects), whatever its status: the caller checks
        it. Raises RegistryError when the registry stays unreachable or keeps failing,
        Unauthorized when it refuses the credentials.
        """
        self.ping()
        if not url.startswith(("http://", "https://")):
            url = self.base + url
        replayable = body is None or isinstance(body, bytes) or callable(body)
        attempts = max(1, self.config.max_download_attempts) if retry and replayable else 1
        authed_retry = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self.auth.header(scopes)
            if auth:
                hdrs["Authorization"] = auth
            data = body() if callable(body) else body
            try:
                resp = self._send(method, url, hdrs, data, stream)
            except http.RequestException as e:
                attempt += 1
                if attempt >= attempts:
                    raise RegistryError(f"{method.capitalize()} \"{url}\": "
                                        f"{_describe(e)}") from None
                log.info("%s %s: %s; retrying", method, url, e)
                self._sleep(attempt - 1)
                continue
            if resp.status_code == 401:
                www = resp.headers.get("WWW-Authenticate", "")
                if not authed_retry and (www or auth):
                    authed_retry = True
                    if www:
                        self.auth.update(www)
                    self.auth.invalidate(scopes)
                    resp.close()
                    if callable(body) or body is None or isinstance(body, bytes):
                        continue
                return resp
            if resp.status_code in RETRY_STATUS and resp.status_code not in ok:
                attempt += 1
                if attempt < attempts:
                    log.info("%s %s: %s; retrying", method, url, resp.status_code)
                    resp.close()
                    self._sleep(attempt - 1)
                    continue
            return resp

    def _send(self, method, url, headers, data, stream) -> http.Response:
        """One request, following redirects without leaking Authorization to other hosts."""
        origin = urlsplit(url)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self.session.request(method, url, headers=headers, data=data, stream=stream,
                                        allow_redirects=False, timeout=self.config.timeout)
            if resp.status_code not in REDIRECTS or "Location" not in resp.headers:
                return resp
            loc = urljoin(url, resp.headers["Location"])
            resp.close()
            nxt = urlsplit(loc)
            if (nxt.scheme, nxt.hostname, nxt.port) != (origin.scheme, origin.hostname,
                                                        origin.port):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, data = "GET", None
            url = loc
        raise RegistryError(f"{method} {url}: stopped after {MAX_REDIRECTS} redirects")


class Repository:
    """A repository on a registry endpoint."""

    def __init__(self, registry: Registry, path: str, actions: Sequence[str] = ("pull",)):
        self.registry = registry
        self.path = path
        self.actions = tuple(actions)

    @property
    def scopes(self) -> list[str]:
        return [repository_scope(self.path, self.actions)]

    def url(self, kind: str, ref: str = "") -> str:
        return f"/v2/{self.path}/{kind}/{ref}" if ref else f"/v2/{self.path}/{kind}/"

    def request(self, method, url, extra_scopes: Sequence[str] = (), **kw) -> http.Response:
        return self.registry.request(method, url, self.scopes + list(extra_scopes), **kw)

    # ---- errors -------------------------------------------------------------------------
    def error(self, resp: http.Response, what: str) -> Exception:
        """An exception for a failed response, with docker-like messages."""
        msg = _registry_message(resp)
        status = resp.status_code
        resp.close()
        if status == 401:
            detail = msg or "authentication required"
            if not detail.startswith("unauthorized"):
                detail = "unauthorized: " + detail
            return Unauthorized(f"{what}: {detail}")
        if status == 403:
            denied = "denied: requested access to the resource is denied"
            return Unauthorized(f"{what}: {msg or denied}")
        if status == 404:
            return NotFound(f"{what}: {msg or 'not found'}")
        return RegistryError(f"{what}: {resp.request.method if resp.request else ''} "
                             f"{resp.url}: {status} {resp.reason}"
                             + (f": {msg}" if msg else ""))

    # ---- manifests ----------------------------------------------------------------------
    def get_manifest(self, ref: str, accept: Sequence[str]) -> tuple[bytes, str, str | None]:
        """GET a manifest: (body, media type, Docker-Content-Digest header or None)."""
        resp = self.request("GET", self.url("manifests", ref),
                            headers={"Accept": ", ".join(accept)})
        if resp.status_code != 200:
            raise self.error(resp, f"manifest {self.path}:{ref}")
        body = resp.content
        mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return body, mt, resp.headers.get("Docker-Content-Digest")

    def head_manifest(self, ref: str, accept: Sequence[str]) -> tuple[str, int, str] | None:
        resp = self.request("HEAD", self.url("manifests", ref),
                            headers={"Accept": ", ".join(accept)})
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            raise self.error(resp, f"manifest {self.path}:{ref}")
        resp.close()
        return (resp.headers.get("Docker-Content-Digest", ""),
                int(resp.headers.get("Content-Length") or 0),
                resp.headers.get("Content-Type", ""))

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> str:
        resp = self.request("PUT", self.url("manifests", ref), body=body,
                            headers={"Content-Type": media_type})
        if resp.status_code not in (200, 201, 202):
            raise self.error(resp, f"manifest put {self.path}:{ref}")
        resp.close()
        return resp.headers.get("Docker-Content-Digest", "")

    # ---- tags ---------------------------------------------------------------------------
    def tags(self, page_size: int = 1000, max_pages: int = 1000) -> list[str]:
        """Every tag of the repository (`GET /v2/<name>/tags/list`), following the `Link:
        <…>; rel="next"` pages that registries (Docker Hub among them) paginate with."""
        url = self.url("tags", "list") + "?" + urlencode({"n": page_size})
        out: list[str] = []
        seen: set[str] = set()
        for _ in range(max_pages):
            resp = self.request("GET", url)
            if resp.status_code != 200:
                raise self.error(resp, f"tags of {self.path}")
            try:
                doc = resp.json()
            except ValueError as e:
                resp.close()
                raise RegistryError(f"tags of {self.path}: invalid JSON: {e}") from None
            resp.close()
            tags = doc.get("tags") if isinstance(doc, dict) else None
            for t in tags or []:
                if isinstance(t, str) and t not in seen:
                    seen.add(t)
                    out.append(t)
            nxt = _next_link(resp.headers.get("Link", ""))
            if not nxt or not tags:
                return out
            url = urljoin(self.registry.base + "/", nxt)
        raise RegistryError(f"tags of {self.path}: more than {max_pages} pages")

    # ---- blobs --------------------------------------------------------------------------
    def blob_size(self, digest: str) -> int | None:
        """HEAD a blob: its size, or None when the repository has no such blob."""
        resp = self.request("HEAD", self.url("blobs", digest))
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            raise self.error(resp, f"blob {digest}")
        resp.close()
        return int(resp.headers.get("Content-Length") or 0)

    def get_blob(self, digest: str, offset: int = 0) -> http.Response:
        """Open a blob for streaming from `offset` (Range); the response is 200 or 206."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", self.url("blobs", digest), headers=headers, stream=True)
        if resp.status_code not in (200, 206):
            if resp.status_code == 416 and offset:
                return resp
            raise self.error(resp, f"blob {digest}")
        return resp

    def mount_blob(self, digest: str, from_path: str) -> str | None:
        """Cross-repository mount. Returns None if mounted, else the upload URL to use."""
        q = urlencode({"mount": digest, "from": from_path})
        resp = self.request("POST", self.url("blobs", "uploads/") + "?" + q,
                            extra_scopes=[repository_scope(from_path, ["pull"])], body=b"",
                            headers={"Content-Length": "0"})
        if resp.status_code == 201:
            resp.close()
            return None
        if resp.status_code == 202:
            resp.close()
            return resp.headers.get("Location")
        raise self.error(resp, f"blob mount {digest} from {from_path}")

    def start_upload(self) -> str:
        resp = self.request("POST", self.url("blobs", "uploads/"), body=b"",
                            headers={"Content-Length": "0"})
        if resp.status_code != 202:
            raise self.error(resp, "blob upload")
        resp.close()
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError("blob upload: the registry gave no upload location")
        return loc

    def _upload_url(self, loc: str, **params) -> str:
        url = urljoin(self.registry.base + "/", loc)
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return url

    def upload_monolithic(self, location: str, digest: str, size: int,
                          body: Callable[[], object]) -> None:
        resp = self.request("PUT", self._upload_url(location, digest=digest), body=body,
                            headers={"Content-Type": "application/octet-stream"})
        if resp.status_code not in (201, 204):
            raise self.error(resp, f"blob upload {digest}")
        resp.close()

    def upload_chunk(self, location: str, start: int, data: bytes) -> str:
        """PATCH one chunk; returns the next upload location."""
        end = start + len(data) - 1
        resp = self.request("PATCH", self._upload_url(location), body=data, retry=False,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Range": f"{start}-{end}",
                                     "Content-Length": str(len(data))})
        if resp.status_code != 202:
            raise self.error(resp, f"blob upload chunk {start}-{end}")
        resp.close()
        return resp.headers.get("Location") or location

    def finish_upload(self, location: str, digest: str) -> None:
        resp = self.request("PUT", self._upload_url(location, digest=digest), body=b"",
                            retry=False, headers={"Content-Length": "0"})
        if resp.status_code not in (201, 204):
            raise self.error(resp, f"blob upload {digest}")
        resp.close()


def _next_link(header: str) -> str | None:
    """The target of `rel="next"` in an RFC 8288 Link header, if any."""
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        rels = [p.strip() for p in params.split(";")]
        if any(r.replace(" ", "") in ('rel="next"', "rel=next") for r in rels):
            return target[1:-1]
    return None
