"""The embedded DNS server: 127.0.0.11:53 inside every container on a user-defined network.

Each container gets its own UDP and TCP listener, opened inside its network namespace (a
socket keeps the namespace it was made in) and served by the daemon's event loop: the
listener a query arrives on says which container asks, so no NAT is needed. Names of
containers, their network aliases and --link aliases on the networks the asker shares are
answered here (A records, TTL 600); everything else is forwarded, from the host's namespace,
to the container's --dns servers or the host's resolvers (loopback ones included, which a
container could not reach itself)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import threading
from typing import Any

log = logging.getLogger("sampand")

TTL = 600
QTYPE_A, QTYPE_AAAA = 1, 28


def parse_question(q: bytes) -> tuple[str, int, int] | None:
    """(name, qtype, end offset of the question) of a query, or None if malformed."""
    if len(q) < 12:
        return None
    qd = struct.unpack_from("!H", q, 4)[0]
    if qd != 1 or q[2] & 0x80:
        return None
    i = 12
    labels = []
    while True:
        if i >= len(q):
            return None
        n = q[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:
            return None
        labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if i + 4 > len(q):
        return None
    qtype = struct.unpack_from("!H", q, i)[0]
    return ".".join(labels), qtype, i + 4


def answer(q: bytes, end: int, qtype: int, ips: list[str]) -> bytes:
    ident = q[:2]
    rd = q[2] & 0x01
    records = []
    if qtype == QTYPE_A:
        for ip in ips:
            records.append(struct.pack("!HHHIH", 0xC00C, 1, 1, TTL, 4)
                           + ipaddress.IPv4Address(ip).packed)
    flags = struct.pack("!BB", 0x80 | 0x04 | rd, 0x80)  # QR, AA, RD copied; RA
    head = ident + flags + struct.pack("!HHHH", 1, len(records), 0, 0)
    return head + q[12:end] + b"".join(records)


def servfail(q: bytes) -> bytes:
    end = (parse_question(q) or ("", 0, len(q)))[2]
    return q[:2] + struct.pack("!BB", 0x80 | (q[2] & 0x01), 0x82) + \
        struct.pack("!HHHH", 1, 0, 0, 0) + q[12:end]


class DNSServer:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.socks: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()

    # called from worker threads
    def add(self, cid: str, socks: list[socket.socket], ctl: Any) -> None:
        with self._lock:
            old = self.socks.pop(cid, None)
            self.socks[cid] = socks
        self.loop.call_soon_threadsafe(self._serve, cid, socks, ctl, old)

    def remove(self, cid: str) -> None:
        with self._lock:
            socks = self.socks.pop(cid, None)
        if socks:
            try:
                self.loop.call_soon_threadsafe(self._stop, socks)
            except RuntimeError:  # loop closed: shutting down
                for s in socks:
                    s.close()

    # on the loop
    def _stop(self, socks: list[socket.socket]) -> None:
        for s in socks:
            try:
                self.loop.remove_reader(s.fileno())
            except (ValueError, OSError):
                pass
            s.close()

    def _serve(self, cid: str, socks: list[socket.socket], ctl: Any,
               old: list[socket.socket] | None) -> None:
        if old:
            self._stop(old)
        udp, tcp = socks
        self.loop.add_reader(udp.fileno(), self._udp_ready, cid, udp, ctl)
        self.loop.add_reader(tcp.fileno(), self._tcp_ready, cid, tcp, ctl)

    def _udp_ready(self, cid: str, s: socket.socket, ctl: Any) -> None:
        for _ in range(64):
            try:
                q, addr = s.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = self._local(cid, q, ctl)
            if reply is not None:
                try:
                    s.sendto(reply, addr)
                except OSError:
                    pass
            else:
                asyncio.ensure_future(self._forward_udp(cid, s, addr, q, ctl))

    def _local(self, cid: str, q: bytes, ctl: Any) -> bytes | None:
        parsed = parse_question(q)
        if parsed is None:
            return servfail(q) if len(q) >= 12 else b""
        name, qtype, end = parsed
        ips = ctl.resolve(cid, name)
        if ips is None:
            return None
        return answer(q, end, qtype, ips)

    async def _upstream(self, cid: str, q: bytes, ctl: Any) -> bytes:
        for server in ctl.upstreams(cid):
            fam = socket.AF_INET6 if ":" in server else socket.AF_INET
            u = socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            try:
                await self.loop.sock_connect(u, (server, 53))
                await self.loop.sock_sendall(u, q)
                while True:
                    r = await asyncio.wait_for(self.loop.sock_recv(u, 65535), 3.0)
                    if r[:2] == q[:2]:
                        return r
            except (OSError, asyncio.TimeoutError) as e:
                log.debug("DNS forward to %s: %s", server, e)
            finally:
                u.close()
        return servfail(q)

    async def _forward_udp(self, cid: str, s: socket.socket, addr: Any, q: bytes,
                           ctl: Any) -> None:
        r = await self._upstream(cid, q, ctl)
        try:
            s.sendto(r, addr)
        except OSError:
            pass

    def _tcp_ready(self, cid: str, s: socket.socket, ctl: Any) -> None:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        conn.setblocking(False)
        asyncio.ensure_future(self._tcp_conn(cid, conn, ctl))

    async def _tcp_conn(self, cid: str, conn: socket.socket, ctl: Any) -> None:
        try:
            while True:
                head = await asyncio.wait_for(self._recv_exact(conn, 2), 10)
                if not head:
                    return
                q = await self._recv_exact(conn, struct.unpack("!H", head)[0])
                r = self._local(cid, q, ctl)
                if r is None:
                    r = await self._upstream(cid, q, ctl)
                await self.loop.sock_sendall(conn, struct.pack("!H", len(r)) + r)
        except (OSError, asyncio.TimeoutError, struct.error):
            pass
        finally:
            conn.close()

    async def _recv_exact(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = await self.loop.sock_recv(conn, n - len(buf))
            if not chunk:
                return b""
            buf += chunk
        return buf

    def close(self) -> None:
        with self._lock:
            all_socks = list(self.socks.values())
            self.socks.clear()
        for socks in all_socks:
            self._stop(socks)
