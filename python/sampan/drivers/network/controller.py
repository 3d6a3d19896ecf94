"""The network controller: networks (the default bridge, host, none and user-defined bridges),
their bridges and firewall rules, and each running container's endpoints.

State:
- `<data-root>/networks/<id>.json`: one network definition each (docker's inspect shape),
  written atomically; they outlive reboots.
- `<exec-root>/network/endpoints/<container id>.json`: a running container's namespace,
  interfaces, addresses, published ports and the firewall rules added for them. It is written
  before anything is set up and removed after everything is torn down, so a daemon killed at
  any point finds at restart exactly what to undo (or, for a container still running, what to
  take over). Addresses are allocated from these records: no duplicate across daemon restarts.
  They live under the exec root (tmpfs) on purpose: after a reboot no container runs, so no
  address is held.
- `<exec-root>/netns/<container id>`: the container's pinned network namespace, which its
  runtime joins by path.

All methods are blocking and thread-safe (one lock); the daemon calls them from worker
threads."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sampan.atomicfile import atomic_write
from sampan.drivers.network import firewall as fwmod
from sampan.drivers.network import ipam, netns
from sampan.errors import Conflict, InvalidArgument, NotFound, SampanError
from sampan.units import now_rfc3339

log = logging.getLogger("sampand")

DEFAULT_BRIDGE = "sampan0"
MTU_OPT = "com.docker.network.driver.mtu"
# The link MTU of a bridge, and its veths, whose MTU nobody chose: loopback's, less a little
# (as slirp4netns/pasta use). TCP between a container and the host or another container of the
# bridge then sends 64 KiB segments instead of 1448-byte ones: a sender of small writes gets
# several times the throughput (docs/network.md, "MTU and throughput"). What leaves through the
# gateway keeps the uplink's MTU: the default route inside the container carries it.
AUTO_LINK_MTU = 65520
PREDEFINED = ("bridge", "host", "none")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DNS_ADDR = "127.0.0.11"
# Host-wide, not per daemon: daemons given the same bridge name share its addresses.
LEASES = Path(os.environ.get("SAMPAN_LEASES_DIR", "/run/sampan-leases"))
DEFAULT_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                 "ff02::2\tip6-allrouters\n")


class Forbidden(SampanError):
    status = 403


class NetworkError(SampanError):
    status = 500




def parse_port(key: str) -> tuple[int, str]:
    """"80/tcp" | "80" → (80, "tcp")."""
    p, _, proto = str(key).partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    try:
        n = int(p)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {p}") from None
    if not 0 < n < 65536:
        raise InvalidArgument(f"invalid containerPort: {p}")
    return n, proto


def _host_port_range(s: str) -> tuple[int, int]:
    if s in ("", "0"):
        return 0, 0
    a, sep, b = s.partition("-")
    try:
        lo, hi = int(a), int(b) if sep else int(a)
    except ValueError:
        raise InvalidArgument(f"invalid hostPort: {s}") from None
    if not (0 < lo <= hi < 65536):
        raise InvalidArgument(f"invalid hostPort: {s}")
    return lo, hi


def read_resolv(path: str = "/etc/resolv.conf") -> tuple[list[str], list[str], list[str]]:
    ns, search, opts = [], [], []
    try:
        text = Path(path).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        f = line.split()
        if not f or f[0].startswith(("#", ";")):
            continue
        if f[0] == "nameserver" and len(f) > 1:
            ns.append(f[1])
        elif f[0] in ("search", "domain"):
            search = f[1:]
        elif f[0] == "options":
            opts += f[1:]
    return ns, search, opts


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkController:
    def __init__(self, data_root: Path, exec_root: Path, bridge: str | None = None,
                 bip: str | None = None, mtu: int = 0, firewall: str | None = None,
                 iptables: bool = True, dns: list[str] | None = None):
        self.net_dir = data_root / "networks"
        self.net_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ep_dir = exec_root / "network" / "endpoints"
        self.ep_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ns_dir = exec_root / "netns"
        self.bridge_name = bridge or DEFAULT_BRIDGE
        self.bip = bip
        self.mtu = mtu  # the default bridge's (--mtu); 0: chosen per network, see _mtus
        self.net_mtu: dict[str, tuple[int, int]] = {}  # network id -> (link MTU, route MTU)
        self.default_dns = list(dns or [])
        self._fw_choice = firewall
        self._fw_enabled = iptables
        self._fw: Any = None
        self.lock = threading.RLock()
        self.networks: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.realized: set[str] = set()
        self.port_socks: dict[str, list[socket.socket]] = {}
        self.lookup: Callable[[str], Any] | None = None  # container ref → store Record
        self.dns: Any = None  # the embedded DNS server (sampan.daemon.dns)
        # (type, action, id, attributes): create/destroy of networks, connect/disconnect at a
        # container's start and stop (the API routes emit those of `network connect`)
        self.on_event: Callable[..., Any] | None = None
        self._nl: Any = None
        self._load()

    # ------------------------------------------------------------------ plumbing

    def _event(self, action: str, net: dict[str, Any], cid: str | None = None) -> None:
        if self.on_event is None:
            return
        attrs = {"name": net["Name"], "type": net["Driver"]}
        if cid:
            attrs["container"] = cid
        try:
            self.on_event("network", action, net["Id"], attrs)
        except Exception as e:  # noqa: BLE001 - an event never breaks the operation
            log.debug("network event: %s", e)

    @property
    def nl(self) -> Any:
        if self._nl is None:
            from sampan.drivers.network.netlink import Netlink

            self._nl = Netlink()
        return self._nl

    @property
    def fw(self) -> Any:
        if self._fw is None and self._fw_enabled:
            self._fw = fwmod.choose(self._fw_choice)
            if self._fw is None:
                self._fw_enabled = False
            else:
                log.info("firewall: %s (%s)", self._fw.name, self._fw.flavour)
        return self._fw

    def _save_net(self, net: dict[str, Any]) -> None:
        doc = {k: v for k, v in net.items() if k != "Containers"}
        atomic_write(self.net_dir / f"{net['Id']}.json", json.dumps(doc, indent=1).encode())

    def _save_ep(self, ep: dict[str, Any]) -> None:
        atomic_write(self.ep_dir / f"{ep['cid']}.json", json.dumps(ep).encode(), sync=False)

    def _load(self) -> None:
        for p in self.net_dir.glob("*.json"):
            try:
                net = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                log.warning("network record %s unreadable: %s", p, e)
                continue
            self.networks[net["Id"]] = net
        for p in self.ep_dir.glob("*.json"):
            try:
                ep = json.loads(p.read_text())
            except (OSError, ValueError):
                p.unlink(missing_ok=True)  # a torn intent record: nothing was set up yet
                continue
            self.endpoints[ep["cid"]] = ep
        names = {n["Name"] for n in self.networks.values()}
        for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
            if name not in names:
                self._add_predefined(name, driver)
        self._configure_default_bridge()

    def _add_predefined(self, name: str, driver: str) -> None:
        net = self._record(name, driver, [], False, {}, {})
        if name == "bridge":
            net["Options"] = {"com.docker.network.bridge.default_bridge": "true",
                              "com.docker.network.bridge.enable_icc": "true",
                              "com.docker.network.bridge.enable_ip_masquerade": "true",
                              "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                              "com.docker.network.bridge.name": self.bridge_name}
            if self.mtu:
                net["Options"][MTU_OPT] = str(self.mtu)
        self.networks[net["Id"]] = net
        self._save_net(net)

    def _record(self, name: str, driver: str, ipam_cfg: list[dict[str, str]], internal: bool,
                labels: dict[str, str], options: dict[str, str]) -> dict[str, Any]:
        return {"Name": name, "Id": _hex(32), "Created": now_rfc3339(), "Scope": "local",
                "Driver": driver, "EnableIPv4": True, "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None, "Config": ipam_cfg},
                "Internal": internal, "Attachable": False, "Ingress": False,
                "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Options": options,
                "Labels": labels}

    def _configure_default_bridge(self) -> None:
        """--bridge/--bip, or the existing bridge's address, or a free default pool."""
        net = self.by_name("bridge")
        if net is None:
            return
        opts = net.setdefault("Options", {})
        cfg = (net["IPAM"].get("Config") or [{}])[0] if net["IPAM"].get("Config") else {}
        want: dict[str, str] | None = None
        if self.bip:
            try:
                iface = ipaddress.IPv4Interface(self.bip)
            except ValueError:
                raise InvalidArgument(f"invalid --bip {self.bip!r}") from None
            want = {"Subnet": str(iface.network), "Gateway": str(iface.ip)}
        elif opts.get("com.docker.network.bridge.name") != self.bridge_name or not cfg:
            idx = self.nl.link_index(self.bridge_name)
            have = [a for i, a in self.nl.addrs() if idx and i == idx]
            if have:
                want = {"Subnet": str(have[0].network), "Gateway": str(have[0].ip)}
            else:
                taken = self._taken_subnets(exclude=net["Id"])
                pool = ipam.pick_pool(taken)
                want = {"Subnet": str(pool), "Gateway": str(next(pool.hosts()))}
        want_mtu = str(self.mtu) if self.mtu else None
        if opts.get(MTU_OPT) != want_mtu and not any(self._on_net(net["Id"])):
            if want_mtu:  # --mtu changed
                opts[MTU_OPT] = want_mtu
            else:
                opts.pop(MTU_OPT, None)
            self._save_net(net)
        if want and (want != cfg or opts.get("com.docker.network.bridge.name")
                     != self.bridge_name):
            if any(self._on_net(net["Id"])):
                log.warning("default bridge settings changed while containers use it; "
                            "they apply once those containers stop")
            else:
                net["IPAM"]["Config"] = [want]
                opts["com.docker.network.bridge.name"] = self.bridge_name
                self._save_net(net)

    def _taken_subnets(self, exclude: str = "") -> list[ipaddress.IPv4Network]:
        """What a new pool must not overlap: host routes and addresses that are not ours, and
        our networks' subnets."""
        ours = {self.bridge_of(n) for n in self.networks.values() if n["Driver"] == "bridge"}
        names = {i: nm for i, nm, _m in self.nl.links()}
        all_ours: set[ipaddress.IPv4Network] = set()
        mine: list[ipaddress.IPv4Network] = []
        for n in self.networks.values():
            for c in n["IPAM"].get("Config") or []:
                if c.get("Subnet"):
                    sn = ipaddress.IPv4Network(c["Subnet"])
                    all_ours.add(sn)
                    if n["Id"] != exclude:
                        mine.append(sn)
        taken = [a.network for i, a in self.nl.addrs()
                 if names.get(i, "") not in ours and names.get(i) != "lo"]
        taken += [r for r in self.nl.routes() if r not in all_ours]
        return taken + mine

    # ------------------------------------------------------------------ networks

    def by_name(self, name: str) -> dict[str, Any] | None:
        for n in self.networks.values():
            if n["Name"] == name:
                return n
        return None

    def get(self, ref: str) -> dict[str, Any]:
        with self.lock:
            if ref in self.networks:
                return self.networks[ref]
            n = self.by_name(ref)
            if n is not None:
                return n
            found = [v for k, v in self.networks.items() if ref and k.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found "
                                      "based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def bridge_of(self, net: dict[str, Any]) -> str:
        return (net.get("Options") or {}).get("com.docker.network.bridge.name") or \
            ("br-" + net["Id"][:12])

    def _on_net(self, net_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(ep, i) for ep in self.endpoints.values() for i in ep["ifaces"]
                if i["net"] == net_id]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidArgument("invalid JSON: the body must be an object")
        name = body.get("Name")
        if not name or not isinstance(name, str):
            raise InvalidArgument("network name is required" if not name else
                                  "Name must be a string")
        if not _NAME.match(name):
            raise InvalidArgument(f'invalid network name "{name}", only [a-zA-Z0-9][a-zA-Z0-9_.-]'
                                  " are allowed")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            if driver in ("host", "null"):
                raise Forbidden(f"only one instance of \"{driver}\" network is allowed")
            raise NotFound(f'plugin "{driver}" not found')
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported yet")
        labels = body.get("Labels") or {}
        options = body.get("Options") or {}
        for what, d in (("Labels", labels), ("Options", options)):
            if not isinstance(d, dict) or not all(isinstance(v, str) for v in d.values()):
                raise InvalidArgument(f"{what} must be an object of strings")
        mtu = options.get("com.docker.network.driver.mtu")
        if mtu is not None and (not str(mtu).isdigit() or not 68 <= int(mtu) <= 65535):
            raise InvalidArgument(f"invalid MTU {mtu!r}")
        ipam_in = body.get("IPAM") or {}
        if not isinstance(ipam_in, dict):
            raise InvalidArgument("IPAM must be an object")
        if ipam_in.get("Driver") not in (None, "", "default"):
            raise NotFound(f'IPAM driver "{ipam_in["Driver"]}" not found')
        cfgs = ipam_in.get("Config") or []
        if not isinstance(cfgs, list) or len(cfgs) > 1:
            raise InvalidArgument("one IPAM configuration at most (IPv4)")
        with self.lock:
            if self.by_name(name) is not None:
                raise Conflict(f"network with name {name} already exists")
            br = options.get("com.docker.network.bridge.name")
            if br and (len(br) > 15 or any(self.bridge_of(n) == br
                                           for n in self.networks.values())):
                raise Conflict(f"bridge name {br} is invalid or already in use")
            taken_ours = {str(n["Id"]): [ipaddress.IPv4Network(c["Subnet"])
                                         for c in n["IPAM"].get("Config") or []
                                         if c.get("Subnet")]
                          for n in self.networks.values()}
            if cfgs:
                c = cfgs[0]
                if not isinstance(c, dict):
                    raise InvalidArgument("IPAM Config entries must be objects")
                if c.get("Subnet"):
                    subnet = ipam.parse_subnet(c["Subnet"])
                else:
                    subnet = ipam.pick_pool(self._taken_subnets())
                for others in taken_ours.values():
                    if any(subnet.overlaps(o) for o in others):
                        raise Forbidden("invalid pool request: Pool overlaps with other one on "
                                        "this address space")
                gw = c.get("Gateway")
                if gw:
                    try:
                        gwa = ipaddress.IPv4Address(gw)
                    except ValueError:
                        raise InvalidArgument(f"invalid gateway address {gw!r}") from None
                    if gwa not in subnet or gwa in (subnet.network_address,
                                                    subnet.broadcast_address):
                        raise InvalidArgument(f"gateway {gw} is not a host address of subnet "
                                              f"{subnet}")
                else:
                    gwa = next(subnet.hosts())
                entry = {"Subnet": str(subnet), "Gateway": str(gwa)}
                if c.get("IPRange"):
                    rng = ipam.parse_subnet(c["IPRange"])
                    if not rng.subnet_of(subnet):
                        raise InvalidArgument(f"IP range {rng} is not inside subnet {subnet}")
                    entry["IPRange"] = str(rng)
            else:
                subnet = ipam.pick_pool(self._taken_subnets())
                entry = {"Subnet": str(subnet), "Gateway": str(next(subnet.hosts()))}
            net = self._record(name, "bridge", [entry], bool(body.get("Internal")),
                               dict(labels), dict(options))
            net["Attachable"] = bool(body.get("Attachable"))
            self.networks[net["Id"]] = net
            self._save_net(net)
        self._event("create", net)
        return net

    def inspect(self, net: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            out = json.loads(json.dumps(net))
            cons = {}
            for ep, i in self._on_net(net["Id"]):
                cons[ep["cid"]] = {"Name": ep["name"], "EndpointID": i["endpoint"],
                                   "MacAddress": i["mac"],
                                   "IPv4Address": f"{i['ip']}/{i['prefix']}",
                                   "IPv6Address": ""}
            out["Containers"] = cons
            return out

    def list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        allowed = {"name", "id", "driver", "type", "label", "scope", "dangling"}
        for k in filters:
            if k not in allowed:
                raise InvalidArgument(f"invalid filter '{k}'")
        out = []
        with self.lock:
            nets = sorted(self.networks.values(), key=lambda n: n["Created"])
        for n in nets:
            if "name" in filters and not any(v in n["Name"] for v in filters["name"]):
                continue
            if "id" in filters and not any(n["Id"].startswith(v) for v in filters["id"]):
                continue
            if "driver" in filters and n["Driver"] not in filters["driver"]:
                continue
            if "scope" in filters and n["Scope"] not in filters["scope"]:
                continue
            builtin = n["Name"] in PREDEFINED
            for t in filters.get("type", []):
                if t not in ("custom", "builtin"):
                    raise InvalidArgument(f"invalid filter: 'type'='{t}'")
            if "type" in filters and ("builtin" if builtin else "custom") not in \
                    filters["type"]:
                continue
            if not _labels_match(n.get("Labels") or {}, filters.get("label", [])):
                continue
            if "dangling" in filters:
                want = filters["dangling"][0] in ("1", "true")
                if (not builtin and not self._on_net(n["Id"])) != want:
                    continue
            out.append(self.inspect(n))
        return out

    def remove(self, ref: str) -> None:
        with self.lock:
            net = self.get(ref)
            if net["Name"] in PREDEFINED:
                raise Forbidden(f"{net['Name']} is a pre-defined network and cannot be removed")
            if self._on_net(net["Id"]):
                raise Forbidden(f"error while removing network: network {net['Name']} id "
                                f"{net['Id']} has active endpoints")
            self._unrealize(net)
            (self.net_dir / f"{net['Id']}.json").unlink(missing_ok=True)
            del self.networks[net["Id"]]
        self._event("destroy", net)

    def prune(self, filters: dict[str, list[str]]) -> list[str]:
        for k in filters:
            if k not in ("label", "label!", "until"):
                raise InvalidArgument(f"invalid filter '{k}'")
        gone = []
        with self.lock:
            for n in list(self.networks.values()):
                if n["Name"] in PREDEFINED or self._on_net(n["Id"]):
                    continue
                if not _labels_match(n.get("Labels") or {}, filters.get("label", [])):
                    continue
                if any(_labels_match(n.get("Labels") or {}, [lf])
                       for lf in filters.get("label!", [])):
                    continue
                self.remove(n["Id"])
                gone.append(n["Name"])
        return gone

    def _realize(self, net: dict[str, Any]) -> None:
        """The bridge, its address and the network's firewall rules, once per daemon run."""
        if net["Id"] in self.realized:
            return
        br = self.bridge_of(net)
        cfg = net["IPAM"]["Config"][0]
        gw = ipaddress.IPv4Interface(f"{cfg['Gateway']}/{cfg['Subnet'].split('/')[1]}")
        nl = self.nl
        idx = nl.link_index(br)
        mtu, route_mtu = self._mtus(net, idx)
        if not idx:
            try:
                nl.add_bridge(br, mtu)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise
            idx = nl.link_index(br)
        nl.add_addr(idx, gw)
        nl.set_link(index=idx, up=True, mtu=mtu)
        self.net_mtu[net["Id"]] = (mtu, route_mtu)
        fwmod.network_sysctls(br)
        fw = self.fw
        if fw is not None:
            fw.add_network(br, cfg["Subnet"], bool(net.get("Internal")))
        self.realized.add(net["Id"])

    def _mtus(self, net: dict[str, Any], bridge_index: int) -> tuple[int, int]:
        """(link MTU of the bridge and its veths, MTU of the containers' default route or 0).

        An MTU given (`--mtu`, `-o com.docker.network.driver.mtu`) is the link's, as in docker.
        Otherwise the link gets AUTO_LINK_MTU and the default route the MTU of the host's own
        default route (1500 without one): traffic to the host's bridge address and between
        containers uses large segments, traffic to the outside is sized for the uplink — a
        host whose uplink is below 1500 (tunnels, some clouds) fares better than with docker's
        fixed 1500. Two cases keep the bridge's current MTU instead: containers of a previous
        daemon run still attached (their veths have theirs), and a bridge given to Sampan with
        ports of its own (a physical NIC: frames above its MTU would be dropped)."""
        explicit = int((net.get("Options") or {}).get(MTU_OPT) or 0)
        if explicit:
            return explicit, 0
        live = [i for _e, i in self._on_net(net["Id"]) if i.get("mtu")]
        if live:
            return int(live[0]["mtu"]), int(live[0].get("route_mtu") or 0)
        nl = self.nl
        if bridge_index and any(m == bridge_index and not n.startswith("veth")
                                for _i, n, m in nl.links()):
            return nl.link_mtu(bridge_index) or 1500, 0
        uplink = nl.default_route_mtu() or 1500
        return AUTO_LINK_MTU, (uplink if uplink < AUTO_LINK_MTU else 0)

    def _unrealize(self, net: dict[str, Any]) -> None:
        br = self.bridge_of(net)
        cfg = (net["IPAM"].get("Config") or [{}])[0]
        fw = self.fw
        if fw is not None and cfg.get("Subnet"):
            fw.remove_network(br, cfg["Subnet"], bool(net.get("Internal")))
        self.nl.del_link(br)
        self.realized.discard(net["Id"])
        try:
            (LEASES / br).rmdir()  # empty once no container holds an address there
        except OSError:
            pass

    # ------------------------------------------------------------------ containers: create

    def on_create(self, doc: dict[str, Any], body: dict[str, Any],
                  image_config: dict[str, Any]) -> None:
        """Validate the network part of a create request and fill the container's
        NetworkSettings (addresses come at start)."""
        host = doc["HostConfig"]
        mode = host.get("NetworkMode") or "default"
        netcfg = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        if not isinstance(netcfg, dict):
            raise InvalidArgument("NetworkingConfig.EndpointsConfig must be an object")
        nets: dict[str, dict[str, Any]] = {}
        if mode.startswith("container:"):
            self._container(mode.split(":", 1)[1])
            if host.get("PortBindings") or host.get("PublishAllPorts"):
                raise InvalidArgument("conflicting options: port publishing and the container "
                                      "type network mode")
        elif mode in ("host", "none"):
            nets[mode] = self._settings(self.get(mode), [])
        else:
            primary = "bridge" if mode == "default" else mode
            if primary == "bridge" and self.bridge_name == "none":
                if mode != "default":
                    raise InvalidArgument("the default bridge is disabled (sampand --bridge "
                                          "none)")
                primary = "none"  # dockerd -b none: containers get no network by default
            names = [primary] + [k for k in netcfg if k != primary and k != mode]
            if primary == "none":
                nets["none"] = self._settings(self.get("none"), [])
                names = []
            for nm in names:
                net = self.get(nm)
                ecfg = netcfg.get(nm) or netcfg.get(mode) if nm == primary else netcfg.get(nm)
                aliases = list((ecfg or {}).get("Aliases") or [])
                if not all(isinstance(a, str) for a in aliases):
                    raise InvalidArgument("Aliases must be a list of strings")
                if aliases and net["Name"] == "bridge":
                    raise InvalidArgument("network-scoped aliases are only supported for "
                                          "user-defined networks")
                if net["Driver"] != "bridge":
                    raise InvalidArgument(f"container cannot be connected to network "
                                          f"{net['Name']} and others")
                nets[net["Name"]] = self._settings(net, aliases)
        for link in host.get("Links") or []:
            target, _alias = self._parse_link(link)
            self._container(target)
        for d in host.get("Dns") or []:
            try:
                ipaddress.ip_address(d)
            except ValueError:
                raise InvalidArgument(f"{d} is not an ip address") from None
        for h in host.get("ExtraHosts") or []:
            name, sep, ip = str(h).partition(":")
            if not sep or not name:
                raise InvalidArgument(f"invalid host entry {h!r}: expected host:ip")
            if ip != "host-gateway":
                try:
                    ipaddress.ip_address(ip.strip("[]"))
                except ValueError:
                    raise InvalidArgument(f"invalid IP address in add-host: {ip!r}") from None
        exposed = dict(image_config.get("ExposedPorts") or {})
        exposed.update(doc["Config"].get("ExposedPorts") or {})
        bindings = host.get("PortBindings") or {}
        if not isinstance(bindings, dict):
            raise InvalidArgument("PortBindings must be an object")
        for key, lst in bindings.items():
            n, proto = parse_port(key)
            for b in lst or []:
                if not isinstance(b, dict):
                    raise InvalidArgument("PortBindings entries must be objects")
                hip = b.get("HostIp") or ""
                if hip:
                    try:
                        ipaddress.IPv4Address(hip)
                    except ValueError:
                        raise InvalidArgument(f"invalid host IP {hip!r} (IPv4 only)") from None
                _host_port_range(str(b.get("HostPort") or ""))
            exposed.setdefault(f"{n}/{proto}", {})
        for key in exposed:
            parse_port(key)
        if exposed:
            doc["Config"]["ExposedPorts"] = {k: {} for k in sorted(exposed)}
        host["PortBindings"] = bindings
        doc["NetworkSettings"] = self._blank_settings(doc, nets)

    @staticmethod
    def _settings(net: dict[str, Any], aliases: list[str]) -> dict[str, Any]:
        return {"IPAMConfig": None, "Links": None, "Aliases": aliases or None,
                "MacAddress": "", "DriverOpts": None, "NetworkID": net["Id"],
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "DNSNames": None}

    def _blank_settings(self, doc: dict[str, Any], nets: dict[str, Any]) -> dict[str, Any]:
        ports: dict[str, Any] = {}
        return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
                "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": ports,
                "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
                "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0,
                "IPv6Gateway": "", "MacAddress": "", "Networks": nets}

    @staticmethod
    def _parse_link(link: str) -> tuple[str, str]:
        """"name:alias" | "name" | docker's stored "/name:/me/alias" → (name, alias)."""
        name, _, alias = str(link).partition(":")
        name = name.lstrip("/")
        alias = alias.rsplit("/", 1)[-1] if alias else name
        if not name or not alias:
            raise InvalidArgument(f"invalid link {link!r}: expected name[:alias]")
        return name, alias

    def _container(self, ref: str) -> Any:
        if self.lookup is None:
            raise NotFound(f"No such container: {ref}")
        return self.lookup(ref)

    # ------------------------------------------------------------------ containers: start

    def netns_path(self, cid: str) -> Path:
        return self.ns_dir / cid

    def attach(self, rec: Any) -> None:
        """Before the container's process is created: its namespace, interfaces, addresses,
        ports, DNS, /etc files and the runtime config's namespace path."""
        doc = rec.doc
        host = doc["HostConfig"]
        mode = host.get("NetworkMode") or "default"
        self.detach(rec)  # the remains of an unclean stop, if any
        if mode == "default" and self.bridge_name == "none":
            mode = "none"
        if mode in ("host", "none"):
            if mode == "none" or host.get("Dns") or host.get("DnsSearch") or \
                    host.get("DnsOptions"):
                self._write_resolv(rec, [], host)
            if host.get("ExtraHosts"):
                self._write_hosts(rec, [], {}, base=_read_text("/etc/hosts")
                                  if mode == "host" else DEFAULT_HOSTS)
            return
        if mode.startswith("container:"):
            return  # resources.refresh_joins points it at the other container's namespace
        cid = rec.id
        t0 = time.perf_counter()
        nets = doc["NetworkSettings"]["Networks"]
        ep: dict[str, Any] = {"cid": cid, "name": rec.name, "netns": str(self.netns_path(cid)),
                              "ifaces": [], "ports": [], "rules": [], "links": {},
                              "dns": list(host.get("Dns") or self.default_dns), "user": False}
        with self.lock:
            try:
                self._allocate(ep, nets, cid)
            except BaseException:
                self._unlease(ep)
                raise
            self.endpoints[cid] = ep
            self._save_ep(ep)  # the intent: a crash from here on is undone at restart
        try:
            links = self._links(rec, ep)
            ports = self._reserve_ports(rec, ep)
            self._setup_netns(ep)
            fw = self.fw
            if ports and fw is not None:
                ep["rules"] = fw.port_rules(ep["ifaces"][0]["bridge"], ports)
            self._save_ep(ep)  # ports to hold again and rules to remove, before adding them
            if ep["rules"]:
                fw.add(ep["rules"])
            self._write_hosts(rec, ep["ifaces"], links)
            self._write_resolv(rec, ep["ifaces"], host, user=ep["user"])
            self._patch_config(rec, ep["netns"], links.get("env", []))
            self._fill_settings(rec, ep)
        except BaseException:
            self.detach(rec)
            raise
        log.debug("container %s: network set up in %.1f ms", cid[:12],
                  (time.perf_counter() - t0) * 1e3)
        for i in ep["ifaces"]:
            self._event("connect", self.get(i["net"]), cid)

    def _allocate(self, ep: dict[str, Any], nets: dict[str, Any], cid: str) -> None:
        """An address on each network (bridges and rules made on first use); under the lock."""
        for n, (name, settings) in enumerate(nets.items()):
            net = self.get(settings.get("NetworkID") or name)
            self._realize(net)
            cfg = net["IPAM"]["Config"][0]
            subnet = ipaddress.IPv4Network(cfg["Subnet"])
            used = {cfg["Gateway"]} | {i["ip"] for _e, i in self._on_net(net["Id"])}
            rng = ipaddress.IPv4Network(cfg["IPRange"]) if cfg.get("IPRange") else None
            ip = self._lease(self.bridge_of(net), subnet, used, rng, cid)
            ep["ifaces"].append({
                "net": net["Id"], "netname": net["Name"], "bridge": self.bridge_of(net),
                "ip": str(ip), "prefix": subnet.prefixlen, "gateway": cfg["Gateway"],
                "mac": ipam.mac_str(ipam.mac_for(ip)), "veth": _veth_name(),
                "ifname": f"eth{n}", "aliases": list(settings.get("Aliases") or []),
                "endpoint": _hex(32), "internal": bool(net.get("Internal")),
                "mtu": self.net_mtu[net["Id"]][0], "route_mtu": self.net_mtu[net["Id"]][1]})
            if net["Name"] != "bridge":
                ep["user"] = True

    def _setup_netns(self, ep: dict[str, Any]) -> None:
        from sampan.drivers.network.netlink import Netlink

        path = Path(ep["netns"])
        host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        want_dns = ep["user"] and self.dns is not None

        def inside() -> Any:
            with Netlink() as nl:
                nl.set_link("lo", up=True)
                default_gw = None
                for i in ep["ifaces"]:
                    ip = ipaddress.IPv4Address(i["ip"])
                    nl.add_veth(i["ifname"], i["veth"], host_fd, i["mtu"], ipam.mac_for(ip))
                    idx = nl.link_index(i["ifname"])
                    nl.add_addr(idx, ipaddress.IPv4Interface(f"{i['ip']}/{i['prefix']}"))
                    nl.set_link(index=idx, up=True)
                    if default_gw is None and not i["internal"]:
                        default_gw = (ipaddress.IPv4Address(i["gateway"]), idx,
                                      int(i.get("route_mtu") or 0))
                if default_gw is not None:
                    nl.add_default_route(*default_gw)
            return _dns_sockets() if want_dns else None

        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
            if path.exists():
                netns.remove(path)
            socks = netns.create(path, inside)
        finally:
            os.close(host_fd)
        for i in ep["ifaces"]:
            self.nl.set_link(i["veth"], master=self.nl.link_index(i["bridge"]), up=True)
        if socks is not None:
            self.dns.add(ep["cid"], socks, self)

    def _reserve_ports(self, rec: Any, ep: dict[str, Any]) -> list[dict[str, Any]]:
        """Bind every published host port (held while the container runs, like dockerd's port
        mapper): a port in use fails the start with a clear error, and ranges or random ports
        resolve to a free one."""
        host = rec.doc["HostConfig"]
        bindings = {k: list(v or []) for k, v in (host.get("PortBindings") or {}).items()}
        if host.get("PublishAllPorts"):
            for k in rec.doc["Config"].get("ExposedPorts") or {}:
                n, proto = parse_port(k)
                if not bindings.get(f"{n}/{proto}") and not bindings.get(str(n)):
                    bindings[f"{n}/{proto}"] = [{"HostIp": "", "HostPort": ""}]
        if not ep["ifaces"]:
            return []
        ip = ep["ifaces"][0]["ip"]
        socks: list[socket.socket] = []
        ports: list[dict[str, Any]] = []
        try:
            for key, lst in sorted(bindings.items()):
                cport, proto = parse_port(key)
                for b in lst:
                    hip = b.get("HostIp") or "0.0.0.0"
                    lo, hi = _host_port_range(str(b.get("HostPort") or ""))
                    s, port = _bind_port(hip, lo, hi, proto, cport)
                    socks.append(s)
                    ports.append({"proto": proto, "host_ip": hip, "host_port": port,
                                  "container_port": cport, "ip": ip})
        except BaseException:
            for s in socks:
                s.close()
            raise
        self.port_socks[ep["cid"]] = socks
        ep["ports"] = ports
        return ports

    def _links(self, rec: Any, ep: dict[str, Any]) -> dict[str, Any]:
        """--link: on the default bridge /etc/hosts entries and docker's legacy variables; on a
        user network an alias the embedded DNS answers for this container only."""
        out: dict[str, Any] = {"hosts": [], "env": []}
        for link in rec.doc["HostConfig"].get("Links") or []:
            name, alias = self._parse_link(link)
            other = self._container(name)
            if not other.running:
                raise Conflict(f"Cannot link to a non running container: /{other.name} AS "
                               f"/{rec.name}/{alias}")
            oep = self.endpoints.get(other.id)
            mine = {i["net"] for i in ep["ifaces"]}
            shared = [i for i in (oep or {}).get("ifaces", []) if i["net"] in mine]
            if not shared:
                raise InvalidArgument(f"Cannot link to /{other.name}, as it does not belong to "
                                      "the default network" if not ep["user"] else
                                      f"Cannot link to /{other.name}: no shared network")
            oip = shared[0]["ip"]
            ep["links"][alias] = other.id
            out["hosts"].append(f"{oip}\t{alias} {other.id[:12]} {other.name}")
            if alias != other.name:
                out["hosts"][-1] = f"{oip}\t{alias} {other.id[:12]} {other.name}"
            pfx = re.sub(r"[^A-Za-z0-9]", "_", alias).upper()
            env = [f"{pfx}_NAME=/{rec.name}/{alias}"]
            exposed = sorted((parse_port(k) for k in
                              other.doc["Config"].get("ExposedPorts") or {}),
                             key=lambda t: (t[0], t[1]))
            for i, (port, proto) in enumerate(exposed):
                url = f"{proto}://{oip}:{port}"
                if i == 0:
                    env.append(f"{pfx}_PORT={url}")
                p = f"{pfx}_PORT_{port}_{proto.upper()}"
                env += [f"{p}={url}", f"{p}_ADDR={oip}", f"{p}_PORT={port}",
                        f"{p}_PROTO={proto}"]
            for e in other.doc["Config"].get("Env") or []:
                k, _, v = e.partition("=")
                if k not in ("HOME", "PATH", "HOSTNAME"):
                    env.append(f"{pfx}_ENV_{k}={v}")
            out["env"] += env
        return out

    def _patch_config(self, rec: Any, path: str, env: list[str]) -> None:
        p = rec.dir / "config.json"
        spec = json.loads(p.read_text())
        nss = [n for n in spec["linux"]["namespaces"] if n.get("type") != "network"]
        nss.append({"type": "network", "path": path})
        spec["linux"]["namespaces"] = nss
        if env:
            have = {e.split("=", 1)[0] for e in spec["process"]["env"]}
            spec["process"]["env"] += [e for e in env if e.split("=", 1)[0] not in have]
        atomic_write(p, json.dumps(spec).encode(), 0o600, sync=False)  # redone every start

    def _fill_settings(self, rec: Any, ep: dict[str, Any]) -> None:
        ns = rec.doc["NetworkSettings"]
        ns["SandboxKey"] = ep["netns"]
        ns["SandboxID"] = ep["cid"]
        for i in ep["ifaces"]:
            s = ns["Networks"].setdefault(i["netname"], self._settings(self.get(i["net"]), []))
            s.update({"NetworkID": i["net"], "EndpointID": i["endpoint"],
                      "Gateway": "" if i["internal"] else i["gateway"], "IPAddress": i["ip"],
                      "IPPrefixLen": i["prefix"], "MacAddress": i["mac"],
                      "DNSNames": ([rec.name, rec.id[:12]] + (i["aliases"] or [])
                                   if i["netname"] != "bridge" else None)})
            if i["netname"] == "bridge":
                ns.update({"EndpointID": i["endpoint"], "Gateway": i["gateway"],
                           "IPAddress": i["ip"], "IPPrefixLen": i["prefix"],
                           "MacAddress": i["mac"], "Bridge": i["bridge"]})
        ns["Ports"] = self.ports_doc(rec.doc, ep)

    def ports_doc(self, doc: dict[str, Any], ep: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {k: None for k in doc["Config"].get("ExposedPorts") or {}}
        for p in (ep or {}).get("ports", []):
            out.setdefault(f"{p['container_port']}/{p['proto']}", None)
            key = f"{p['container_port']}/{p['proto']}"
            out[key] = (out[key] or []) + [{"HostIp": p["host_ip"],
                                            "HostPort": str(p["host_port"])}]
        return out

    # ------------------------------------------------------------------ /etc files

    def _write_hosts(self, rec: Any, ifaces: list[dict[str, Any]], links: dict[str, Any],
                     base: str = DEFAULT_HOSTS) -> None:
        host = rec.doc["HostConfig"]
        lines = [base if base.endswith("\n") or not base else base + "\n"]
        gw = ifaces[0]["gateway"] if ifaces else ""
        for h in host.get("ExtraHosts") or []:
            name, _, ip = str(h).partition(":")
            if ip == "host-gateway":
                ip = gw or "127.0.0.1"
            lines.append(f"{ip.strip('[]')}\t{name}\n")
        for entry in links.get("hosts", []):
            lines.append(entry + "\n")
        hn = rec.doc["Config"].get("Hostname") or rec.id[:12]
        dn = rec.doc["Config"].get("Domainname")
        names = f"{hn}.{dn} {hn}" if dn else hn
        if ifaces:
            lines.append(f"{ifaces[0]['ip']}\t{names}\n")
        atomic_write(rec.dir / "hosts", "".join(lines).encode(), 0o644, sync=False)

    def _write_resolv(self, rec: Any, ifaces: list[dict[str, Any]], host: dict[str, Any],
                      user: bool = False) -> None:
        atomic_write(rec.dir / "resolv.conf", self._resolv_text(rec, host, user).encode(),
                     0o644, sync=False)

    def _resolv_text(self, rec: Any, host: dict[str, Any], user: bool) -> str:
        hns, hsearch, hopts = read_resolv()
        servers = list(host.get("Dns") or self.default_dns) or \
            [s for s in hns if not _is_loopback(s)]
        search = list(host.get("DnsSearch") or hsearch)
        opts = list(host.get("DnsOptions") or hopts)
        text = "# Generated by Sampan.\n"
        if user:
            ext = list(host.get("Dns") or self.default_dns) or hns
            text += f"nameserver {DNS_ADDR}\n"
            if search:
                text += "search " + " ".join(search) + "\n"
            opts = [o for o in opts if not o.startswith("ndots:")] + ["ndots:0"] \
                if not any(o.startswith("ndots:") for o in host.get("DnsOptions") or []) \
                else opts
            text += "options " + " ".join(opts) + "\n"
            text += f"# ExtServers: [{' '.join(ext)}]\n"
        else:
            if not servers and (rec.doc["HostConfig"].get("NetworkMode") or "") != "none":
                servers = ["8.8.8.8", "8.8.4.4"]  # dockerd's fallback
            for s in servers:
                text += f"nameserver {s}\n"
            if search:
                text += "search " + " ".join(search) + "\n"
            if opts:
                text += "options " + " ".join(opts) + "\n"
        return text

    # ------------------------------------------------------------------ containers: stop

    def detach(self, rec: Any) -> None:
        """Undo everything `attach` did (idempotent; also for the record a crash left)."""
        cid = rec if isinstance(rec, str) else rec.id
        with self.lock:
            ep = self.endpoints.get(cid)
            if ep is not None:
                self._teardown(ep)
                self.endpoints.pop(cid, None)
                (self.ep_dir / f"{cid}.json").unlink(missing_ok=True)
                for i in ep["ifaces"]:
                    if i["net"] in self.networks:
                        self._event("disconnect", self.networks[i["net"]], cid)
        if not isinstance(rec, str):
            ns = rec.doc.get("NetworkSettings") or {}
            for s in (ns.get("Networks") or {}).values():
                s.update({"EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                          "MacAddress": "", "DNSNames": None})
            ns.update({"SandboxKey": "", "SandboxID": "", "EndpointID": "", "Gateway": "",
                       "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "", "Bridge": ""})
            ns["Ports"] = {}

    # ------------------------------------------------------------------ host-wide leases

    def _lease(self, bridge: str, subnet: ipaddress.IPv4Network, used: set[str],
               rng: ipaddress.IPv4Network | None, cid: str) -> ipaddress.IPv4Address:
        """The lowest address free for this daemon that no other daemon holds on a bridge of
        the same name: `LEASES/<bridge>/<address>` files name their owner's endpoint record,
        so a lease whose record is gone (a daemon or host that died) is taken over."""
        d = LEASES / bridge
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        me = f"{self.ep_dir}\n{cid}\n".encode()
        skip = set(used)
        while True:
            ip = ipam.first_free(subnet, skip, rng)
            p = d / str(ip)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the last holder removed the empty directory
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                continue
            except FileExistsError:
                if self._lease_held(p):
                    skip.add(str(ip))
                    continue
                atomic_write(p, me, sync=False)  # a stale lease: ours now
                return ip
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
            return ip

    def _lease_held(self, p: Path) -> bool:
        try:
            text = p.read_text()
            age = time.time() - p.stat().st_mtime
        except OSError:
            return False
        owner, _, rest = text.partition("\n")
        cid = rest.strip()
        if not cid:
            return age < 5  # being written by its owner right now
        if Path(owner) == self.ep_dir:
            return cid in self.endpoints
        return (Path(owner) / f"{cid}.json").exists()

    def _unlease(self, ep: dict[str, Any]) -> None:
        me = f"{self.ep_dir}\n{ep['cid']}\n"
        for i in ep["ifaces"]:
            p = LEASES / i["bridge"] / i["ip"]
            try:
                if p.read_text() == me:
                    p.unlink()
                p.parent.rmdir()  # fails while other addresses are held (ENOTEMPTY)
            except OSError:
                pass

    def _teardown(self, ep: dict[str, Any]) -> None:
        fw = self.fw
        if ep.get("rules") and fw is not None:
            try:
                fw.delete([tuple(r) for r in ep["rules"]])
            except Exception as e:  # noqa: BLE001 - the rest must still go
                log.warning("container %s: removing firewall rules: %s", ep["cid"][:12], e)
        for s in self.port_socks.pop(ep["cid"], []):
            s.close()
        if self.dns is not None:
            self.dns.remove(ep["cid"])
        path = Path(ep["netns"])
        try:
            netns.remove(path)
        except OSError as e:
            log.warning("container %s: %s", ep["cid"][:12], e)
        # The namespace's end destroys its veth pairs (asynchronously, in the kernel: deleting
        # them here would cost ~30 ms of RCU grace periods on every stop). A pair whose
        # namespace lives on because something else holds it is deleted a little later.
        self._unlease(ep)
        names = [i["veth"] for i in ep["ifaces"]]
        if names:
            t = threading.Timer(3.0, self._reap_veths, (names,))
            t.daemon = True
            t.start()

    def _reap_veths(self, names: list[str]) -> None:
        for n in names:
            try:
                if self.nl.link_index(n):
                    log.info("network: deleting %s, whose namespace is still held", n)
                    self.nl.del_link(n)
            except OSError as e:
                log.debug("%s: %s", n, e)

    # ------------------------------------------------------------------ restart

    def reconcile(self, running: Callable[[str], Any]) -> None:
        """At daemon start: take over the endpoints of containers still running (ports held,
        DNS listeners reopened in their namespaces), undo the rest, and drop pinned namespaces
        nobody records."""
        with self.lock:
            for cid, ep in list(self.endpoints.items()):
                rec = running(cid)
                if rec is None:
                    log.info("network: cleaning up after container %s", cid[:12])
                    self.detach(cid)
                    continue
                for i in ep["ifaces"]:
                    try:
                        self._realize(self.get(i["net"]))
                    except Exception as e:  # noqa: BLE001
                        log.warning("network %s: %s", i["netname"], e)
                socks = []
                for p in ep.get("ports", []):
                    try:
                        s, _ = _bind_port(p["host_ip"], p["host_port"], p["host_port"],
                                          p["proto"], p["container_port"])
                        socks.append(s)
                    except SampanError as e:
                        log.warning("container %s: %s", cid[:12], e)
                self.port_socks[cid] = socks
                if ep.get("user") and self.dns is not None:
                    try:
                        self.dns.add(cid, netns.run_in(ep["netns"], _dns_sockets), self)
                    except OSError as e:
                        log.warning("container %s: DNS: %s", cid[:12], e)
            if self.ns_dir.is_dir():
                for p in self.ns_dir.iterdir():
                    if p.name not in self.endpoints and not p.name.startswith("."):
                        try:
                            netns.remove(p)
                        except OSError as e:
                            log.warning("%s: %s", p, e)

    # ------------------------------------------------------------------ DNS

    def resolve(self, cid: str, qname: str) -> list[str] | None:
        """Addresses for `qname` as container `cid` sees it on its user networks (None: not
        a name Sampan knows — forward it)."""
        name = qname.rstrip(".").lower()
        with self.lock:
            ep = self.endpoints.get(cid)
            if ep is None:
                return None
            mine = {i["net"] for i in ep["ifaces"] if i["netname"] != "bridge"}
            target = ep.get("links", {}).get(name)
            found: list[str] = []
            for other in self.endpoints.values():
                for i in other["ifaces"]:
                    if i["net"] not in mine:
                        continue
                    names = {other["name"].lower(), other["cid"][:12]}
                    names |= {a.lower() for a in i["aliases"]}
                    if name in names or other["cid"] == target:
                        found.append(i["ip"])
            return found or None

    def upstreams(self, cid: str) -> list[str]:
        ep = self.endpoints.get(cid) or {}
        return list(ep.get("dns") or []) or read_resolv()[0] or ["8.8.8.8"]

    # ------------------------------------------------------------------ connect/disconnect

    def connect(self, ref: str, rec: Any, aliases: list[str]) -> None:
        """Connecting a running container to another network needs a new interface in its
        namespace: supported for stopped containers (applied at the next start)."""
        net = self.get(ref)
        if net["Driver"] != "bridge":
            raise Forbidden(f"container cannot be disconnected from host network or connected "
                            f"to {net['Name']} network")
        mode = rec.doc["HostConfig"].get("NetworkMode") or "default"
        if mode in ("host", "none") or mode.startswith("container:"):
            raise Forbidden(f"container sharing network namespace with another container or "
                            f"host cannot be connected to any other network ({mode})")
        nets = rec.doc["NetworkSettings"]["Networks"]
        if net["Name"] in nets:
            raise Forbidden(f"endpoint with name {rec.name} already exists in network "
                            f"{net['Name']}")
        if aliases and net["Name"] == "bridge":
            raise InvalidArgument("network-scoped aliases are only supported for user-defined "
                                  "networks")
        if rec.running:
            self._hot_plug(rec, net, aliases)
            return
        nets[net["Name"]] = self._settings(net, aliases)

    def _hot_plug(self, rec: Any, net: dict[str, Any], aliases: list[str]) -> None:
        with self.lock:
            ep = self.endpoints.get(rec.id)
            if ep is None:
                raise Conflict(f"container {rec.id[:12]} has no network namespace to connect")
            self._realize(net)
            cfg = net["IPAM"]["Config"][0]
            subnet = ipaddress.IPv4Network(cfg["Subnet"])
            used = {cfg["Gateway"]} | {i["ip"] for _e, i in self._on_net(net["Id"])}
            ip = self._lease(self.bridge_of(net), subnet, used, None, rec.id)
            n = len(ep["ifaces"])
            iface = {"net": net["Id"], "netname": net["Name"], "bridge": self.bridge_of(net),
                     "ip": str(ip), "prefix": subnet.prefixlen, "gateway": cfg["Gateway"],
                     "mac": ipam.mac_str(ipam.mac_for(ip)),
                     "veth": _veth_name(), "ifname": f"eth{n}",
                     "aliases": list(aliases), "endpoint": _hex(32),
                     "internal": bool(net.get("Internal")),
                     "mtu": self.net_mtu[net["Id"]][0], "route_mtu": self.net_mtu[net["Id"]][1]}
            ep["ifaces"].append(iface)
            self._save_ep(ep)
        from sampan.drivers.network.netlink import Netlink

        host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

        def inside() -> Any:
            with Netlink() as nl:
                nl.add_veth(iface["ifname"], iface["veth"], host_fd, iface["mtu"],
                            ipam.mac_for(ip))
                idx = nl.link_index(iface["ifname"])
                nl.add_addr(idx, ipaddress.IPv4Interface(f"{ip}/{subnet.prefixlen}"))
                nl.set_link(index=idx, up=True)
            return _dns_sockets() if (net["Name"] != "bridge" and not ep["user"]
                                      and self.dns is not None) else None

        try:
            socks = netns.run_in(ep["netns"], inside)
        finally:
            os.close(host_fd)
        self.nl.set_link(iface["veth"], master=self.nl.link_index(iface["bridge"]), up=True)
        if net["Name"] != "bridge" and not ep["user"]:
            ep["user"] = True
            self._save_ep(ep)
            if socks is not None:
                self.dns.add(rec.id, socks, self)
            # as dockerd: the first user network brings the embedded DNS into resolv.conf.
            # Rewritten in place: the running container has this very inode bind-mounted.
            text = self._resolv_text(rec, rec.doc["HostConfig"], user=True).encode()
            with open(rec.dir / "resolv.conf", "r+b") as f:
                f.write(text)
                f.truncate()
        rec.doc["NetworkSettings"]["Networks"][net["Name"]] = self._settings(net, aliases)
        self._fill_settings(rec, ep)  # (the API route emits "connect")

    def disconnect(self, ref: str, rec: Any, force: bool) -> None:
        net = self.get(ref)
        nets = rec.doc["NetworkSettings"]["Networks"]
        if net["Name"] not in nets:
            raise Forbidden(f"container {rec.id} is not connected to network {net['Name']}")
        if net["Name"] in ("host", "none"):
            raise Forbidden(f"container cannot be disconnected from {net['Name']} network")
        if rec.running:
            with self.lock:
                ep = self.endpoints.get(rec.id)
                iface = next((i for i in (ep or {}).get("ifaces", [])
                              if i["net"] == net["Id"]), None)
                if ep is not None and iface is not None:
                    name = iface["ifname"]
                    from sampan.drivers.network.netlink import Netlink

                    def inside() -> None:
                        with Netlink() as nl:
                            nl.del_link(name)

                    netns.run_in(ep["netns"], inside)
                    ep["ifaces"].remove(iface)
                    self._unlease({"cid": rec.id, "ifaces": [iface]})
                    self._save_ep(ep)
        del nets[net["Name"]]


def _hex(n: int) -> str:
    # not `secrets`: it imports hashlib, whose libcrypto costs an idle daemon ~3.5 MiB
    return os.urandom(n).hex()


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _veth_name() -> str:
    return "veth" + _hex(4)[:7]


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for lf in wanted:
        k, sep, v = lf.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _bind_port(hip: str, lo: int, hi: int, proto: str, cport: int
               ) -> tuple[socket.socket, int]:
    stype = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    candidates = range(lo, hi + 1) if lo else [0]
    last: OSError | None = None
    for port in candidates:
        s = socket.socket(socket.AF_INET, stype | socket.SOCK_CLOEXEC)
        try:
            s.bind((hip, port))
        except OSError as e:
            s.close()
            last = e
            if e.errno == errno.EADDRNOTAVAIL:
                break
            continue
        return s, s.getsockname()[1]
    what = f"{hip}:{lo}" + (f"-{hi}" if hi != lo else "") if lo else f"{hip}:(random)"
    why = "address already in use" if last is not None and last.errno == errno.EADDRINUSE \
        else (last.strerror if last is not None else "no port free")
    e = PortInUse(f"driver failed programming external connectivity on endpoint: Bind for "
                  f"{what}/{proto} failed: port is already allocated ({why})")
    raise e


class PortInUse(SampanError):
    status = 500


def _dns_sockets() -> list[socket.socket]:
    """The embedded DNS listener, opened inside the container's namespace (it stays there)."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    u.bind((DNS_ADDR, 53))
    u.setblocking(False)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((DNS_ADDR, 53))
    t.listen(16)
    t.setblocking(False)
    return [u, t]
