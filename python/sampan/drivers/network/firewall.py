"""Firewall backends for the bridge driver: iptables (its nft or legacy flavour, whichever the
`iptables` command is) and native nftables (one `inet`/`ip` table of Sampan's own, as OpenWrt's
fw4 would see it).

Everything lives in Sampan's own chains; the host's chains get one jump each. Per network:
forwarding (intra-network, outbound, replies, DNAT'd inbound), isolation from the other
networks, masquerading, and loopback access to published ports (route_localnet on the bridge
and masquerading of local sources: no userland proxy process). Per container only the DNAT
rules of its published ports, added and removed in one batch."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from typing import Any

log = logging.getLogger("sampand")

Rule = tuple[str, str, str]  # (table, chain, rule spec)


class FirewallError(Exception):
    status = 500


def _sysctl(path: str, value: str) -> None:
    try:
        with open("/proc/sys/" + path, "w") as f:
            f.write(value)
    except OSError as e:
        log.warning("sysctl %s=%s: %s", path.replace("/", "."), value, e)


def network_sysctls(bridge: str) -> None:
    _sysctl("net/ipv4/ip_forward", "1")
    # DNAT from 127.0.0.1 to a container address needs local sources routable on the bridge
    _sysctl(f"net/ipv4/conf/{bridge}/route_localnet", "1")


class Iptables:
    name = "iptables"

    def __init__(self, binary: str = "iptables"):
        self.bin = shutil.which(binary) or binary
        self.restore = shutil.which(binary + "-restore") or binary + "-restore"
        self._lock = threading.Lock()
        self._base_done = False
        try:
            v = subprocess.run([self.bin, "-V"], capture_output=True, text=True).stdout
        except OSError as e:
            raise FirewallError(f"{binary}: {e}") from None
        self.flavour = "nf_tables" if "nf_tables" in v else "legacy"

    def _run(self, *args: str, check: bool = True) -> bool:
        p = subprocess.run([self.bin, "-w", *args], capture_output=True, text=True)
        if p.returncode and check:
            raise FirewallError(f"iptables {' '.join(args)}: {p.stderr.strip()}")
        return p.returncode == 0

    def _ensure(self, table: str, chain: str, spec: str, insert: bool = False) -> None:
        args = spec.split()
        if not self._run("-t", table, "-C", chain, *args, check=False):
            if insert:
                self._run("-t", table, "-I", chain, "1", *args)
            else:
                self._run("-t", table, "-A", chain, *args)

    def _chain(self, table: str, chain: str) -> None:
        self._run("-t", table, "-N", chain, check=False)

    def base(self) -> None:
        with self._lock:
            if self._base_done:
                return
            for table, chain in (("filter", "SAMPAN-FORWARD"), ("filter", "SAMPAN-ISOLATION-1"),
                                 ("filter", "SAMPAN-ISOLATION-2"), ("nat", "SAMPAN"),
                                 ("nat", "SAMPAN-POSTROUTING")):
                self._chain(table, chain)
            self._ensure("filter", "FORWARD", "-j SAMPAN-FORWARD", insert=True)
            self._ensure("filter", "SAMPAN-FORWARD", "-j SAMPAN-ISOLATION-1", insert=True)
            self._ensure("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j SAMPAN")
            self._ensure("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j SAMPAN")
            self._ensure("nat", "POSTROUTING", "-j SAMPAN-POSTROUTING")
            self._base_done = True

    @staticmethod
    def network_rules(bridge: str, subnet: str, internal: bool) -> list[Rule]:
        rules: list[Rule] = [
            ("filter", "SAMPAN-ISOLATION-1", f"-i {bridge} ! -o {bridge} -j SAMPAN-ISOLATION-2"),
            ("filter", "SAMPAN-ISOLATION-2", f"-o {bridge} -j DROP"),
            ("filter", "SAMPAN-FORWARD", f"-i {bridge} -o {bridge} -j ACCEPT"),
        ]
        if internal:
            rules += [("filter", "SAMPAN-ISOLATION-1", f"-i {bridge} ! -o {bridge} -j DROP"),
                      ("filter", "SAMPAN-ISOLATION-1", f"-o {bridge} ! -i {bridge} -j DROP")]
            return rules
        rules += [
            ("filter", "SAMPAN-FORWARD",
             f"-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            ("filter", "SAMPAN-FORWARD", f"-o {bridge} -m conntrack --ctstate DNAT -j ACCEPT"),
            ("filter", "SAMPAN-FORWARD", f"-i {bridge} ! -o {bridge} -j ACCEPT"),
            ("nat", "SAMPAN-POSTROUTING", f"-s {subnet} ! -o {bridge} -j MASQUERADE"),
            ("nat", "SAMPAN-POSTROUTING",
             f"-o {bridge} -m addrtype --src-type LOCAL -j MASQUERADE"),
            # a container reaching another's published port through the host's address: the
            # reply must come back through the host to be un-NATed (br_netfilter, when
            # loaded, does that on the bridge already; this covers hosts without it)
            ("nat", "SAMPAN-POSTROUTING",
             f"-s {subnet} -o {bridge} -m conntrack --ctstate DNAT -j MASQUERADE"),
        ]
        return rules

    def add_network(self, bridge: str, subnet: str, internal: bool) -> list[Rule]:
        self.base()
        rules = self.network_rules(bridge, subnet, internal)
        with self._lock:
            for table, chain, spec in rules:
                self._ensure(table, chain, spec)
        return rules

    def remove_network(self, bridge: str, subnet: str, internal: bool) -> None:
        self.delete(self.network_rules(bridge, subnet, internal))

    @staticmethod
    def port_rules(bridge: str, ports: list[dict[str, Any]]) -> list[Rule]:
        out: list[Rule] = []
        for p in ports:
            dst = f"-d {p['host_ip']}/32 " if p["host_ip"] not in ("", "0.0.0.0") else ""
            out.append(("nat", "SAMPAN",
                        f"{dst}-p {p['proto']} -m {p['proto']} --dport {p['host_port']} "
                        f"-j DNAT --to-destination {p['ip']}:{p['container_port']}"))
        return out

    def add(self, rules: list[Rule]) -> None:
        if rules:
            self._restore(rules, "-A")

    def delete(self, rules: list[Rule]) -> None:
        if not rules:
            return
        try:
            self._restore(rules, "-D")
        except FirewallError:
            for table, chain, spec in rules:  # some were gone already: each on its own
                self._run("-t", table, "-D", chain, *spec.split(), check=False)

    def _restore(self, rules: list[Rule], op: str) -> None:
        by_table: dict[str, list[str]] = {}
        for table, chain, spec in rules:
            by_table.setdefault(table, []).append(f"{op} {chain} {spec}")
        text = "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n"
                       for t, lines in by_table.items())
        p = subprocess.run([self.restore, "-w", "--noflush"], input=text,
                           capture_output=True, text=True)
        if p.returncode:
            raise FirewallError(f"iptables-restore: {p.stderr.strip()}")


class Nftables:
    """Native nftables: table `ip sampan` holding every chain; rules carry a comment naming
    their owner so that removal finds their handles."""

    name = "nftables"
    flavour = "nftables"

    def __init__(self, binary: str = "nft"):
        self.bin = shutil.which(binary) or binary
        self._lock = threading.Lock()
        self._base_done = False

    def _nft(self, script: str, check: bool = True) -> str:
        p = subprocess.run([self.bin, "-f", "-"], input=script, capture_output=True, text=True)
        if p.returncode and check:
            raise FirewallError(f"nft: {p.stderr.strip()}")
        return p.stdout

    def base(self) -> None:
        with self._lock:
            if self._base_done:
                return
            self._nft("""
