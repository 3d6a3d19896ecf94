"""MTUs of a container's interfaces and routes: with no MTU given, the bridge and its veths get
a loopback-sized MTU (large TCP segments between a container and the host or its neighbours)
while the container's default route carries the host's uplink MTU (what leaves the host is
sized as with docker); an MTU given is the link's, as in docker, also for `network connect`.

The checks run in the container's namespace (nsenter) with the host's python: the route MTU of
a UDP socket connected to an outside address (connect sends nothing) and the MSS of real TCP
connections to the host's addresses on the bridge and on another network."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest
from conftest import free_subnet, uniq

AUTO_LINK_MTU = 65520
OUTSIDE = "203.0.113.1"  # TEST-NET-3: only a route lookup, no packet is sent

PROBE = r"""
import fcntl, json, socket, struct, sys
out = {"links": {}}
for dev in sys.argv[1].split(","):  # SIOCGIFMTU (the host's /sys shows the host's links)
    req = struct.pack("16si", dev.encode(), 0)
    out["links"][dev] = struct.unpack_from("i", fcntl.ioctl(socket.socket(), 0x8921, req), 16)[0]
def route_mtu(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ip, 9))
    return s.getsockopt(socket.IPPROTO_IP, 14)  # IP_MTU
out["route"] = {ip: route_mtu(ip) for ip in sys.argv[2].split(",")}
out["mss"] = {}
for dst in sys.argv[3].split(",") if sys.argv[3] else []:
    ip, port = dst.split(":")
    c = socket.create_connection((ip, int(port)), timeout=5)
    out["mss"][ip] = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    c.close()
