"""Nothing leaks: after rm, across a daemon restart (live-restore keeps running containers
connected: ports, DNS) and after kill -9 of the daemon followed by a restart (reconciled).

The check looks at everything the daemon can leave behind on the host — links enslaved to its
bridge, the bridge's addresses, firewall rules naming its bridges, subnets or DNAT targets,
pinned namespaces (files and mounts), endpoint records, held ports — and expects it to be
exactly as before. (Links/rules of unrelated software change while other tests run, so they are
left out of the comparison.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import NetDaemon, cleanup_daemon, free_subnet, make_daemon, uniq, wait_http


@pytest.fixture
def d(nroot, busybox_archive, request):
    dd = make_daemon(nroot / uniq("cleanup-"), busybox_archive)
    yield dd
    cleanup_daemon(dd)


def our_state(d, extra_subnets=()) -> dict:
    bridges = [d.bridge]
    st, nets = d.json("GET", "/networks") if d.proc is not None else (0, [])
    for n in nets or []:
        br = (n.get("Options") or {}).get("com.docker.network.bridge.name")
        if n["Driver"] == "bridge" and not br:
            bridges.append("br-" + n["Id"][:12])
    subnets = [str(d.bip.network), *map(str, extra_subnets)]
    prefixes = [s.rsplit(".", 1)[0] + "." for s in subnets]
    links = []
    for b in bridges:
        out = subprocess.run(["ip", "-o", "link", "show", "master", b], capture_output=True,
                             text=True).stdout
        links += [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]
    addrs = []
    for b in bridges:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", b], capture_output=True,
                             text=True).stdout
        addrs += [ln.split()[3] for ln in out.splitlines()]
    rules = []
    for t in ("filter", "nat"):
        out = subprocess.run(["iptables", "-w", "-t", t, "-S"], capture_output=True,
                             text=True).stdout
        rules += [r for r in out.splitlines()
                  if any(b in r for b in bridges) or any(p in r for p in prefixes)]
    ns_dir = d.exec / "netns"
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(ln.split()[4] for ln in f if str(ns_dir) in ln)
    eps = d.exec / "network" / "endpoints"
    return {"links": sorted(links), "addrs": sorted(addrs), "rules": sorted(rules),
            "netns": sorted(os.listdir(ns_dir)) if ns_dir.is_dir() else [],
            "mounts": mounts,
            "endpoints": sorted(os.listdir(eps)) if eps.is_dir() else []}


def settle(d, want, extra=(), timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        now = our_state(d, extra)
        if now == want or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def idle_state(d, extra) -> dict:
    """The state with no container running (the kernel may still be destroying the last
    one's veth pair)."""
    deadline = time.monotonic() + 10
    while True:
        now = our_state(d, extra)
        if (not now["links"] and not now["netns"]) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_web(d, net, port, name=None):
    name = name or uniq("web")
    r = d.sampan("run", "-d", "--name", name, "--network", net, "--dns", "127.0.0.1",
                 "-p", f"127.0.0.1:{port}:80", "busybox", "httpd", "-f", "-p", "80", "-h",
                 "/etc")
    assert r.returncode == 0, r.stderr
    wait_http(f"http://127.0.0.1:{port}/hostname")
    return name


def warm_up(d, net):
    """Bridges and their rules appear when a container first uses a network (and stay, like
    docker0): use both networks once before taking the reference state."""
    d.sampan("rm", "-f", start_web(d, net, free_port()))
    assert d.sampan("run", "--rm", "busybox", "true").returncode == 0


def fresh_network(d, prefix):
    """A new network on a free subnet, warmed up: (subnet, name, the idle state that removing
    containers must come back to)."""
    sub = free_subnet()
    net = uniq(prefix)
    assert d.sampan("network", "create", "--subnet", str(sub), net).returncode == 0
    warm_up(d, net)
    return sub, net, idle_state(d, [sub])


def resolve_from(d, net, name):
    r = d.sampan("run", "--rm", "--network", net, "--dns", "127.0.0.1", "busybox",
                 "nslookup", name, "127.0.0.11")
    return r.stdout


def test_rm_leaves_nothing(d):
    sub, net, before = fresh_network(d, "cn")
    port = free_port()
    names = [start_web(d, net, port)]
    r = d.sampan("run", "--rm", "-p", "0:80", "busybox", "true")  # default bridge, --rm
    assert r.returncode == 0, r.stderr
    names.append(uniq("stopped"))
    assert d.sampan("run", "--name", names[-1], "-P", "--expose", "9", "busybox",
                    "true").returncode == 0
    during = our_state(d, [sub])
    assert len(during["netns"]) == 1 and during["rules"] != before["rules"]
    for n in names:
        assert d.sampan("rm", "-f", n).returncode == 0
    assert settle(d, before, [sub]) == before
    assert port_free(port)
    # removing the network removes its bridge and rules too
    assert d.sampan("network", "rm", net).returncode == 0
    gone = our_state(d, [sub])
    assert not [r for r in gone["rules"] if str(sub).rsplit(".", 1)[0] in r]
    assert not any(a.startswith(str(sub).rsplit(".", 1)[0]) for a in gone["addrs"])


def test_daemon_restart_keeps_running_containers_connected(d):
    sub, net, before = fresh_network(d, "rn")
    port = free_port()
    web = start_web(d, net, port)
    assert d.stop() == 0
    wait_http(f"http://127.0.0.1:{port}/hostname")  # served while the daemon is down
    d.start_net()
    wait_http(f"http://127.0.0.1:{port}/hostname")
    assert "Address: " + str(sub)[:-4] in resolve_from(d, net, web)  # DNS listener reopened
    r = d.sampan("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
    assert r.returncode == 125 and "already allocated" in r.stderr  # the port is still held
    # the running container's address stays allocated across the restart
    ip = d.json("GET", f"/containers/{web}/json")[1]["NetworkSettings"]["Networks"][net][
        "IPAddress"]
    r = d.sampan("run", "--rm", "--network", net, "busybox", "ip", "-4", "-o", "addr", "show",
                 "eth0")
    assert r.returncode == 0 and f"inet {ip}/" not in r.stdout and str(sub)[:-5] in r.stdout
    assert d.sampan("rm", "-f", web).returncode == 0
    assert settle(d, before, [sub]) == before
    assert port_free(port)


def test_kill9_then_restart_reconciles(d):
    sub, net, before = fresh_network(d, "kn")
    keep_port, die_port = free_port(), free_port()
    keep = start_web(d, net, keep_port)
    die = start_web(d, net, die_port)
    st, doc = d.json("GET", f"/containers/{die}/json")
    pid = doc["State"]["Pid"]
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    os.kill(pid, signal.SIGKILL)  # one container dies while nobody watches
    time.sleep(0.5)
    d.start_net()
    # the dead one's endpoint is gone (rules, namespace, port); the other still serves
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not port_free(die_port):
        time.sleep(0.1)
    assert port_free(die_port)
    state = our_state(d, [sub])
    assert len(state["netns"]) == 1 and len(state["endpoints"]) == 1
    assert not [r for r in state["rules"] if f"--dport {die_port}" in r]
    wait_http(f"http://127.0.0.1:{keep_port}/hostname")
    assert "Address: " in resolve_from(d, net, keep)
    st, doc = d.json("GET", f"/containers/{die}/json")
    assert doc["State"]["Running"] is False and doc["NetworkSettings"]["Ports"] == {}
    for n in (keep, die):
        assert d.sampan("rm", "-f", n).returncode == 0
    assert settle(d, before, [sub]) == before


def test_bridge_none_gives_containers_no_network(nroot, busybox_archive):
    from daemonlib import mkdir

    d = NetDaemon(mkdir(nroot / uniq("bnone-")), fake=False)
    d.start("--bridge", "none")
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200
        r = d.sampan("run", "--rm", "busybox", "ip", "-o", "link")
        assert r.returncode == 0, r.stderr
        assert [ln.split(":")[1].strip() for ln in r.stdout.splitlines()] == ["lo"]
        r = d.sampan("run", "--rm", "--network", "bridge", "busybox", "true")
        assert r.returncode == 125 and "disabled" in r.stderr
        assert subprocess.run(["ip", "link", "show", "none"],
                              capture_output=True).returncode != 0
    finally:
        d.stop()


def test_daemons_sharing_a_bridge_never_share_an_address(nroot, busybox_archive):
    from daemonlib import mkdir

    a = make_daemon(nroot / uniq("sha-"), busybox_archive)
    b = NetDaemon(mkdir(nroot / uniq("shb-")), fake=False)
    b.bridge, b.bip = a.bridge, a.bip  # the same bridge (name and address)
    b.start_net()
    try:
        st, _h, body = b.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200
        ips = []
        for d in (a, b, a, b):
            name = uniq("s")
            assert d.sampan("run", "-d", "--name", name, "busybox", "sleep", "30"
                            ).returncode == 0
            ips.append(d.json("GET", f"/containers/{name}/json")[1]["NetworkSettings"][
                "IPAddress"])
        assert len(set(ips)) == 4, ips
        lease_dir = f"/run/sampan-leases/{a.bridge}"
        assert sorted(os.listdir(lease_dir)) == sorted(ips)
    finally:
        cleanup_daemon(b)
        cleanup_daemon(a)
    assert not os.path.exists(lease_dir)  # every lease released, the directory with them


def test_mtu_flag(nroot, busybox_archive):
    from daemonlib import mkdir

    d = NetDaemon(mkdir(nroot / uniq("mtu-")), fake=False)
    d.bridge = uniq("stm")
    net = free_subnet()
    d.bip = __import__("ipaddress").IPv4Interface(f"{next(net.hosts())}/24")
    d.start("--bridge", d.bridge, "--bip", str(d.bip), "--mtu", "9000")
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200
        r = d.sampan("run", "-d", "busybox", "sleep", "30")
        assert r.returncode == 0, r.stderr
        cid = r.stdout.strip()
        r = d.sampan("exec", cid, "cat", "/sys/class/net/eth0/mtu")
        assert r.stdout.strip() == "9000", r.stderr
        with open(f"/sys/class/net/{d.bridge}/mtu") as f:  # (a bridge follows its ports')
            assert f.read().strip() == "9000"
    finally:
        cleanup_daemon(d)
