"""Which endpoints serve a registry host, and how to talk to them (TLS, insecure, mirrors).

Like dockerd: HTTPS with the system CAs plus `certs.d/<host>/*.crt` (and client certificates
`*.cert`/`*.key`); a registry is insecure only where configured (`--insecure-registry`, a host
or a CIDR) or when it is on loopback (localhost, 127.0.0.0/8, ::1), and then HTTPS without
verification is tried first and plain HTTP after it. Mirrors serve docker.io pulls only, tried
in order before the real registry.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sampan.errors import InvalidArgument
from sampan.reference import DEFAULT_DOMAIN, DEFAULT_REGISTRY_HOST, LEGACY_DOMAIN

DEFAULT_CERTS_DIRS = (Path("/etc/sampan/certs.d"), Path("/etc/docker/certs.d"))
LOOPBACK_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
DOCKER_HUB_HOSTS = (DEFAULT_DOMAIN, LEGACY_DOMAIN, DEFAULT_REGISTRY_HOST)


@dataclass
class RegistryConfig:
    """Daemon-wide registry settings (daemon.json: insecure-registries, registry-mirrors)."""

    insecure_registries: list[str] = field(default_factory=list)
    mirrors: list[str] = field(default_factory=list)
    certs_dir: Path | None = None          # None: /etc/sampan/certs.d then /etc/docker/certs.d
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    max_download_attempts: int = 5
    backoff: float = 0.25                     # first retry delay, doubled each time (≤ 4 s)
    timeout: float = 30.0                     # connect/read timeout of one request
    chunk_size: int = 0                       # push: 0 = monolithic PUT, else PATCH chunks

    def __post_init__(self):
        self.insecure_registries = list(self.insecure_registries or [])
        self.mirrors = [normalize_mirror(m) for m in (self.mirrors or [])]
        for entry in self.insecure_registries:
            if "://" in entry:
                raise InvalidArgument(f"insecure registry {entry} should not contain '://'")
        if self.certs_dir is not None:
            self.certs_dir = Path(self.certs_dir)
        self._bundles: dict = {}
        self._lock = threading.Lock()

    # ---- insecure -----------------------------------------------------------------------
    def is_insecure(self, host: str) -> bool:
        """Whether `host` ("name[:port]") may be reached without TLS verification."""
        if host in self.insecure_registries:
            return True
        name = host_name(host)
        if name in self.insecure_registries or name == "localhost":
            return True
        nets = list(LOOPBACK_NETS)
        for entry in self.insecure_registries:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue
        for ip in _addresses(name, resolve=len(nets) > len(LOOPBACK_NETS)):
            if any(ip in net for net in nets):
                return True
        return False

    # ---- TLS ----------------------------------------------------------------------------
    def certs_dirs(self) -> list[Path]:
        return [self.certs_dir] if self.certs_dir is not None else list(DEFAULT_CERTS_DIRS)

    def tls_for(self, host: str) -> tuple[bool | str, tuple[str, str] | None]:
        """(`verify`, `cert` of http.Session) for HTTPS to `host` with verification."""
        cas: list[Path] = []
        cert = None
        for d in self.certs_dirs():
            hd = d / host
            if not hd.is_dir():
                continue
            for f in sorted(hd.iterdir()):
                if f.suffix == ".crt":
                    cas.append(f)
                elif f.suffix == ".cert":
                    key = f.with_suffix(".key")
                    if not key.exists():
                        raise InvalidArgument(f"missing key {key.name} for client certificate "
                                              f"{f}. CA certificates must use the extension .crt")
                    cert = (str(f), str(key))
            break
        if not cas:
            return True, cert
        return self._bundle(cas), cert

    def _bundle(self, cas: list[Path]) -> str:
        """A CA file holding the system CAs plus `cas` (cached by content)."""
        data = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in cas)
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            path = self._bundles.get(key)
            if path and os.path.exists(path):
                return path
            system = b""
            for cafile in _system_ca_files():
                try:
                    system = Path(cafile).read_bytes()
                    break
                except OSError:
                    continue
            fd, path = tempfile.mkstemp(prefix="sampan-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(system.rstrip(b"\n") + b"\n" + data)
            self._bundles[key] = path
            return path

    # ---- endpoints ----------------------------------------------------------------------
    def endpoints(self, domain: str, push: bool = False) -> list[Endpoint]:
        """The endpoints to try, in order, for the registry of reference domain `domain`."""
        out: list[Endpoint] = []
        if domain in DOCKER_HUB_HOSTS:
            if not push:
                for m in self.mirrors:
                    u = urlsplit(m)
                    out.extend(self._host_endpoints(u.netloc, mirror=True, scheme=u.scheme,
                                                    auth_host=u.netloc))
            out.extend(self._host_endpoints(DEFAULT_REGISTRY_HOST, auth_host=DEFAULT_DOMAIN))
            return out
        return self._host_endpoints(domain, auth_host=domain)

    def _host_endpoints(self, host: str, mirror: bool = False, scheme: str = "https",
                        auth_host: str = "") -> list[Endpoint]:
        insecure = self.is_insecure(host)
        out = []
        if scheme == "https":
            verify, cert = self.tls_for(host)
            if insecure:
                verify = False
            out.append(Endpoint(f"https://{host}", host, verify, cert, mirror, insecure,
                                auth_host or host, fallback=insecure))
        if scheme == "http" or insecure:
            out.append(Endpoint(f"http://{host}", host, False, None, mirror, True,
                                auth_host or host))
        return out


@dataclass
class Endpoint:
    url: str                                  # "https://registry-1.docker.io" (no path)
    host: str                                 # "registry-1.docker.io"
    verify: bool | str = True           # http.Session's verify
    cert: tuple[str, str] | None = None    # client certificate
    mirror: bool = False
    insecure: bool = False
    auth_host: str = ""                       # key for credentials ("docker.io" for Hub)
    fallback: bool = False                    # on a TLS/connection failure try the next one

    def __str__(self) -> str:
        return self.url


def normalize_mirror(m: str) -> str:
    m = m.strip()
    if "://" not in m:
        raise InvalidArgument(f"invalid mirror: unsupported scheme in {m!r} "
                              "(must be http:// or https://)")
    u = urlsplit(m)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise InvalidArgument(f"invalid mirror: {m!r}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise InvalidArgument(f"invalid mirror: path, query and fragment are not allowed "
                              f"in {m!r}")
    return f"{u.scheme}://{u.netloc}"


def host_name(host: str) -> str:
    """"name:port" → "name"; "[::1]:5000" → "::1"."""
    if host.startswith("["):
        return host[1:host.index("]")]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _addresses(name: str, resolve: bool):
    try:
        return [ipaddress.ip_address(name)]
    except ValueError:
        pass
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(info[4][0].split("%")[0]))
        except ValueError:
            continue
    return out


def _system_ca_files() -> list[str]:
    paths = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
             "/etc/ssl/cert.pem"]
    dv = ssl.get_default_verify_paths()
    if dv.cafile:
        paths.insert(0, dv.cafile)
    try:
        import certifi  # type: ignore
        paths.append(certifi.where())
    except ImportError:
        pass
    return paths
