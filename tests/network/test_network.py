"""Networking through a real sampand: user networks with names, aliases and the embedded DNS,
isolation between networks, published ports from the host's loopback and from a namespace
playing a remote client, -P, links, --dns*/--add-host, none/host modes, clear errors."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import urllib.parse

import pytest
from conftest import free_subnet, uniq, wait_http

DNS = ("--dns", "127.0.0.1")  # the embedded DNS forwards to the test's fake upstream


def q(filters):
    return urllib.parse.quote(json.dumps(filters))


def run(nd, *args, check=True):
    r = nd.sampan("run", "--rm", *args)
    if check:
        assert r.returncode == 0, (r.stdout, r.stderr, nd.log()[-2000:])
    return r


def inspect(nd, name):
    st, doc = nd.json("GET", f"/containers/{name}/json")
    assert st == 200, doc
    return doc


@pytest.fixture(scope="module")
def nets(nd):
    n1, n2 = uniq("n1-"), uniq("n2-")
    s1, s2 = free_subnet(), free_subnet()
    for n, s in ((n1, s1), (n2, s2)):
        r = nd.sampan("network", "create", "--subnet", str(s), "--label", "t=1", n)
        assert r.returncode == 0, r.stderr
    web = uniq("web")
    r = nd.sampan("run", "-d", "--name", web, "--network", n1, "--network-alias", "www",
                  *DNS, "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    ip = inspect(nd, web)["NetworkSettings"]["Networks"][n1]["IPAddress"]
    wait_http(f"http://{ip}/hostname")  # httpd is up (busybox wget crashes on a refusal)
    yield {"n1": n1, "n2": n2, "s1": s1, "s2": s2, "web": web}
    nd.sampan("rm", "-f", web)
    nd.sampan("network", "rm", n1, n2)


def test_user_network_name_and_alias(nd, nets, fake_dns):
    web = nets["web"]
    doc = inspect(nd, web)
    ep = doc["NetworkSettings"]["Networks"][nets["n1"]]
    ip = ep["IPAddress"]
    assert ipaddress.IPv4Address(ip) in nets["s1"]
    assert ep["IPPrefixLen"] == 24 and ep["Gateway"] == str(next(nets["s1"].hosts()))
    assert ep["MacAddress"].startswith("02:42:") and len(ep["EndpointID"]) == 64
    assert "www" in ep["Aliases"]
    r = run(nd, "--network", nets["n1"], *DNS, "busybox", "sh", "-c",
            f"grep nameserver /etc/resolv.conf; nslookup {web} 127.0.0.11; ping -c1 -W2 {web}; "
            "wget -qO- http://www/hostname; ping -c1 -W2 www")
    assert "nameserver 127.0.0.11" in r.stdout
    assert f"Address: {ip}" in r.stdout
    assert r.stdout.count("1 packets received") == 2
    assert doc["Config"]["Hostname"] in r.stdout  # the httpd served its /etc/hostname


def test_dns_forwards_other_names_upstream(nd, nets, fake_dns):
    r = run(nd, "--network", nets["n1"], *DNS, "busybox", "nslookup", "host1.upstream.test")
    assert "10.9.9.9" in r.stdout
    assert "host1.upstream.test" in fake_dns.queries


def test_networks_are_isolated(nd, nets, fake_dns):
    ip = inspect(nd, nets["web"])["NetworkSettings"]["Networks"][nets["n1"]]["IPAddress"]
    r = run(nd, "--network", nets["n2"], *DNS, "busybox", "sh", "-c",
            f"nslookup {nets['web']} 127.0.0.11; echo rc=$?; "
            f"ping -c1 -W1 {ip}; wget -T 2 -qO- http://{ip}/hostname; echo wget=$?",
            check=False)
    assert "rc=1" in r.stdout and "NXDOMAIN" in r.stdout, r.stdout
    assert "0 packets received" in r.stdout and "wget=1" in r.stdout, r.stdout
    # and the default bridge has no name resolution at all (docker's behaviour)
    r = run(nd, "busybox", "sh", "-c", "grep -c 127.0.0.11 /etc/resolv.conf; true")
    assert r.stdout.strip() == "0"


def test_published_port_on_loopback_and_from_a_remote_namespace(nd):
    name = uniq("pub")
    r = nd.sampan("run", "-d", "--name", name, "-p", "127.0.0.1::80", "-p", "0:80",
                  "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    try:
        ports = inspect(nd, name)["NetworkSettings"]["Ports"]["80/tcp"]
        lo = next(p for p in ports if p["HostIp"] == "127.0.0.1")["HostPort"]
        anyp = next(p for p in ports if p["HostIp"] == "0.0.0.0")["HostPort"]
        out = nd.sampan("port", name, "80").stdout.split()
        assert f"127.0.0.1:{lo}" in out and f"0.0.0.0:{anyp}" in out
        hostname = inspect(nd, name)["Config"]["Hostname"].encode()
        assert wait_http(f"http://127.0.0.1:{lo}/hostname").strip() == hostname
        assert wait_http(f"http://127.0.0.1:{anyp}/hostname").strip() == hostname
        # a "remote" client: a namespace of the test's own behind a veth pair
        ns, veth = uniq("sntc"), uniq("snv")
        sub = free_subnet(30)
        h, c = list(sub.hosts())
        sh = (f"ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} && "
              f"ip addr add {h}/30 dev {veth} && ip link set {veth} up && "
              f"ip -n {ns} addr add {c}/30 dev eth0 && ip -n {ns} link set eth0 up && "
              f"ip -n {ns} link set lo up && ip -n {ns} route add default via {h}")
        subprocess.run(["sh", "-c", sh], check=True)
        try:
            # (the host's busybox is static glibc: its wget crashes loading the host's NSS)
            fetch = ("import sys, urllib.request as u; "
                     "print(u.urlopen(sys.argv[1], timeout=3).read().decode())")
            got = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", fetch,
                                  f"http://{h}:{anyp}/hostname"],
                                 capture_output=True, text=True, timeout=20)
            assert got.stdout.strip() == hostname.decode(), got.stderr
            # the loopback-only binding is not reachable from outside
            got = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", fetch,
                                  f"http://{h}:{lo}/hostname"],
                                 capture_output=True, text=True, timeout=20)
            assert got.returncode != 0 and "refused" in got.stderr
        finally:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    finally:
        nd.sampan("rm", "-f", name)


def test_publish_all_with_expose_and_ps(nd):
    name = uniq("pall")
    r = nd.sampan("run", "-d", "--name", name, "-P", "--expose", "80", "--expose", "7000/udp",
                  "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    try:
        ports = inspect(nd, name)["NetworkSettings"]["Ports"]
        assert set(ports) == {"80/tcp", "7000/udp"}
        port = int(ports["80/tcp"][0]["HostPort"])
        assert 0 < port < 65536 and ports["7000/udp"][0]["HostPort"]
        wait_http(f"http://127.0.0.1:{port}/hostname")
        # another container reaches it through the host's (gateway) address
        r = run(nd, "busybox", "wget", "-qO-", f"http://{nd.bip.ip}:{port}/hostname")
        assert r.stdout.strip() == inspect(nd, name)["Config"]["Hostname"]
        ps = nd.sampan("ps", "--filter", f"name={name}").stdout
        assert f"0.0.0.0:{port}->80/tcp" in ps
        st, lst = nd.json("GET", "/containers/json?filters=" + q({"name": [name]}))
        assert {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"} in \
            lst[0]["Ports"]
    finally:
        nd.sampan("rm", "-f", name)


def test_port_in_use_is_a_clear_error(nd):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        before = nd.json("GET", "/containers/json?all=1")[1]
        r = nd.sampan("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        assert r.returncode == 125
        assert "port is already allocated" in r.stderr and str(port) in r.stderr
        after = nd.json("GET", "/containers/json?all=1")[1]
        assert len(after) <= len(before) + 1  # the create stays, no endpoint leaks
    finally:
        s.close()
    # two containers wanting the same port: the second fails, the first keeps it
    name = uniq("p1")
    r = nd.sampan("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox",
                  "sleep", "30")
    assert r.returncode == 0, r.stderr
    try:
        r = nd.sampan("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        assert r.returncode == 125 and "port is already allocated" in r.stderr
    finally:
        nd.sampan("rm", "-f", name)


def test_link_hosts_entry_and_variables(nd):
    name = uniq("db")
    r = nd.sampan("run", "-d", "--name", name, "--expose", "5432", "-e", "SECRET=x1",
                  "busybox", "httpd", "-f", "-p", "5432", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    try:
        ip = inspect(nd, name)["NetworkSettings"]["IPAddress"]
        wait_http(f"http://{ip}:5432/hostname")
        r = run(nd, "--name", uniq("app"), "--link", f"{name}:db", "busybox", "sh", "-c",
                "cat /etc/hosts; env; wget -qO- http://db:5432/hostname")
        assert f"{ip}\tdb {inspect(nd, name)['Id'][:12]} {name}" in r.stdout
        for var in (f"DB_PORT=tcp://{ip}:5432", f"DB_PORT_5432_TCP_ADDR={ip}",
                    "DB_PORT_5432_TCP_PORT=5432", "DB_PORT_5432_TCP_PROTO=tcp",
                    "DB_ENV_SECRET=x1"):
            assert var in r.stdout, r.stdout
        assert "DB_NAME=/" in r.stdout
        # a link to a stopped container is refused
        nd.sampan("stop", "-t", "0", name)
        r = nd.sampan("run", "--rm", "--link", f"{name}:db", "busybox", "true")
        assert r.returncode == 125 and "non running container" in r.stderr
    finally:
        nd.sampan("rm", "-f", name)


def test_dns_flags_and_extra_hosts(nd):
    r = run(nd, "--dns", "192.0.2.53", "--dns-search", "example.test", "--dns-option",
            "ndots:2", "--add-host", "db.local:10.1.2.3", "--add-host", "gw:host-gateway",
            "-h", "myhost", "busybox", "sh", "-c", "cat /etc/resolv.conf /etc/hosts; hostname")
    assert "nameserver 192.0.2.53" in r.stdout
    assert "search example.test" in r.stdout and "options ndots:2" in r.stdout
    assert "10.1.2.3\tdb.local" in r.stdout
    assert f"{nd.bip.ip}\tgw" in r.stdout
    assert r.stdout.strip().endswith("myhost")
    # the host's resolv.conf minus loopback resolvers by default
    r = run(nd, "busybox", "cat", "/etc/resolv.conf")
    assert "nameserver 127." not in r.stdout


def test_default_bridge_address_gateway_and_mtu(nd):
    r = run(nd, "busybox", "sh", "-c", "ip -4 addr show eth0; ip route; cat "
                                        "/sys/class/net/eth0/mtu")
    assert str(nd.bip.network) in r.stdout or f"/{nd.bip.network.prefixlen}" in r.stdout
    assert f"default via {nd.bip.ip}" in r.stdout
    assert r.stdout.strip().endswith("65520")  # no --mtu: loopback-sized (test_mtu.py)
    r = run(nd, "busybox", "ping", "-c1", "-W2", str(nd.bip.ip))
    assert "1 packets received" in r.stdout


def test_none_host_and_container_modes(nd):
    r = run(nd, "--network", "none", "busybox", "ip", "-o", "link")
    assert [ln.split(":")[1].strip() for ln in r.stdout.splitlines()] == ["lo"]
    r = run(nd, "--network", "host", "--add-host", "extra.test:10.1.1.1", "busybox", "cat",
            "/etc/hosts")
    assert "10.1.1.1\textra.test" in r.stdout
    r = run(nd, "--network", "host", "busybox", "ip", "-o", "link")
    with open("/proc/net/route") as f:  # the host's default route's interface is there
        dev = next(ln.split()[0] for ln in f if ln.split()[1] == "00000000")
    with open(f"/sys/class/net/{dev}/address") as f:
        assert f.read().strip() in r.stdout
    name = uniq("ns")
    assert nd.sampan("run", "-d", "--name", name, "busybox", "sleep", "30").returncode == 0
    try:
        ip = inspect(nd, name)["NetworkSettings"]["IPAddress"]
        r = run(nd, "--network", f"container:{name}", "busybox", "ip", "-4", "addr")
        assert ip in r.stdout
    finally:
        nd.sampan("rm", "-f", name)


def test_bad_input_changes_nothing(nd, nets):
    before = nd.json("GET", "/networks")[1]
    r = nd.sampan("network", "create", "--subnet", str(nets["s1"]), uniq("ov"))
    assert r.returncode == 1 and "overlaps" in r.stderr
    sub = nets["s1"].subnet_of  # noqa: F841 - a smaller subnet inside one in use
    inner = list(nets["s1"].subnets(new_prefix=26))[1]
    r = nd.sampan("network", "create", "--subnet", str(inner), uniq("ov"))
    assert r.returncode == 1 and "overlaps" in r.stderr
    r = nd.sampan("network", "create", nets["n1"])
    assert r.returncode == 1 and "already exists" in r.stderr
    for body, status in (({"Name": "bad name"}, 400), ({"Name": "x", "Driver": "nope"}, 404),
                         ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}, 400),
                         ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24",
                                                             "Gateway": "10.78.0.1"}]}}, 400),
                         ({}, 400)):
        st, out = nd.json("POST", "/networks/create", body)
        assert st == status, (body, st, out)
        assert out["message"]
    assert nd.json("GET", "/networks")[1] == before
    r = nd.sampan("run", "--rm", "--network", "no-such-net", "busybox", "true")
    assert r.returncode == 125 and "not found" in r.stderr
    r = nd.sampan("run", "--rm", "--network-alias", "x", "busybox", "true")
    assert r.returncode == 125 and "user-defined" in r.stderr
    r = nd.sampan("run", "--rm", "-p", "70000:80", "busybox", "true")
    assert r.returncode != 0
    st, out = nd.json("DELETE", "/networks/bridge")
    assert st == 403 and "pre-defined" in out["message"]
    st, out = nd.json("DELETE", f"/networks/{nets['n1']}")
    assert st == 403 and "active endpoints" in out["message"]


def test_network_api_list_inspect_prune_connect(nd, nets):
    st, lst = nd.json("GET", "/networks?filters=" + q({"label": ["t=1"]}))
    assert st == 200 and {n["Name"] for n in lst} == {nets["n1"], nets["n2"]}
    st, lst = nd.json("GET", "/networks?filters=" + q({"type": ["builtin"]}))
    assert {n["Name"] for n in lst} == {"bridge", "host", "none"}
    st, net = nd.json("GET", f"/networks/{nets['n1']}")
    web_id = inspect(nd, nets["web"])["Id"]
    assert net["Containers"][web_id]["Name"] == nets["web"]
    assert net["IPAM"]["Config"][0]["Subnet"] == str(nets["s1"])
    # connect a created container to a second network, then run it: two interfaces
    name = uniq("multi")
    r = nd.sampan("create", "--name", name, "--network", nets["n1"], *DNS, "busybox", "sh",
                  "-c", f"ip -4 -o addr; nslookup {nets['web']} 127.0.0.11")
    assert r.returncode == 0, r.stderr
    try:
        r = nd.sampan("network", "connect", "--alias", "m2", nets["n2"], name)
        assert r.returncode == 0, r.stderr
        r = nd.sampan("start", "-a", name)
        assert r.returncode == 0, r.stderr
        assert "eth0" in r.stdout and "eth1" in r.stdout
        assert str(nets["s2"])[:-5] in r.stdout
        r = nd.sampan("network", "disconnect", nets["n2"], name)
        assert r.returncode == 0, r.stderr
        assert nets["n2"] not in inspect(nd, name)["NetworkSettings"]["Networks"]
    finally:
        nd.sampan("rm", "-f", name)
    tmp = uniq("tmp")
    assert nd.sampan("network", "create", tmp).returncode == 0
    r = nd.sampan("network", "prune", "-f")
    assert tmp in r.stdout and nets["n1"] not in r.stdout


def test_connect_running_container(nd, nets, fake_dns):
    name = uniq("hot")
    r = nd.sampan("run", "-d", "--name", name, *DNS, "busybox", "sleep", "60")
    assert r.returncode == 0, r.stderr
    try:
        r = nd.sampan("network", "connect", nets["n1"], name)
        assert r.returncode == 0, r.stderr
        ip = inspect(nd, name)["NetworkSettings"]["Networks"][nets["n1"]]["IPAddress"]
        assert ipaddress.IPv4Address(ip) in nets["s1"]
        # as dockerd: on its first user network it resolves through the embedded DNS
        r = nd.sampan("exec", name, "sh", "-c",
                      f"grep nameserver /etc/resolv.conf; ping -c1 -W2 {nets['web']}")
        assert r.stdout.startswith("nameserver 127.0.0.11\n"), r
        assert "1 packets received" in r.stdout, r
        r = run(nd, "--network", nets["n1"], *DNS, "busybox", "ping", "-c1", "-W2", name)
        assert "1 packets received" in r.stdout
    finally:
        nd.sampan("rm", "-f", name)


def test_internal_network_has_no_way_out(nd, fake_dns):
    net, sub = uniq("int"), free_subnet()
    assert nd.sampan("network", "create", "--internal", "--subnet", str(sub),
                     net).returncode == 0
    peer = uniq("peer")
    try:
        assert nd.sampan("run", "-d", "--name", peer, "--network", net, "busybox", "sleep",
                         "30").returncode == 0
        r = run(nd, "--network", net, *DNS, "busybox", "sh", "-c",
                f"ip route; ping -c1 -W2 {peer}")
        assert "default" not in r.stdout and "1 packets received" in r.stdout
        assert nd.json("GET", f"/networks/{net}")[1]["Internal"] is True
    finally:
        nd.sampan("rm", "-f", peer)
        nd.sampan("network", "rm", net)


def test_network_events(nd):
    import time

    since = time.time() - 1
    net = uniq("ev")
    assert nd.sampan("network", "create", "--subnet", str(free_subnet()), net).returncode == 0
    name = uniq("evc")
    run(nd, "--name", name, "--network", net, "busybox", "true")
    assert nd.sampan("network", "rm", net).returncode == 0
    pruned = uniq("evp")
    assert nd.sampan("network", "create", pruned).returncode == 0
    assert pruned in nd.sampan("network", "prune", "-f").stdout
    until = time.time() + 1
    st, _h, body = nd.request("GET", f"/events?since={since}&until={until}&filters="
                              + q({"type": ["network"]}))
    evs = [json.loads(ln) for ln in body.splitlines() if ln.strip()]
    mine = [(e["Action"], e["Actor"]["Attributes"].get("container")) for e in evs
            if e["Actor"]["Attributes"].get("name") == net]
    cid = [e["Actor"]["Attributes"]["container"] for e in evs
           if e["Action"] == "connect" and e["Actor"]["Attributes"].get("name") == net][0]
    assert mine == [("create", None), ("connect", cid), ("disconnect", cid),
                    ("destroy", None)], mine
    assert [e["Action"] for e in evs if e["Actor"]["Attributes"].get("name") == pruned] == \
        ["create", "destroy"]


def test_port_ranges(nd):
    s1, s2 = socket.socket(), socket.socket()
    s1.bind(("127.0.0.1", 0))
    base = s1.getsockname()[1]
    s1.close()
    name = uniq("rng")
    # pairwise ranges, and a host range the daemon picks a free port from
    r = nd.sampan("run", "-d", "--name", name, "-p", f"127.0.0.1:{base}-{base + 1}:80-81",
                  "-p", f"127.0.0.1:{base + 2}-{base + 9}:82", "busybox", "sleep", "30")
    if r.returncode != 0 and "already allocated" in r.stderr:
        pytest.skip("ports of the range are taken by something else")
    assert r.returncode == 0, r.stderr
    try:
        ports = inspect(nd, name)["NetworkSettings"]["Ports"]
        assert ports["80/tcp"][0]["HostPort"] == str(base)
        assert ports["81/tcp"][0]["HostPort"] == str(base + 1)
        assert base + 2 <= int(ports["82/tcp"][0]["HostPort"]) <= base + 9
    finally:
        nd.sampan("rm", "-f", name)
        s2.close()
    r = nd.sampan("run", "--rm", "-p", "8000-8002:80-81", "busybox", "true")
    assert r.returncode != 0 and "invalid ranges" in r.stderr


def test_default_pools_avoid_host_routes():
    from sampan.drivers.network import ipam

    taken = [ipaddress.IPv4Network("172.17.0.0/16"), ipaddress.IPv4Network("172.18.5.0/24")]
    assert str(ipam.pick_pool(taken)) == "172.19.0.0/16"
    everything = [ipaddress.IPv4Network("172.16.0.0/12"), ipaddress.IPv4Network("192.168.0.0/16")]
    with pytest.raises(ipam.PoolExhausted):
        ipam.pick_pool(everything)
    sub = ipaddress.IPv4Network("10.0.0.0/29")
    used = {"10.0.0.1", "10.0.0.2"}
    assert str(ipam.first_free(sub, used)) == "10.0.0.3"
    with pytest.raises(ipam.PoolExhausted):
        ipam.first_free(sub, {str(h) for h in sub.hosts()})
