"""Address management: default pools that avoid what the host already routes, subnet overlap
checks, and the lowest free address of a subnet. Allocations themselves are the endpoint
records the controller persists; this module only computes."""

from __future__ import annotations

import ipaddress
from typing import Iterable

from sampan.errors import Conflict, InvalidArgument

# dockerd's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 cut in /20s
DEFAULT_POOLS = ([ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
                 + [ipaddress.IPv4Network(f"192.168.{n}.0/20") for n in range(0, 256, 16)])


class PoolExhausted(Conflict):
    pass


def parse_subnet(s: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid subnet {s!r}") from None
    if net.version != 4:
        raise InvalidArgument(f"invalid subnet {s!r}: only IPv4 subnets are supported")
    if str(net) != s and "/" in s and ipaddress.ip_interface(s).ip != net.network_address:
        raise InvalidArgument(f"invalid subnet {s}: it should be {net}")
    if net.prefixlen > 30:
        raise InvalidArgument(f"invalid subnet {s}: too small (at most /30)")
    return net


def pick_pool(taken: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    taken = list(taken)
    for pool in DEFAULT_POOLS:
        if not any(pool.overlaps(t) for t in taken):
            return pool
    raise PoolExhausted("could not find an available, non-overlapping IPv4 address pool "
                        "among the defaults to assign to the network")


def first_free(subnet: ipaddress.IPv4Network, used: set[str],
               ip_range: ipaddress.IPv4Network | None = None) -> ipaddress.IPv4Address:
    pool = ip_range or subnet
    for ip in pool.hosts():
        if str(ip) not in used and ip in subnet:
            return ip
    raise PoolExhausted(f"no available IPv4 addresses on this network's address pools: "
                        f"{subnet}")


def mac_for(ip: ipaddress.IPv4Address) -> bytes:
    """02:42 + the address: stable per address, so a reused address keeps peers' ARP right."""
    return bytes([0x02, 0x42]) + ip.packed


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)