print(json.dumps(out))
"""


def uplink_mtu() -> int:
    """The host's default route's MTU (its own `mtu` metric, else its interface's), lowest
    metric first; 1500 without a default route."""
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "default"], capture_output=True,
                         text=True).stdout
    best = None
    for line in out.splitlines():
        f = line.split()
        kv = dict(zip(f[1::2], f[2::2])) if f and f[0] == "default" else {}
        if "dev" not in kv and "mtu" not in kv:
            continue
        mtu = int(kv["mtu"]) if "mtu" in kv and kv["mtu"] != "lock" else 0
        if not mtu:
            with open(f"/sys/class/net/{kv['dev']}/mtu") as fh:
                mtu = int(fh.read())
        prio = int(kv.get("metric", 0))
        if best is None or prio < best[0]:
            best = (prio, mtu)
    return best[1] if best else 1500


class Listener:
    """TCP listeners on the host's addresses; records the MSS of each accepted connection."""

    def __init__(self, ips: list[str]) -> None:
        self.mss: dict[str, int] = {}
        self.addrs = []
        for ip in ips:
            s = socket.socket()
            s.bind((ip, 0))
            s.listen(2)
            s.settimeout(10)
            self.addrs.append(f"{ip}:{s.getsockname()[1]}")
            threading.Thread(target=self._accept, args=(s, ip), daemon=True).start()

    def _accept(self, s: socket.socket, ip: str) -> None:
        try:
            c, _ = s.accept()
        except OSError:
            return
        self.mss[ip] = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        c.close()
        s.close()


def probe(nd, cid: str, devs: list[str], route_to: list[str], tcp_to: list[str]) -> dict:
    st, doc = nd.json("GET", f"/containers/{cid}/json")
    assert st == 200, doc
    pid = doc["State"]["Pid"]
    r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "python3", "-c", PROBE,
                        ",".join(devs), ",".join(route_to), ",".join(tcp_to)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def other_net(nd):
    """A user network with an MTU given, whose gateway is another of the host's addresses."""
    name, subnet = uniq("mtu-"), free_subnet()
    r = nd.sampan("network", "create", "--subnet", str(subnet), "-o",
                  "com.docker.network.driver.mtu=1400", name)
    assert r.returncode == 0, r.stderr
    yield name, str(next(subnet.hosts()))
    nd.sampan("network", "rm", name)


def test_auto_mtu_large_on_the_bridge_uplink_sized_through_the_gateway(nd, other_net):
    name, other_gw = other_net
    gw = str(nd.bip.ip)
    up = uplink_mtu()
    cid = nd.sampan("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert cid, nd.log()[-2000:]
    try:
        # the other network's bridge gets its address when first used
        r = nd.sampan("network", "connect", name, cid)
        assert r.returncode == 0, r.stderr
        nd.sampan("network", "disconnect", name, cid)
        lst = Listener([gw, other_gw])
        out = probe(nd, cid, ["eth0"], [gw, OUTSIDE], lst.addrs)
        assert out["links"]["eth0"] == AUTO_LINK_MTU
        with open(f"/sys/class/net/{nd.bridge}/mtu") as f:
            assert int(f.read()) == AUTO_LINK_MTU
        # on-link: the host's bridge address (and the neighbours) with the link's MTU
        assert out["route"][gw] == AUTO_LINK_MTU
        # (a new connection's MSS is bounded by half its largest window yet: 32 KiB)
        assert out["mss"][gw] > 16000 and lst.mss[gw] > 16000, (out, lst.mss)
        # through the gateway: sized for the host's uplink, both ways (advertised MSS)
        assert out["route"][OUTSIDE] == min(up, AUTO_LINK_MTU)
        assert out["mss"][other_gw] <= up - 40 and lst.mss[other_gw] <= up - 40, \
            (up, out, lst.mss)
    finally:
        nd.sampan("rm", "-f", cid)


def test_given_mtu_is_the_links_also_on_connect(nd, other_net):
    """`-o com.docker.network.driver.mtu` sets the link, no route MTU (docker's behaviour);
    an interface added by `network connect` gets its own network's MTU."""
    name, other_gw = other_net
    cid = nd.sampan("run", "-d", "--network", name, "busybox", "sleep", "60").stdout.strip()
    assert cid, nd.log()[-2000:]
    try:
        out = probe(nd, cid, ["eth0"], [other_gw, OUTSIDE], [])
        assert out["links"]["eth0"] == 1400
        assert out["route"] == {other_gw: 1400, OUTSIDE: 1400}
    finally:
        nd.sampan("rm", "-f", cid)
    cid = nd.sampan("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert cid, nd.log()[-2000:]
    try:
        r = nd.sampan("network", "connect", name, cid)
        assert r.returncode == 0, r.stderr
        out = probe(nd, cid, ["eth0", "eth1"], [str(nd.bip.ip), other_gw, OUTSIDE], [])
        assert out["links"] == {"eth0": AUTO_LINK_MTU, "eth1": 1400}
        assert out["route"] == {str(nd.bip.ip): AUTO_LINK_MTU, other_gw: 1400,
                                OUTSIDE: min(uplink_mtu(), AUTO_LINK_MTU)}
    finally:
        nd.sampan("rm", "-f", cid)


def test_bridge_with_a_port_of_its_own_keeps_its_mtu(nroot, busybox_archive):
    """`--bridge` naming a bridge that already has a port which is not one of Sampan's veths
    (a physical NIC; here a veth named otherwise, this kernel has no dummy links): its MTU
    stays, the containers' veths get it and no route MTU is set."""
    from conftest import NetDaemon, cleanup_daemon
    from daemonlib import mkdir

    d = NetDaemon(mkdir(nroot / uniq("port-")), fake=False)
    d.bridge, nic = uniq("stp"), uniq("nic")
    subnet = free_subnet()
    d.bip = __import__("ipaddress").IPv4Interface(f"{next(subnet.hosts())}/24")
    try:
        for c in (f"link add {d.bridge} type bridge",
                  f"link add {nic} mtu 1480 type veth peer name {nic}p mtu 1480",
                  f"link set {nic} master {d.bridge}", f"link set {nic} up"):
            subprocess.run(["ip", *c.split()], check=True)
        d.start_net()
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        cid = d.sampan("run", "-d", "busybox", "sleep", "60").stdout.strip()
        assert cid, d.log()[-2000:]
        out = probe(d, cid, ["eth0"], [str(d.bip.ip), OUTSIDE], [])
        assert out["links"]["eth0"] == 1480
        assert out["route"] == {str(d.bip.ip): 1480, OUTSIDE: 1480}
    finally:
        cleanup_daemon(d)  # (deletes the bridge)
        subprocess.run(["ip", "link", "del", nic], capture_output=True)  # (and its peer)
