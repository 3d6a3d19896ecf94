"""The real docker CLI (28) and docker-py (7) run the network flows against sampand."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import free_subnet, uniq, wait_http

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def dk(nd, *args, ok=True):
    r = nd.docker(*args)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_docker_cli_network_flows(nd, fake_dns):
    net, sub = uniq("dn"), free_subnet()
    out = dk(nd, "network", "create", "--subnet", str(sub), "--label", "k=v", net).stdout
    net_id = out.strip()
    assert len(net_id) == 64
    ls = dk(nd, "network", "ls").stdout
    assert "NETWORK ID" in ls and net in ls and "bridge" in ls and "host" in ls
    assert dk(nd, "network", "ls", "-q", "--filter", "label=k=v").stdout.split() == [net_id[:12]]
    info = json.loads(dk(nd, "network", "inspect", net).stdout)[0]
    assert info["IPAM"]["Config"][0]["Subnet"] == str(sub)
    assert dk(nd, "network", "inspect", "-f", "{{.Driver}}", net).stdout.strip() == "bridge"
    web = uniq("web")
    try:
        dk(nd, "run", "-d", "--name", web, "--network", net, "--network-alias", "svc",
           "--dns", "127.0.0.1", "-p", "127.0.0.1::80", "busybox", "httpd", "-f", "-p", "80",
           "-h", "/etc")
        port_line = dk(nd, "port", web, "80").stdout.strip()
        assert port_line.startswith("127.0.0.1:")
        wait_http(f"http://{port_line}/hostname")
        ip = dk(nd, "inspect", "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", web).stdout.strip()
        assert ip.startswith(str(sub).rsplit(".", 1)[0])
        r = dk(nd, "run", "--rm", "--network", net, "--dns", "127.0.0.1", "busybox", "sh",
               "-c", f"ping -c1 -W2 {web} && ping -c1 -W2 svc && wget -qO- http://svc/hostname")
        assert r.stdout.count("1 packets received") == 2
        assert "0.0.0.0" not in dk(nd, "ps", "--filter", f"name={web}").stdout
        assert f"127.0.0.1:{port_line.split(':')[1]}->80/tcp" in \
            dk(nd, "ps", "--filter", f"name={web}").stdout
        r = dk(nd, "network", "rm", net, ok=False)
        assert r.returncode != 0 and "active endpoints" in r.stderr
        # connect/disconnect a stopped container
        other = uniq("o")
        dk(nd, "create", "--name", other, "busybox", "true")
        dk(nd, "network", "connect", "--alias", "oo", net, other)
        nets = json.loads(dk(nd, "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                             other).stdout)
        assert set(nets) == {"bridge", net} and nets[net]["Aliases"] == ["oo"]
        dk(nd, "network", "disconnect", net, other)
        dk(nd, "rm", other)
    finally:
        nd.docker("rm", "-f", web)
    dk(nd, "network", "rm", net)
    r = dk(nd, "network", "inspect", net, ok=False)
    assert r.returncode == 1 and "not found" in r.stderr
    r = dk(nd, "network", "create", "--subnet", str(sub), uniq("a"))
    assert dk(nd, "network", "create", "--subnet", str(sub), uniq("b"), ok=False).returncode \
        == 1
    dk(nd, "network", "prune", "-f")


def test_docker_py_networks(nd):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=nd.host)
    sub = free_subnet()
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(sub))])
    net = client.networks.create(uniq("py"), driver="bridge", ipam=ipam, labels={"py": "1"})
    try:
        assert net.attrs["IPAM"]["Config"][0]["Subnet"] == str(sub)
        assert net.name in [n.name for n in client.networks.list(filters={"label": "py=1"})]
        c = client.containers.run("busybox", ["sleep", "30"], detach=True, network=net.name,
                                  ports={"80/tcp": ("127.0.0.1", None)})
        try:
            c.reload()
            ep = c.attrs["NetworkSettings"]["Networks"][net.name]
            assert ep["IPAddress"].startswith(str(sub).rsplit(".", 1)[0])
            assert c.ports["80/tcp"][0]["HostIp"] == "127.0.0.1"
            net.reload()
            assert c.id in net.attrs["Containers"]
        finally:
            c.remove(force=True)
    finally:
        net.remove()
    spare = client.networks.create(uniq("spare"))
    assert spare.name in client.networks.prune()["NetworksDeleted"]