table ip sampan {
  chain ports {
  }
  chain isolation {
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump ports
  }
  chain output {
    type nat hook output priority -100; policy accept;
    fib daddr type local jump ports
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
  }
}
""")
            # `table … { chain … { rules } }` appends rules again on every run: keep one copy
            self._dedupe()
            self._base_done = True

    def _dedupe(self) -> None:
        out = subprocess.run([self.bin, "-a", "list", "table", "ip", "sampan"],
                             capture_output=True, text=True).stdout
        chain = ""
        seen: set[tuple[str, str]] = set()
        drops = []
        for line in out.splitlines():
            s = line.strip()
            if s.startswith("chain "):
                chain = s.split()[1]
                continue
            if "# handle" not in s or s.startswith(("type ", "table")):
                continue
            body, _, h = s.rpartition("# handle")
            key = (chain, body.strip())
            if key in seen:
                drops.append(f"delete rule ip sampan {chain} handle {h.strip()}\n")
            seen.add(key)
        if drops:
            self._nft("".join(drops), check=False)

    @staticmethod
    def _tag(owner: str) -> str:
        return f'comment "{owner}"'

    def add_network(self, bridge: str, subnet: str, internal: bool) -> list[Rule]:
        self.base()
        self.remove_network(bridge, subnet, internal)  # idempotent: no duplicates
        t = self._tag("net:" + bridge)
        lines = [
            f'add rule ip sampan forward iifname "{bridge}" oifname != "{bridge}" '
            f"jump isolation {t}",
            f'add rule ip sampan isolation oifname "{bridge}" drop {t}',
            f'add rule ip sampan forward iifname "{bridge}" oifname "{bridge}" accept {t}',
        ]
        if internal:
            lines += [f'add rule ip sampan forward iifname "{bridge}" drop {t}',
                      f'add rule ip sampan forward oifname "{bridge}" drop {t}']
        else:
            lines += [
                f'add rule ip sampan forward oifname "{bridge}" ct state related,established '
                f"accept {t}",
                f'add rule ip sampan forward oifname "{bridge}" ct status dnat accept {t}',
                f'add rule ip sampan forward iifname "{bridge}" accept {t}',
                f'add rule ip sampan postrouting ip saddr {subnet} oifname != "{bridge}" '
                f"masquerade {t}",
                f'add rule ip sampan postrouting oifname "{bridge}" fib saddr type local '
                f"masquerade {t}",
                f'add rule ip sampan postrouting ip saddr {subnet} oifname "{bridge}" '
                f"ct status dnat masquerade {t}",
            ]
        self._nft("\n".join(lines) + "\n")
        return [("nft", "", ln) for ln in lines]

    def _delete_tagged(self, owner: str) -> None:
        out = subprocess.run([self.bin, "-a", "list", "table", "ip", "sampan"],
                             capture_output=True, text=True).stdout
        chain = ""
        drops = []
        for line in out.splitlines():
            s = line.strip()
            if s.startswith("chain "):
                chain = s.split()[1]
            elif f'comment "{owner}"' in s and "# handle" in s:
                h = s.rpartition("# handle")[2].strip()
                drops.append(f"delete rule ip sampan {chain} handle {h}\n")
        if drops:
            self._nft("".join(drops), check=False)

    def remove_network(self, bridge: str, subnet: str, internal: bool) -> None:
        self._delete_tagged("net:" + bridge)

    @staticmethod
    def port_rules(bridge: str, ports: list[dict[str, Any]]) -> list[Rule]:
        out: list[Rule] = []
        for p in ports:
            dst = f"ip daddr {p['host_ip']} " if p["host_ip"] not in ("", "0.0.0.0") else ""
            out.append(("nft", "ports",
                        f"{dst}{p['proto']} dport {p['host_port']} dnat to "
                        f"{p['ip']}:{p['container_port']} "
                        f'comment "ep:{p["ip"]}:{p["container_port"]}/{p["proto"]}"'))
        return out

    def add(self, rules: list[Rule]) -> None:
        if rules:
            self.base()
            self._nft("".join(f"add rule ip sampan {c} {s}\n" for _t, c, s in rules))

    def delete(self, rules: list[Rule]) -> None:
        for _t, _c, spec in rules:
            owner = spec.rpartition('comment "')[2].rstrip('"')
            if owner:
                self._delete_tagged(owner)


def choose(preferred: str | None = None) -> Any:
    """iptables when present (like dockerd), nftables where iptables is absent or asked for."""
    want = preferred or os.environ.get("SAMPAN_FIREWALL") or ""
    if want == "nftables" or (not want and not shutil.which("iptables")
                              and shutil.which("nft")):
        return Nftables()
    if want in ("", "iptables", "iptables-nft", "iptables-legacy"):
        return Iptables(want if want.startswith("iptables-") else "iptables")
    if want == "none":
        return None
    raise FirewallError(f"unknown firewall backend {want!r} (iptables, iptables-legacy, "
                        "iptables-nft, nftables, none)")
