"""The native nftables backend (OpenWrt's firewall is nftables): a daemon told to use it
publishes ports, isolates networks and cleans up through `table ip sampan`, without touching
iptables."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from conftest import cleanup_daemon, free_subnet, make_daemon, uniq, wait_http

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="no nft binary")


def nft_rules() -> str:
    return subprocess.run(["nft", "list", "table", "ip", "sampan"], capture_output=True,
                          text=True).stdout


def iptables_rules() -> str:
    return "".join(subprocess.run(["iptables", "-w", "-t", t, "-S"], capture_output=True,
                                  text=True).stdout for t in ("filter", "nat"))


@pytest.fixture
def nd_nft(nroot, busybox_archive):
    d = make_daemon(nroot / uniq("nft-"), busybox_archive, {"SAMPAN_FIREWALL": "nftables"})
    yield d
    cleanup_daemon(d)
    # the network rules are tagged with the bridge's name
    for line in subprocess.run(["nft", "-a", "list", "table", "ip", "sampan"],
                               capture_output=True, text=True).stdout.splitlines():
        assert d.bridge not in line


def test_nftables_ports_isolation_cleanup(nd_nft):
    d = nd_nft
    net1, net2 = uniq("f1-"), uniq("f2-")
    s1, s2 = free_subnet(), free_subnet()
    for n, s in ((net1, s1), (net2, s2)):
        assert d.sampan("network", "create", "--subnet", str(s), n).returncode == 0
    name = uniq("nweb")
    r = d.sampan("run", "-d", "--name", name, "--network", net1, "-p", "127.0.0.1::80",
                 "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    try:
        port = d.sampan("port", name, "80").stdout.strip().rsplit(":", 1)[1]
        host = d.json("GET", f"/containers/{name}/json")[1]
        assert wait_http(f"http://127.0.0.1:{port}/hostname").strip() == \
            host["Config"]["Hostname"].encode()
        rules = nft_rules()
        assert f"dport {port} dnat to {host['NetworkSettings']['Networks'][net1]['IPAddress']}" \
            in rules
        assert str(s1) in rules and "masquerade" in rules
        assert str(s1) not in iptables_rules() and d.bridge not in iptables_rules()
        ip = host["NetworkSettings"]["Networks"][net1]["IPAddress"]
        r = d.sampan("run", "--rm", "--network", net2, "busybox", "ping", "-c1", "-W1", ip)
        assert r.returncode != 0 and "0 packets received" in r.stdout
        r = d.sampan("run", "--rm", "--network", net1, "busybox", "ping", "-c1", "-W2", ip)
        assert r.returncode == 0, r.stdout
    finally:
        d.sampan("rm", "-f", name)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and f"dport {port} " in nft_rules():
        time.sleep(0.1)
    assert f"dport {port} " not in nft_rules()
    assert d.sampan("network", "rm", net1, net2).returncode == 0
    assert str(s1) not in nft_rules() and str(s2) not in nft_rules()


@pytest.mark.skipif(shutil.which("iptables-legacy") is None, reason="no iptables-legacy")
def test_iptables_legacy_backend(nroot, busybox_archive):
    d = make_daemon(nroot / uniq("legacy-"), busybox_archive,
                    {"SAMPAN_FIREWALL": "iptables-legacy"})

    def legacy() -> str:
        return subprocess.run(["iptables-legacy", "-w", "-t", "nat", "-S"],
                              capture_output=True, text=True).stdout

    try:
        name = uniq("lweb")
        r = d.sampan("run", "-d", "--name", name, "-p", "127.0.0.1::80", "busybox", "httpd",
                     "-f", "-p", "80", "-h", "/etc")
        assert r.returncode == 0, r.stderr
        port = d.sampan("port", name, "80").stdout.strip().rsplit(":", 1)[1]
        wait_http(f"http://127.0.0.1:{port}/hostname")
        assert f"--dport {port} -j DNAT" in legacy() and str(d.bip.network) in legacy()
        assert f"--dport {port} -j DNAT" not in iptables_rules()
        d.sampan("rm", "-f", name)
        assert f"--dport {port} " not in legacy()
    finally:
        cleanup_daemon(d)
        for t in ("filter", "nat"):
            subprocess.run(["bash", "-c", f"iptables-legacy -w -t {t} -S | grep -- '{d.bridge}' "
                            f"| sed 's/^-A/-D/' | while read r; do eval iptables-legacy -w "
                            f"-t {t} $r; done"], capture_output=True)
        # the test's own backend: leave the legacy tables as they were (no one else uses them)
        subprocess.run(["bash", "-c", "for t in filter nat; do iptables-legacy -w -t $t -S | "
                        "grep -- '-j SAMPAN' | grep -v '^-A SAMPAN' | sed 's/^-A/-D/' | "
                        "while read r; do eval iptables-legacy -w -t $t $r; done; "
                        "for c in $(iptables-legacy -w -t $t -S | awk '/^-N SAMPAN/{print $2}');"
                        " do iptables-legacy -w -t $t -F $c; iptables-legacy -w -t $t -X $c; "
                        "done; done"], capture_output=True)
