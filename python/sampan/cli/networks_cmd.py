"""Network verbs (`sampan network create/ls/inspect/rm/prune/connect/disconnect`, `sampan
port`) and the network flags of `run`/`create` (-p/-P/--expose/--network-alias/--link/--dns*/
--add-host), with the docker CLI's syntax and output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sampan.cli import format as fmt
from sampan.cli.system_cmd import client, daemon_errors, fail, inspect_each
from sampan.client import APIError

NET_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
NET_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
               "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
               "CreatedAt": "CREATED AT"}


# --------------------------------------------------------------------------- run/create flags


def network_options(fn: Any) -> Any:
    opts = [
        click.option("-p", "--publish", multiple=True,
                     help="publish a container's port(s) to the host"),
        click.option("-P", "--publish-all", is_flag=True,
                     help="publish all exposed ports to random ports"),
        click.option("--expose", multiple=True, help="expose a port or a range of ports"),
        click.option("--network-alias", multiple=True,
                     help="add network-scoped alias for the container"),
        click.option("--link", multiple=True, help="add link to another container"),
        click.option("--dns", multiple=True, help="set custom DNS servers"),
        click.option("--dns-search", multiple=True, help="set custom DNS search domains"),
        click.option("--dns-option", "--dns-opt", "dns_option", multiple=True,
                     help="set DNS options"),
        click.option("--add-host", multiple=True,
                     help="add a custom host-to-IP mapping (host:ip)"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _range(s: str, what: str) -> tuple[int, int]:
    a, sep, b = s.partition("-")
    try:
        lo, hi = int(a), int(b) if sep else int(a)
    except ValueError:
        raise click.BadParameter(f"invalid {what}: {s}") from None
    if not 0 < lo <= hi < 65536:
        raise click.BadParameter(f"invalid {what}: {s}")
    return lo, hi


def parse_publish(spec: str) -> list[tuple[str, str, dict[str, str]]]:
    """docker's -p grammar: [ip:][hostPort[-end]:]containerPort[-end][/proto] →
    [(containerPort, proto, {"HostIp", "HostPort"})]."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise click.BadParameter(f"invalid proto: {proto}")
    ip = ""
    if rest.startswith("["):
        end = rest.find("]")
        ip, rest = rest[1:end], rest[end + 2:]
    parts = rest.split(":")
    if len(parts) == 3:
        ip, host, cont = parts
    elif len(parts) == 2:
        host, cont = parts
    elif len(parts) == 1:
        host, cont = "", parts[0]
    else:
        raise click.BadParameter(f"invalid port format: {spec}")
    if not cont:
        raise click.BadParameter(f"no port specified: {spec}<empty>")
    clo, chi = _range(cont, "containerPort")
    out = []
    if host == "0":
        host = ""  # docker's way of asking for a random port too
    if host:
        hlo, hhi = _range(host, "hostPort")
        if chi != clo:
            if hhi - hlo != chi - clo:
                raise click.BadParameter(f"invalid ranges specified for container and host "
                                         f"Ports: {cont} and {host}")
            for i in range(chi - clo + 1):
                out.append((str(clo + i), proto, {"HostIp": ip, "HostPort": str(hlo + i)}))
            return out
        out.append((str(clo), proto, {"HostIp": ip, "HostPort": host}))
        return out
    for p in range(clo, chi + 1):
        out.append((str(p), proto, {"HostIp": ip, "HostPort": ""}))
    return out


