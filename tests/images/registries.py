"""Real registries on loopback for the registry-client tests, and the tools around them.

* `Registry`: Debian's `docker-registry` (distribution v2) three ways — plain HTTP;
  htpasswd Basic auth over TLS with a CA made here (openssl); token auth, its JWTs issued by
  `TokenServer` (the Docker token spec, RS256, key id in libtrust's format) and verified by the
  registry (`auth.token` realm/service/issuer/rootcertbundle).
* `FaultProxy`: an HTTP proxy in front of a registry that can answer 500s, cut a connection
  in the middle of a body, send a short body, corrupt a byte, replace a response, or redirect
  blob downloads to `BlobHost` (another loopback address that records the headers it gets).
* `skopeo()`: the real skopeo, for interop.
* `FakeGraph`: a stand-in for `sampan.graph.Graph` (the real ContentStore, layers recorded
  by diff id) used until the graph's own Graph is there.

Everything listens on 127.0.0.x only.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO_BIN = shutil.which("skopeo")
OPENSSL_BIN = shutil.which("openssl")
SERVICE = "sampan-test-registry"
ISSUER = "sampan-test-issuer"
USERS = {"alice": "wonderland", "bob": "builder"}

needs_registry = pytest.mark.skipif(not os.path.exists(REGISTRY_BIN) or OPENSSL_BIN is None,
                                    reason="docker-registry and openssl are needed "
                                           "(apt-get install docker-registry openssl)")
needs_skopeo = pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 15.0, proc=None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not open")


# ---- keys, certificates, passwords -------------------------------------------------------

def _openssl(*args, cwd=None) -> bytes:
    return subprocess.run([OPENSSL_BIN, *args], check=True, capture_output=True,
                          cwd=cwd).stdout


class CA:
    """A certificate authority in `dir`, and server certificates it signs."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.crt"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                 "-out", str(self.cert), "-days", "2", "-subj", "/CN=Sampan test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def server_cert(self, name: str, sans: list[str]) -> tuple[Path, Path]:
        key, csr, crt = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                         self.dir / f"{name}.crt")
        ext = self.dir / f"{name}.ext"
        alt = ",".join(("IP:" if re.match(r"^[0-9.]+$", s) else "DNS:") + s for s in sans)
        ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={sans[0]}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
        return crt, key


