"""Fixtures for the network tests: a real sampand with its own default bridge (a unique name
and a /24 no host route uses, so tests and other daemons never share one), busybox loaded, a
fake upstream DNS server on 127.0.0.1:53 (containers are started with --dns 127.0.0.1, so the
embedded DNS forwards there and nothing leaves the machine), and snapshots of the host's
links, addresses and firewall rules for the leak checks.

Traffic stays on loopback, the test bridges and namespaces the tests make."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

DAEMON_TESTS = Path(__file__).resolve().parents[1] / "daemon"
if str(DAEMON_TESTS) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS))

from daemonlib import Daemon, mkdir  # noqa: E402

if os.geteuid() != 0:
    pytest.skip("networking needs root", allow_module_level=True)
if not shutil.which("ip"):
    pytest.skip("needs iproute2", allow_module_level=True)


def host_routes() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                         capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        dst = line.split()[0]
        if dst in ("default", "local", "broadcast", "unreachable", "prohibit", "blackhole"):
            dst = line.split()[1] if dst != "default" else ""
        try:
            if dst:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
        except ValueError:
            pass
    return nets


_given: set[str] = set()
_given_lock = threading.Lock()


def free_subnet(prefix: int = 24) -> ipaddress.IPv4Network:
    """A random 10.x.y.0/prefix that no host route overlaps (nor one handed out already)."""
    taken = host_routes()
    for _ in range(500):
        n = ipaddress.IPv4Network(f"10.{secrets.randbelow(200) + 40}."
                                  f"{secrets.randbelow(256)}.0/{prefix}", strict=False)
        with _given_lock:
            if str(n) in _given or any(n.overlaps(t) for t in taken):
                continue
            _given.add(str(n))
        return n
    raise RuntimeError("no free test subnet")


def uniq(prefix: str) -> str:
    return prefix + secrets.token_hex(3)


@pytest.fixture(scope="session")
def nroot():
    path = Path(tempfile.mkdtemp(prefix="sampan-net-tests-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class NetDaemon(Daemon):
    bridge: str = ""
    bip: ipaddress.IPv4Interface
    extra_env: dict = {}

    def env(self) -> dict:
        return {**super().env(), **self.extra_env}

    def start_net(self) -> NetDaemon:
        return self.start("--bridge", self.bridge, "--bip", str(self.bip))  # type: ignore


def make_daemon(root: Path, archive: bytes, env: dict | None = None) -> NetDaemon:
    d = NetDaemon(mkdir(root), fake=False)
    d.extra_env = dict(env or {})
    d.bridge = uniq("stn")
    net = free_subnet()
    d.bip = ipaddress.IPv4Interface(f"{next(net.hosts())}/{net.prefixlen}")
    d.start_net()
    st, _h, body = d.request("POST", "/images/load?quiet=1", archive,
                             {"Content-Type": "application/x-tar"})
    assert st == 200 and b"Loaded image" in body, body
    return d


def cleanup_daemon(d: NetDaemon) -> None:
    if d.proc is not None:
        for c in d.json("GET", "/containers/json?all=1")[1] or []:
            d.request("DELETE", f"/containers/{c['Id']}?force=1")
        d.request("POST", "/networks/prune")
        d.stop()
    subprocess.run(["ip", "link", "del", d.bridge], capture_output=True)
    subprocess.run(["bash", "-c", "for t in filter nat; do iptables -w -t $t -S | "
                    f"grep -- '{d.bridge}' | sed 's/^-A/-D/' | "
                    "while read r; do eval iptables -w -t $t $r; done; done"],
                   capture_output=True)


@pytest.fixture(scope="module")
def nd(nroot, busybox_archive, request):
    d = make_daemon(nroot / request.module.__name__.rsplit(".", 1)[-1], busybox_archive)
    yield d
    cleanup_daemon(d)


# --------------------------------------------------------------------------- fake upstream DNS


class FakeDNS:
    """Answers A queries for *.upstream.test with 10.9.9.9, NXDOMAIN otherwise; records names."""

    def __init__(self, host: str = "127.0.0.1", port: int = 53):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.queries: list[str] = []
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                q, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            i, labels = 12, []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode())
                i += 1 + q[i]
            end = i + 5
            qtype = struct.unpack_from("!H", q, i + 1)[0]
            name = ".".join(labels)
            self.queries.append(name)
            if name.endswith("upstream.test") and qtype == 1:
                ans = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([10, 9, 9, 9])
                head = q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0)
            else:
                ans = b""
                rcode = 0 if name.endswith("upstream.test") else 3
                head = q[:2] + bytes([0x81, 0x80 | rcode]) + struct.pack("!HHHH", 1, 0, 0, 0)
            self.sock.sendto(head + q[12:end] + ans, addr)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture(scope="session")
def fake_dns():
    try:
        f = FakeDNS()
    except OSError as e:
        pytest.skip(f"127.0.0.1:53 is taken ({e}): the DNS forwarding tests need it")
    yield f
    f.close()


# --------------------------------------------------------------------------- host snapshots


def host_state(bridges: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The host's links, IPv4 addresses and firewall rules, without the volatile parts
    (counters, link indexes)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    rules = []
    for t in ("filter", "nat"):
        rules += subprocess.run(["iptables", "-w", "-t", t, "-S"], capture_output=True,
                                text=True).stdout.splitlines()
    strip = re.compile(r"^\d+: ")
    return {
        "links": sorted(strip.sub("", ln).split(":")[0].split("@")[0]
                        for ln in links.splitlines()),
        "addrs": sorted(" ".join(ln.split()[1:4]) for ln in addrs.splitlines()),
        "rules": sorted(rules),
    }


def wait_state(want: dict[str, list[str]], timeout: float = 10.0) -> dict[str, list[str]]:
    """The host state once it equals `want` (the kernel destroys a namespace's veth pairs
    asynchronously), or the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        now = host_state()
        if now == want or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def wait_http(url: str, timeout: float = 10.0) -> bytes:
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=3).read()
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"{url}: {last}")