def apply_network_options(body: dict[str, Any], o: dict[str, Any]) -> None:
    host = body.setdefault("HostConfig", {})
    exposed: dict[str, Any] = {}
    for e in o.get("expose") or ():
        rest, _, proto = e.partition("/")
        lo, hi = _range(rest, "range format for --expose")
        for p in range(lo, hi + 1):
            exposed[f"{p}/{proto or 'tcp'}"] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in o.get("publish") or ():
        for cport, proto, b in parse_publish(spec):
            key = f"{cport}/{proto}"
            bindings.setdefault(key, []).append(b)
            exposed[key] = {}
    if exposed:
        body["ExposedPorts"] = exposed
    if bindings:
        host["PortBindings"] = bindings
    if o.get("publish_all"):
        host["PublishAllPorts"] = True
    for flag, key in (("link", "Links"), ("dns", "Dns"), ("dns_search", "DnsSearch"),
                      ("dns_option", "DnsOptions")):
        if o.get(flag):
            host[key] = list(o[flag])
    if o.get("add_host"):
        hosts = []
        for h in o["add_host"]:
            if "=" in h and ":" not in h.split("=", 1)[0]:
                h = h.replace("=", ":", 1)
            hosts.append(h)
        host["ExtraHosts"] = hosts
    aliases = list(o.get("network_alias") or ())
    if aliases:
        net = host.get("NetworkMode") or "default"
        body["NetworkingConfig"] = {"EndpointsConfig": {net: {"Aliases": aliases}}}


# --------------------------------------------------------------------------- network verbs


@click.group("network")
def network_group() -> None:
    """Manage networks."""


def _net_row(n: dict[str, Any], trunc: bool) -> fmt.Row:
    return fmt.Row("network", {
        "ID": n["Id"][:12] if trunc else n["Id"],
        "Name": n["Name"], "Driver": n["Driver"], "Scope": n.get("Scope", "local"),
        "IPv6": str(bool(n.get("EnableIPv6"))).lower(),
        "Internal": str(bool(n.get("Internal"))).lower(),
        "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
        "CreatedAt": n.get("Created", ""),
    })


def _filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in values:
        k, sep, v = f.partition("=")
        if not sep:
            fail(f'invalid argument "{f}" for "-f, --filter" flag: bad format of filter '
                 "(expected name=value)")
        out.setdefault(k, []).append(v)
    return out


@network_group.command("create")
@click.option("-d", "--driver", default="bridge", help="driver to manage the network")
@click.option("--subnet", multiple=True, help="subnet in CIDR format")
@click.option("--gateway", multiple=True, help="IPv4 gateway for the master subnet")
@click.option("--ip-range", multiple=True, help="allocate container ip from a sub-range")
@click.option("--internal", is_flag=True, help="restrict external access to the network")
@click.option("--attachable", is_flag=True, help="enable manual container attachment")
@click.option("--ipv6", is_flag=True, help="enable IPv6 networking")
@click.option("--label", multiple=True, help="set metadata on a network")
@click.option("-o", "--opt", multiple=True, help="set driver specific options")
@click.argument("name")
@daemon_errors
def create_cmd(driver: str, subnet: tuple[str, ...], gateway: tuple[str, ...],
               ip_range: tuple[str, ...], internal: bool, attachable: bool, ipv6: bool,
               label: tuple[str, ...], opt: tuple[str, ...], name: str) -> None:
    """Create a network."""
    if len(gateway) > len(subnet) or len(ip_range) > len(subnet):
        fail("every ip-range or gateway must have a corresponding subnet")
    cfgs = []
    for i, s in enumerate(subnet):
        c = {"Subnet": s}
        if i < len(gateway):
            c["Gateway"] = gateway[i]
        if i < len(ip_range):
            c["IPRange"] = ip_range[i]
        cfgs.append(c)
    body = {"Name": name, "Driver": driver, "Internal": internal, "Attachable": attachable,
            "EnableIPv6": ipv6, "CheckDuplicate": True,
            "IPAM": {"Driver": "default", "Config": cfgs, "Options": {}},
            "Labels": {k: v for k, _, v in (x.partition("=") for x in label)},
            "Options": {k: v for k, _, v in (x.partition("=") for x in opt)}}
    r = client().post_json("/networks/create", body=body)
    click.echo(r["Id"])


