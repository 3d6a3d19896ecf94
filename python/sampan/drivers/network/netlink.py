"""A minimal rtnetlink client: the dozen requests the bridge driver makes (links, veth pairs,
addresses, routes, dumps), each one packed by hand and acknowledged by the kernel.

Why not pyroute2: importing it costs ~190 ms and ~12 MiB of daemon memory, each synchronous
request ~1 ms, and it installs ~5 MiB (issue 6 limits the whole install to 8 MB); these
requests take ~20 µs each. A socket belongs to the network namespace it was created in, so a
socket made by a thread that joined a container's namespace configures that namespace from any
thread afterwards."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from typing import Any, Iterator

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_FD = 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 8, 15
RTAX_MTU, RTAX_ADVMSS = 2, 8
IFF_UP = 0x1
NLA_F_NESTED = 0x8000

_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLHDR = struct.Struct("=IHHII")


class NetlinkError(OSError):
    pass


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, i)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[i + 4:i + n]
        i += (n + 3) & ~3
    return out


class Netlink:
    """One NETLINK_ROUTE socket; requests are serialised by a lock."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self._seq += 1
        msg = _NLHDR.pack(_NLHDR.size + len(body), mtype, flags | NLM_F_REQUEST, self._seq,
                          0) + body
        self.sock.send(msg)
        return self._seq

    def request(self, mtype: int, body: bytes, flags: int = 0, what: str = "") -> None:
        """Send and wait for the kernel's acknowledgement; errors raise NetlinkError."""
        with self._lock:
            seq = self._send(mtype, flags | NLM_F_ACK, body)
            while True:
                data = self.sock.recv(65536)
                for t, s, payload in _messages(data):
                    if s != seq:
                        continue
                    if t == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise NetlinkError(code, f"{what or 'netlink'}: "
                                                     f"{os.strerror(code)}")
                        return

    def dump(self, mtype: int, body: bytes) -> Iterator[bytes]:
        with self._lock:
            seq = self._send(mtype, NLM_F_DUMP, body)
            out = []
            done = False
            while not done:
                data = self.sock.recv(1 << 16)
                for t, s, payload in _messages(data):
                    if s != seq:
                        continue
                    if t == NLMSG_DONE:
                        done = True
                        break
                    if t == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        done = True
                        break
                    out.append(payload)
        return iter(out)

    # ------------------------------------------------------------------ links

    def link_index(self, name: str) -> int:
        """The index of `name` in this socket's namespace (0 when absent)."""
        with self._lock:
            seq = self._send(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) +
                             attr(IFLA_IFNAME, cstr(name)))
            while True:
                for t, s, payload in _messages(self.sock.recv(65536)):
                    if s != seq:
                        continue
                    if t == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code in (0, errno.ENODEV, errno.ENOENT):
                            return 0
                        raise NetlinkError(code, f"looking up {name}: {os.strerror(code)}")
                    return _IFINFO.unpack_from(payload)[2]

    def add_bridge(self, name: str, mtu: int = 0) -> None:
        a = attr(IFLA_IFNAME, cstr(name)) + nested(IFLA_LINKINFO,
                                                   attr(IFLA_INFO_KIND, cstr("bridge")))
        if mtu:
            a += attr(IFLA_MTU, u32(mtu))
        self.request(RTM_NEWLINK, _IFINFO.pack(0, 0, 0, 0, 0) + a,
                     NLM_F_CREATE | NLM_F_EXCL, f"creating bridge {name}")

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int = 0,
                 mac: bytes | None = None) -> None:
        """A veth pair: `name` here, `peer` moved into the namespace `peer_netns_fd`."""
        peer_attrs = attr(IFLA_IFNAME, cstr(peer)) + attr(IFLA_NET_NS_FD, u32(peer_netns_fd))
        if mtu:
            peer_attrs += attr(IFLA_MTU, u32(mtu))
        info = nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, cstr("veth")),
                      nested(IFLA_INFO_DATA, nested(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0)
                                                    + peer_attrs)))
        a = attr(IFLA_IFNAME, cstr(name)) + info
        if mtu:
            a += attr(IFLA_MTU, u32(mtu))
        if mac:
            a += attr(IFLA_ADDRESS, mac)
        self.request(RTM_NEWLINK, _IFINFO.pack(0, 0, 0, 0, 0) + a,
                     NLM_F_CREATE | NLM_F_EXCL, f"creating veth {name}")

    def set_link(self, name: str = "", index: int = 0, up: bool | None = None,
                 master: int | None = None, mtu: int = 0) -> None:
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        a = attr(IFLA_IFNAME, cstr(name)) if name and not index else b""
        if master is not None:
            a += attr(IFLA_MASTER, u32(master))
        if mtu:
            a += attr(IFLA_MTU, u32(mtu))
        self.request(RTM_NEWLINK, _IFINFO.pack(0, 0, index, flags, change) + a, 0,
                     f"setting link {name or index}")

    def del_link(self, name: str) -> bool:
        try:
            self.request(RTM_DELLINK, _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME,
                                                                          cstr(name)),
                         0, f"deleting link {name}")
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def links(self) -> list[tuple[int, str, int]]:
        """(index, name, master index) of every link."""
        out = []
        for p in self.dump(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)):
            idx = _IFINFO.unpack_from(p)[2]
            a = parse_attrs(p[_IFINFO.size:])
            name = a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()
            master = struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0
            out.append((idx, name, master))
        return out

    # ------------------------------------------------------------------ addresses, routes

    def add_addr(self, index: int, iface: ipaddress.IPv4Interface) -> None:
        ip = iface.ip.packed
        bcast = iface.network.broadcast_address.packed
        body = _IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index)
        body += attr(IFA_LOCAL, ip) + attr(IFA_ADDRESS, ip) + attr(IFA_BROADCAST, bcast)
        try:
            self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL, f"adding {iface}")
        except NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise

    def addrs(self) -> list[tuple[int, ipaddress.IPv4Interface]]:
        out = []
        for p in self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            _fam, plen, _f, _s, idx = _IFADDR.unpack_from(p)
            a = parse_attrs(p[_IFADDR.size:])
            ip = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if ip and len(ip) == 4:
                out.append((idx, ipaddress.IPv4Interface((ip, plen))))
        return out

    def add_default_route(self, gateway: ipaddress.IPv4Address, oif: int, mtu: int = 0) -> None:
        """`mtu`: the route's own MTU and advertised MSS (`ip route … mtu N advmss N-40`),
        below the link's: what leaves through the gateway is sized for the uplink, while the
        subnet's on-link route keeps the link's MTU."""
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
        body += attr(RTA_GATEWAY, gateway.packed) + attr(RTA_OIF, u32(oif))
        if mtu:
            body += attr(RTA_METRICS, attr(RTAX_MTU, u32(mtu)) + attr(RTAX_ADVMSS, u32(mtu - 40)))
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL, "adding the default route")

    def link_mtu(self, index: int) -> int:
        """The MTU of link `index` (0 when absent)."""
        with self._lock:
            seq = self._send(RTM_GETLINK, 0, _IFINFO.pack(0, 0, index, 0, 0))
            while True:
                for t, s, payload in _messages(self.sock.recv(65536)):
                    if s != seq:
                        continue
                    if t == NLMSG_ERROR:
                        return 0
                    a = parse_attrs(payload[_IFINFO.size:])
                    return struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else 0

    def default_route_mtu(self) -> int:
        """The MTU of this namespace's default route (main table, lowest metric): its own
        `mtu` metric, else its interface's; 0 without a default route."""
        best: tuple[int, int, int] | None = None  # (priority, metric mtu, oif)
        for p in self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            _fam, dst_len, _sl, _tos, table, _proto, _scope, rtype, _fl = _RTMSG.unpack_from(p)
            a = parse_attrs(p[_RTMSG.size:])
            if RTA_TABLE in a:
                table = struct.unpack("=I", a[RTA_TABLE])[0]
            if table != 254 or rtype != 1 or dst_len:
                continue
            prio = struct.unpack("=I", a[RTA_PRIORITY])[0] if RTA_PRIORITY in a else 0
            mtu = 0
            if RTA_METRICS in a:
                m = parse_attrs(a[RTA_METRICS])
                mtu = struct.unpack("=I", m[RTAX_MTU])[0] if RTAX_MTU in m else 0
            oif = struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else 0
            if (mtu or oif) and (best is None or prio < best[0]):
                best = (prio, mtu, oif)
        if best is None:
            return 0
        return best[1] or self.link_mtu(best[2])

    def routes(self) -> list[ipaddress.IPv4Network]:
        """Destinations of the main table's IPv4 routes (the default route excluded)."""
        out = []
        for p in self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            _fam, dst_len, _sl, _tos, table, _proto, _scope, rtype, _fl = _RTMSG.unpack_from(p)
            a = parse_attrs(p[_RTMSG.size:])
            if RTA_TABLE in a:
                table = struct.unpack("=I", a[RTA_TABLE])[0]
            if table != 254 or rtype != 1 or not dst_len:
                continue
            dst = a.get(RTA_DST, b"\0\0\0\0")
            out.append(ipaddress.IPv4Network((dst, dst_len), strict=False))
        return out


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    i = 0
    while i + _NLHDR.size <= len(data):
        n, t, _f, seq, _pid = _NLHDR.unpack_from(data, i)
        if n < _NLHDR.size:
            break
        yield t, seq, data[i + _NLHDR.size:i + n]
        i += (n + 3) & ~3