def libtrust_key_id(der_public_key: bytes) -> str:
    """The key id distribution's token verifier derives from a public key (libtrust format):
    base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in groups of four."""
    b32 = base64.b32encode(hashlib.sha256(der_public_key).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (what distribution's htpasswd accepts), through libcrypt."""
    lib = ctypes.util.find_library("crypt")
    if lib:
        libc = ctypes.CDLL(lib)
        libc.crypt.restype = ctypes.c_char_p
        libc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        salt = "$2b$05$" + "".join(secrets.choice(alphabet) for _ in range(21)) + "."
        out = libc.crypt(password.encode(), salt.encode())
        if out and out.startswith(b"$2"):
            return out.decode()
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        out = subprocess.run([htpasswd, "-nbB", "x", password], check=True,
                             capture_output=True, text=True).stdout
        return out.strip().split(":", 1)[1]
    pytest.skip("no bcrypt implementation (libcrypt or htpasswd) for the htpasswd registry")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- the token server --------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return                          # clients that went away (cut tests, kills)
        super().handle_error(request, client_address)


class TokenServer:
    """The Docker token spec: GET /token?service=&scope=… (Basic auth optional), POST /token
    (OAuth2 password and refresh_token grants). alice may push and pull everything; bob only
    pulls; anonymous users pull repositories under "public/"."""

    def __init__(self, dir: Path, expires_in: int = 300):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "token.key"
        self.cert = self.dir / "token.crt"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                 "-out", str(self.cert), "-days", "2", "-subj", "/CN=sampan token issuer")
        der = _openssl("pkey", "-in", str(self.key), "-pubout", "-outform", "DER")
        self.kid = libtrust_key_id(der)
        self.expires_in = expires_in
        self.requests: list[dict] = []
        self.refresh_tokens: dict[str, str] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/token"
        self.server = _Server(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        sig = subprocess.run([OPENSSL_BIN, "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        return signing_input + "." + b64url(sig)

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), parts[-1].split(",")
            if user == "alice":
                allowed = ["pull", "push"]
            elif user == "bob":
                allowed = ["pull"]
            else:
                allowed = ["pull"] if name.startswith("public/") else []
            actions = [a for a in wanted if a in allowed]
            access.append({"type": "repository", "name": name, "actions": actions})
        return access

    def issue(self, user: str | None, service: str, scopes: list[str]) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": service, "exp": now +
                  self.expires_in, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": self.grant(user, scopes)}
        tok = self.sign(claims)
        return {"token": tok, "access_token": tok, "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def _handler(self):
        ts = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _user(self):
                h = self.headers.get("Authorization", "")
                if not h.startswith("Basic "):
                    return None, True
                user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
                return user, USERS.get(user) == pw

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                user, ok = self._user()
                ts.requests.append({"method": "GET", "user": user, "scopes": q.get("scope", []),
                                    "service": q.get("service", [""])[0],
                                    "authorization": self.headers.get("Authorization")})
                if not ok:
                    return self._answer(401, {"details": "incorrect username or password"})
                self._answer(200, ts.issue(user, q.get("service", [""])[0],
                                           q.get("scope", [])))

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                f = {k: v[0] for k, v in form.items()}
                scopes = f.get("scope", "").split()
                ts.requests.append({"method": "POST", "grant": f.get("grant_type"),
                                    "scopes": scopes, "service": f.get("service", "")})
                if f.get("grant_type") == "password":
                    if USERS.get(f.get("username", "")) != f.get("password"):
                        return self._answer(401, {"details": "incorrect username or password"})
                    user = f["username"]
                    rt = secrets.token_hex(16)
                    ts.refresh_tokens[rt] = user
                elif f.get("grant_type") == "refresh_token":
                    user = ts.refresh_tokens.get(f.get("refresh_token", ""))
                    if user is None:
                        return self._answer(401, {"details": "invalid refresh token"})
                    rt = f["refresh_token"]
                else:
                    return self._answer(400, {"details": "unsupported grant"})
                body = ts.issue(user, f.get("service", ""), scopes)
                body["refresh_token"] = rt
                self._answer(200, body)

        return Handler


# ---- the registry ------------------------------------------------------------------------

class Registry:
    """docker-registry on loopback. mode: "plain", "basic" (htpasswd over TLS), "token"."""

    def __init__(self, dir: Path, mode: str = "plain", token_server: TokenServer | None = None,
                 ca: CA | None = None):
        self.dir = Path(dir)
        self.mode = mode
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage = self.dir / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ca = ca
        self.tls = mode == "basic"
        cfg = [
            "version: 0.1",
            "log:", "  level: error", "  accesslog:", "    disabled: true",
            "storage:", "  filesystem:", f"    rootdirectory: {self.storage}",
            "  delete:", "    enabled: true",
            "  maintenance:", "    uploadpurging:", "      enabled: false",
            "http:", f"  addr: 127.0.0.1:{self.port}", f"  secret: {secrets.token_hex(16)}",
            "  headers:", "    X-Content-Type-Options: [nosniff]",
        ]
        if self.tls:
            assert ca is not None
            crt, key = ca.server_cert("registry", ["127.0.0.1", "localhost"])
            cfg += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        cfg += ["health:", "  storagedriver:", "    enabled: false"]
        if mode == "basic":
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in USERS.items()))
            cfg += ["auth:", "  htpasswd:", "    realm: sampan-test", f"    path: {htpasswd}"]
        elif mode == "token":
            assert token_server is not None
            cfg += ["auth:", "  token:", f"    realm: {token_server.url}",
                    f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                    f"    rootcertbundle: {token_server.cert}"]
        self.config = self.dir / "config.yml"
        self.config.write_text("\n".join(cfg) + "\n")
        self.log = open(self.dir / "registry.log", "wb")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_port("127.0.0.1", self.port, proc=self.proc)
        except RuntimeError:
            self.close()
            raise RuntimeError("docker-registry did not start: " +
                               (self.dir / "registry.log").read_text()[-2000:]) from None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def blob_path(self, digest: str) -> Path:
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ---- fault-injecting proxy and redirect target -------------------------------------------

class Fault:
    """What the proxy does to requests matching `method` and the `path` regex.

    kind: "status" (answer `status`), "cut" (send headers and `after` bytes of the body, then
    drop the connection), "short" (announce and send the body minus its last `after` bytes),
    "corrupt" (flip one byte of the body), "replace" (answer `body` with `content_type`),
    "redirect" (307 to `location` + the request path), "slow" (the body in `after`-byte pieces,
    20 ms apart). `times`: how many requests it hits
    (None: all).
    """

    def __init__(self, kind: str, path: str, method: str = "GET", times: int | None = 1,
                 status: int = 500, after: int = 0, body: bytes = b"", content_type: str = "",
                 location: str = ""):
        self.kind, self.path, self.method, self.times = kind, re.compile(path), method, times
        self.status, self.after, self.body = status, after, body
        self.content_type, self.location = content_type, location
        self.hits = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return method == self.method and bool(self.path.search(path))


class FaultProxy:
    """An HTTP (plain) proxy to `upstream` (http or https with `ca`)."""

    def __init__(self, upstream: str, ca: Path | None = None, host: str = "127.0.0.1"):
        u = urllib.parse.urlsplit(upstream)
        self.up_scheme, self.up_host, self.up_port = u.scheme, u.hostname, u.port
        self.ctx = None
        if u.scheme == "https":
            self.ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.port = free_port(host)
        self.host = f"{host}:{self.port}"
        self.server = _Server((host, self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.log.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _match(self, method, path):
        with self.lock:
            self.log.append((method, path, {}))
            for f in self.faults:
                if f.matches(method, path):
                    f.hits += 1
                    return f
        return None

    def _upstream(self):
        if self.up_scheme == "https":
            return http.client.HTTPSConnection(self.up_host, self.up_port, context=self.ctx,
                                               timeout=30)
        return http.client.HTTPConnection(self.up_host, self.up_port, timeout=30)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _simple(self, status, body=b"", ctype="application/json", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _proxy(self):
                fault = proxy._match(self.command, self.path)
                with proxy.lock:
                    proxy.log[-1] = (self.command, self.path, dict(self.headers))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if fault is not None and fault.kind == "status":
                    msg = json.dumps({"errors": [{"code": "UNKNOWN", "message":
                                                  "injected failure"}]}).encode()
                    return self._simple(fault.status, msg)
                if fault is not None and fault.kind == "replace":
                    return self._simple(200, fault.body, fault.content_type, [
                        ("Docker-Content-Digest",
                         "sha256:" + hashlib.sha256(fault.body).hexdigest())])
                if fault is not None and fault.kind == "redirect":
                    return self._simple(307, b"", "text/plain",
                                        [("Location", fault.location + self.path)])
                conn = proxy._upstream()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "proxy-connection")}
                headers["Host"] = f"{proxy.up_host}:{proxy.up_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault is not None and fault.kind == "corrupt" and data:
                    i = len(data) // 2
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                announce = len(data)
                if fault is not None and fault.kind == "short":
                    data = data[:max(0, len(data) - fault.after)]
                    announce = len(data)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    lk = k.lower()
                    if lk in ("content-length", "transfer-encoding", "connection"):
                        continue
                    if lk == "location" and v.startswith(("http://", "https://")):
                        lu = urllib.parse.urlsplit(v)
                        if lu.port == proxy.up_port:
                            v = urllib.parse.urlunsplit(("http", proxy.host, lu.path, lu.query,
                                                         lu.fragment))
                    self.send_header(k, v)
                self.send_header("Content-Length", str(announce))
                if fault is not None and fault.kind == "slow":
                    self.end_headers()
                    step = fault.after or 65536
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.02)
                    return
                if fault is not None and fault.kind == "cut":
                    self.end_headers()
                    self.wfile.write(data[:fault.after])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _proxy

        return Handler


class BlobHost:
    """Another host (127.0.0.2) serving a registry's blobs by path; records request headers."""

    def __init__(self, registry: Registry, host: str = "127.0.0.2"):
        self.registry = registry
        self.requests: list[dict] = []
        try:
            self.port = free_port(host)
        except OSError:
            host = "localhost"
            self.port = free_port("127.0.0.1")
        self.url = f"http://{host}:{self.port}"
        bind = "127.0.0.1" if host == "localhost" else host
        self.server = _Server((bind, self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        bh = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                bh.requests.append({"path": self.path, "headers": dict(self.headers)})
                m = re.search(r"/blobs/(sha256:[a-f0-9]{64})", self.path)
                p = bh.registry.blob_path(m.group(1)) if m else None
                if p is None or not p.exists():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = p.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/"
                                                      f"{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        return Handler


# ---- skopeo -------------------------------------------------------------------------------

def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DOCKER_CONFIG", None)
    return subprocess.run([SKOPEO_BIN, "--insecure-policy", *args], capture_output=True,
                          text=True, check=check, timeout=120, env=env)


# ---- tiny image builder (busybox-based), for what imagebuild.py does not cover ------------

def _tar(files: dict[str, bytes | str], mtime: int = 1700000000) -> bytes:
    """A tar of regular files (and symlinks given as "->target")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tf.addfile(ti)
            data = files[name]
            ti = tarfile.TarInfo(name)
            ti.mtime = mtime
            if isinstance(data, str) and data.startswith("->"):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[2:]
                tf.addfile(ti)
                continue
            if isinstance(data, str):
                data = data.encode()
            ti.size, ti.mode = len(data), 0o755
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """Blobs of one image: layers (compressed), config, manifest."""

    def __init__(self, layers: list[bytes], arch: str = "amd64", variant: str = "",
                 oci: bool = False, compress: bool = True, cmd=("sh",)):
        self.tars = layers
        self.blobs: dict[str, bytes] = {}
        ltype = ("application/vnd.oci.image.layer.v1.tar+gzip" if oci else
                 "application/vnd.docker.image.rootfs.diff.tar.gzip")
        if not compress:
            ltype = "application/vnd.oci.image.layer.v1.tar"
        descs = []
        for t in layers:
            blob = _gzip(t) if compress else t
            self.blobs[sha(blob)] = blob
            descs.append({"mediaType": ltype, "digest": sha(blob), "size": len(blob)})
        config = {"architecture": arch, "os": "linux",
                  "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
                  "created": "2024-01-01T00:00:00Z",
                  "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "test"}
                              for _ in layers],
                  "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]}}
        if variant:
            config["variant"] = variant
        self.config = json.dumps(config, sort_keys=True).encode()
        self.blobs[sha(self.config)] = self.config
        self.manifest_type = ("application/vnd.oci.image.manifest.v1+json" if oci else
                              "application/vnd.docker.distribution.manifest.v2+json")
        ctype = ("application/vnd.oci.image.config.v1+json" if oci else
                 "application/vnd.docker.container.image.v1+json")
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": self.manifest_type,
            "config": {"mediaType": ctype, "digest": sha(self.config),
                       "size": len(self.config)},
            "layers": descs}, indent=2).encode()
        self.digest = sha(self.manifest)
        self.id = sha(self.config)
        self.arch, self.variant = arch, variant

    @property
    def layer_digests(self) -> list[str]:
        return [d["digest"] for d in json.loads(self.manifest)["layers"]]


def busybox_layer() -> bytes:
    bb = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    return _tar({"bin/busybox": bb, "bin/sh": "->busybox", "etc/hostname": "sampan\n"})


def random_layer(size: int, name: str = "data/blob") -> bytes:
    """A layer whose file does not compress (so the blob is about `size` bytes)."""
    return _tar({name: os.urandom(size)})


def index_of(images: list[Image], oci: bool = True) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": ("application/vnd.oci.image.index.v1+json" if oci else
                      "application/vnd.docker.distribution.manifest.list.v2+json"),
        "manifests": [{"mediaType": im.manifest_type, "digest": im.digest,
                       "size": len(im.manifest),
                       "platform": dict({"os": "linux", "architecture": im.arch},
                                        **({"variant": im.variant} if im.variant else {}))}
                      for im in images]}, indent=2).encode()


def write_oci_layout(dir: Path, image: Image, tag: str = "latest") -> Path:
    dir = Path(dir)
    (dir / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    for d, data in list(image.blobs.items()) + [(image.digest, image.manifest)]:
        (dir / "blobs/sha256" / d.split(":")[1]).write_bytes(data)
    (dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dir / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": image.manifest_type, "digest": image.digest,
            "size": len(image.manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return dir


class Uploader:
    """Puts blobs and manifests straight into a registry (the test's own HTTP client)."""

    def __init__(self, base: str, verify=True, auth: tuple[str, str] | None = None,
                 token_server: TokenServer | None = None):
        import requests
        self.s = requests.Session()
        self.s.verify = verify
        self.s.trust_env = False              # REQUESTS_CA_BUNDLE would override verify
        self.base = base
        self.auth = auth
        self.ts = token_server

    def _headers(self, repo: str) -> dict:
        if self.ts is not None:
            tok = self.ts.issue("alice", SERVICE, [f"repository:{repo}:pull,push"])["token"]
            return {"Authorization": "Bearer " + tok}
        if self.auth:
            return {"Authorization": "Basic " + base64.b64encode(
                f"{self.auth[0]}:{self.auth[1]}".encode()).decode()}
        return {}

    def blob(self, repo: str, data: bytes) -> str:
        h = self._headers(repo)
        d = sha(data)
        if self.s.head(f"{self.base}/v2/{repo}/blobs/{d}", headers=h).status_code == 200:
            return d
        r = self.s.post(f"{self.base}/v2/{repo}/blobs/uploads/", headers=h)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(self.base, r.headers["Location"])
        r = self.s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d, data=data,
                       headers=dict(h, **{"Content-Type": "application/octet-stream"}))
        assert r.status_code == 201, r.text
        return d

    def manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        h = dict(self._headers(repo), **{"Content-Type": media_type})
        r = self.s.put(f"{self.base}/v2/{repo}/manifests/{ref}", data=data, headers=h)
        assert r.status_code == 201, r.text
        return r.headers.get("Docker-Content-Digest", "")

    def image(self, repo: str, ref: str, image: Image) -> str:
        for data in image.blobs.values():
            self.blob(repo, data)
        return self.manifest(repo, ref, image.manifest, image.manifest_type)

    def index(self, repo: str, ref: str, images: list[Image], oci: bool = True) -> str:
        for im in images:
            self.image(repo, im.digest, im)
        data = index_of(images, oci)
        mt = json.loads(data)["mediaType"]
        return self.manifest(repo, ref, data, mt)


# ---- a stand-in for the graph ------------------------------------------------------------

class LayerInfo:
    def __init__(self, chain_id, diff_id, size, digest):
        self.chain_id, self.diff_id, self.size, self.digest = chain_id, diff_id, size, digest
        self.tar_size = size


def _decompressor(head: bytes):
    if head[:2] == b"\x1f\x8b":
        return zlib.decompressobj(31)
    return None


class FakeGraph:
    """What the registry client uses of `sampan.graph.Graph`, with the real ContentStore.

    Layers are recorded (diff id verified) but not unpacked; used until the graph's Graph
    exists."""

    def __init__(self, root: Path):
        from sampan.graph.content import ContentStore
        self.store = ContentStore(Path(root))
        self.layers: dict[str, str] = {}         # chain id → diff id
        self.layer_blobs: dict[str, list] = {}   # diff id → [(digest, media type, size)]
        self.images: dict[str, dict] = {}
        self.tags: dict[str, str] = {}
        self.leases: dict[str, set] = {}
        self.applied: list[str] = []
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self, name: str | None = None):
        name = name or uuid.uuid4().hex
        self.leases[name] = set()
        try:
            yield name
        finally:
            del self.leases[name]

    def lease_add(self, lease: str, what: str) -> None:
        self.leases[lease].add(what)

    def has_layer(self, chain_id: str) -> bool:
        return chain_id in self.layers

    def apply_layer(self, parent, stream, media_type, expected_diff_id=None, lease=None, *,
                    digest=None):
        if parent is not None and parent not in self.layers:
            from sampan.errors import NotFound
            raise NotFound(f"parent layer {parent} not found")
        h_blob, h_diff = hashlib.sha256(), hashlib.sha256()
        head = stream.read(2)
        d = _decompressor(head)
        size = 0
        data = head
        while True:
            if data:
                h_blob.update(data)
                out = d.decompress(data) if d else data
                h_diff.update(out)
                size += len(out)
            data = stream.read(65536)
            if not data:
                break
        if d:
            out = d.flush()
            h_diff.update(out)
            size += len(out)
        diff_id = "sha256:" + h_diff.hexdigest()
        blob = "sha256:" + h_blob.hexdigest()
        from sampan.errors import InvalidArgument
        if expected_diff_id and diff_id != expected_diff_id:
            raise InvalidArgument(f"layer diff id mismatch: {diff_id} != {expected_diff_id}")
        if digest and blob != digest:
            raise InvalidArgument(f"layer digest mismatch: {blob} != {digest}")
        chain = diff_id if parent is None else "sha256:" + hashlib.sha256(
            f"{parent} {diff_id}".encode()).hexdigest()
        with self.lock:
            self.layers[chain] = diff_id
            self.layer_blobs.setdefault(diff_id, []).append((blob, media_type, size))
            self.applied.append(chain)
        return LayerInfo(chain, diff_id, size, blob)

    def add_image(self, config_digest, manifest_digest, ref, manifest_media_type=None, *,
                  index_digest=None):
        from sampan.errors import NotFound
        config = json.loads(self.store.read(config_digest))
        diff_ids = config["rootfs"]["diff_ids"]
        chain = None
        for d in diff_ids:
            chain = d if chain is None else "sha256:" + hashlib.sha256(
                f"{chain} {d}".encode()).hexdigest()
            if chain not in self.layers:
                raise NotFound(f"layer {chain} not found")
        img = self.images.setdefault(config_digest, {"manifests": [], "repo_digests": [],
                                                     "repo_tags": []})
        for d, mt, kind in ((manifest_digest, manifest_media_type, "manifest"),
                            (index_digest, None, "index")):
            if d and d not in [m["digest"] for m in img["manifests"]]:
                img["manifests"].append({"digest": d, "media_type": mt, "kind": kind})
        if ref is not None:
            name = ref.name()
            rd = f"{name}@{index_digest or manifest_digest}"
            if rd not in img["repo_digests"]:
                img["repo_digests"].append(rd)
            if ref.tag:
                self.tag(config_digest, ref)
        return config_digest

    def tag(self, image: str, ref) -> None:
        image_id = self.resolve(image) if image not in self.images else image
        key = str(ref)
        old = self.tags.get(key)
        if old and old in self.images and key in self.images[old]["repo_tags"]:
            self.images[old]["repo_tags"].remove(key)
        self.tags[key] = image_id
        if key not in self.images[image_id]["repo_tags"]:
            self.images[image_id]["repo_tags"].append(key)

    def resolve(self, name: str) -> str:
        from sampan.errors import ImageNotFound
        from sampan.reference import parse
        if name in self.images:
            return name
        from sampan.errors import SampanError
        try:
            ref = parse(name)
        except SampanError:
            ref = None
        if ref is not None and str(ref) in self.tags:
            return self.tags[str(ref)]
        if ref is not None and ref.digest:
            for iid, img in self.images.items():
                if f"{ref.name()}@{ref.digest}" in img["repo_digests"]:
                    return iid
        for iid in self.images:
            if iid.split(":")[1].startswith(name.replace("sha256:", "")):
                return iid
        raise ImageNotFound(f"No such image: {name}")

    def image_record(self, name: str) -> dict:
        iid = self.resolve(name)
        img = self.images[iid]
        config = json.loads(self.store.read(iid))
        layers = []
        chain = None
        for d in config["rootfs"]["diff_ids"]:
            chain = d if chain is None else "sha256:" + hashlib.sha256(
                f"{chain} {d}".encode()).hexdigest()
            layers.append({"chain_id": chain, "diff_id": d, "blobs": [
                {"digest": b, "media_type": mt, "size": s}
                for b, mt, s in self.layer_blobs.get(d, [])]})
        return {"id": iid, "config_digest": iid, "manifests": list(img["manifests"]),
                "layers": layers, "repo_tags": list(img["repo_tags"]),
                "repo_digests": list(img["repo_digests"])}

    def open_diff(self, diff_id: str):
        for b, _mt, _s in self.layer_blobs.get(diff_id, []):
            if self.store.exists(b):
                data = self.store.read(b)
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                return io.BytesIO(data)
        from sampan.errors import NotFound
        raise NotFound(f"no blob for layer {diff_id}")


def make_graph(root: Path):
    """The real Graph when the graph part exports one, else FakeGraph.

    Storage driver: $SAMPAN_TEST_STORAGE_DRIVER, default vfs (the registry tests do not need
    overlay, and its probe mount in a process full of server threads has crashed)."""
    if os.environ.get("SAMPAN_TEST_FAKE_GRAPH"):
        return FakeGraph(root)
    try:
        from sampan.graph import Graph  # type: ignore
    except ImportError:
        return FakeGraph(root)
    driver = os.environ.get("SAMPAN_TEST_STORAGE_DRIVER", "vfs") or None
    return Graph(Path(root), driver=driver, sync=False)


# ---- fixtures (import them into a test module: `from registries import *`) ----------------

@pytest.fixture(scope="session")
def reg_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("registries")


@pytest.fixture(scope="session")
def ca(reg_tmp):
    if OPENSSL_BIN is None:
        pytest.skip("openssl is not installed")
    return CA(reg_tmp / "ca")


@pytest.fixture(scope="session")
def plain_registry(reg_tmp):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    r = Registry(reg_tmp / "plain", "plain")
    yield r
    r.close()


@pytest.fixture(scope="session")
def basic_registry(reg_tmp, ca):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    r = Registry(reg_tmp / "basic", "basic", ca=ca)
    yield r
    r.close()


@pytest.fixture(scope="session")
def token_server(reg_tmp):
    if OPENSSL_BIN is None:
        pytest.skip("openssl is not installed")
    ts = TokenServer(reg_tmp / "token")
    yield ts
    ts.close()


@pytest.fixture(scope="session")
def token_registry(reg_tmp, token_server):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    r = Registry(reg_tmp / "tokenreg", "token", token_server=token_server)
    yield r
    r.close()


@pytest.fixture(scope="session")
def certs_dir(reg_tmp, basic_registry, ca):
    """A certs.d with the test CA for the TLS registry (as /etc/docker/certs.d/<host>/)."""
    d = reg_tmp / "certs.d"
    (d / basic_registry.host).mkdir(parents=True, exist_ok=True)
    shutil.copy(ca.cert, d / basic_registry.host / "ca.crt")
    return d


@pytest.fixture
def isolated_config(tmp_path, monkeypatch):
    """Credentials files of this test only."""
    monkeypatch.setenv("SAMPAN_CONFIG", str(tmp_path / "sampan-config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return tmp_path


@pytest.fixture
def graph(tmp_path):
    g = make_graph(tmp_path / "root")
    yield g
    if hasattr(g, "close"):
        g.close()


@pytest.fixture
def proxy_for():
    """proxy_for(registry) → a FaultProxy in front of it (closed after the test)."""
    made = []

    def make(registry: Registry, host: str = "127.0.0.1") -> FaultProxy:
        p = FaultProxy(registry.url, ca=registry.ca.cert if registry.ca else None, host=host)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def make_service(graph, certs=None, **kw):
    from sampan.images import ImageService
    from sampan.registry.config import RegistryConfig
    kw.setdefault("backoff", 0.02)
    kw.setdefault("max_download_attempts", 4)
    kw.setdefault("timeout", 10.0)
    return ImageService(graph, RegistryConfig(certs_dir=certs or Path("/nonexistent"), **kw))


class Recorder:
    """A progress callback that keeps the messages."""

    def __init__(self):
        self.messages: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, msg: dict) -> None:
        json.dumps(msg)                       # must be JSON-serialisable
        with self.lock:
            self.messages.append(msg)

    def statuses(self, id: str | None = None) -> list[str]:
        return [m.get("status") for m in self.messages
                if id is None or m.get("id") == id]