@network_group.command("ls")
@click.option("-f", "--filter", "filters", multiple=True, help="provide filter values")
@click.option("--format", "format_", help="format output using a Go template")
@click.option("-q", "--quiet", is_flag=True, help="only display network IDs")
@click.option("--no-trunc", is_flag=True, help="do not truncate the output")
@daemon_errors
def ls_cmd(filters: tuple[str, ...], format_: str | None, quiet: bool, no_trunc: bool) -> None:
    """List networks."""
    fl = _filters(filters)
    params = {"filters": json.dumps(fl)} if fl else None
    nets = sorted(client().get_json("/networks", params), key=lambda n: n["Name"])
    if quiet and not format_:
        for n in nets:
            click.echo(n["Id"] if no_trunc else n["Id"][:12])
        return
    click.echo(fmt.render_list(format_, [_net_row(n, not no_trunc) for n in nets], NET_TABLE,
                               NET_HEADERS), nl=False)


@network_group.command("inspect")
@click.option("-f", "--format", "format_", help="format the output using a Go template")
@click.option("-v", "--verbose", is_flag=True, help="verbose output for diagnostics")
@click.argument("names", nargs=-1, required=True)
@daemon_errors
def inspect_cmd(format_: str | None, verbose: bool, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    inspect_each(client(), "/networks", names, format_)


@network_group.command("rm")
@click.option("-f", "--force", is_flag=True, help="do not error if the network does not exist")
@click.argument("names", nargs=-1, required=True)
@daemon_errors
def rm_cmd(force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    c = client()
    failed = False
    for n in names:
        try:
            c.request("DELETE", f"/networks/{n}")
            click.echo(n)
        except APIError as e:
            if force and e.status == 404:
                continue
            click.echo(f"Error response from daemon: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@network_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="provide filter values")
@daemon_errors
def prune_cmd(force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks."""
    if not force:
        click.echo("WARNING! This will remove all custom networks not used by at least one "
                   "container.\nAre you sure you want to continue? [y/N] ", nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return
    fl = _filters(filters)
    r = client().post_json("/networks/prune", {"filters": json.dumps(fl)} if fl else None)
    gone = r.get("NetworksDeleted") or []
    if gone:
        click.echo("Deleted Networks:")
        for n in gone:
            click.echo(n)


@network_group.command("connect")
@click.option("--alias", multiple=True, help="add network-scoped alias for the container")
@click.option("--ip", help="IPv4 address (not supported yet)")
@click.argument("network")
@click.argument("container")
@daemon_errors
def connect_cmd(alias: tuple[str, ...], ip: str | None, network: str, container: str) -> None:
    """Connect a container to a network."""
    if ip:
        fail("--ip is not supported yet")
    client().request("POST", f"/networks/{network}/connect",
                     body={"Container": container,
                           "EndpointConfig": {"Aliases": list(alias) or None}})


@network_group.command("disconnect")
@click.option("-f", "--force", is_flag=True, help="force the container to disconnect")
@click.argument("network")
@click.argument("container")
@daemon_errors
def disconnect_cmd(force: bool, network: str, container: str) -> None:
    """Disconnect a container from a network."""
    client().request("POST", f"/networks/{network}/disconnect",
                     body={"Container": container, "Force": force})


@click.command("port")
@click.argument("container")
@click.argument("private_port", required=False)
@daemon_errors
def port_cmd(container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    info = client().get_json(f"/containers/{container}/json")
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    if private_port:
        p, _, proto = private_port.partition("/")
        key = f"{p}/{proto or 'tcp'}"
        lst = ports.get(key)
        if not lst:
            fail(f"Error: No public port '{key}' published for {container}")
        for b in lst:
            click.echo(f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}")
        return

    def order(k: str) -> tuple[int, str]:
        n, _, proto = k.partition("/")
        return int(n), proto

    for key in sorted(ports, key=order):
        for b in ports[key] or []:
            click.echo(f"{key} -> {b['HostIp'] or '0.0.0.0'}:{b['HostPort']}")


def ps_ports(s: dict[str, Any]) -> str:
    """The PORTS column of `ps` from a /containers/json summary's Ports."""
    parts = []
    for p in sorted(s.get("Ports") or [], key=lambda p: (p.get("PrivatePort", 0),
                                                          p.get("Type", ""))):
        if p.get("PublicPort"):
            parts.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->"
                         f"{p['PrivatePort']}/{p['Type']}")
        else:
            parts.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(parts)


COMMANDS = [network_group, port_cmd]
