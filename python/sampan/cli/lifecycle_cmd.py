"""Verbs around a container's process and the daemon's events: events, top, stats, rename,
pause, unpause, update, port — docker's flags, output and exit codes."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from sampan.cli import format as fmt
from sampan.cli.system_cmd import client, daemon_errors, each_name
from sampan.client import APIError, ClientError


def _filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in values:
        k, sep, v = f.partition("=")
        if not sep:
            raise click.BadParameter(f"bad format of filter (expected name=value): {f}")
        out.setdefault(k.strip().lower(), []).append(v)
    return out


def _rfc3339_nano_local(ns: int) -> str:
    """Go's RFC3339NanoFixed in local time, as `docker events` prints times."""
    t = datetime.fromtimestamp(ns // 1_000_000_000).astimezone()
    off = t.strftime("%z")
    off = "Z" if off in ("+0000", "") else off[:3] + ":" + off[3:]
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}" + off


def event_line(ev: dict[str, Any]) -> str:
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    line = (f"{_rfc3339_nano_local(int(ev.get('timeNano') or ev.get('time', 0) * 10**9))} "
            f"{ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}")
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


@click.command("events")
@click.option("-f", "--filter", "filters", multiple=True, help="filter output (key=value)")
@click.option("--format", "format_", help="format the output with a Go template (or json)")
@click.option("--since", help="show all events created since timestamp")
@click.option("--until", help="stream events until this timestamp")
@daemon_errors
def events_cmd(filters: tuple[str, ...], format_: str | None, since: str | None,
               until: str | None) -> None:
    """Get real time events from the server."""
    params: dict[str, Any] = {"since": since, "until": until}
    fl = _filters(filters)
    if fl:
        params["filters"] = json.dumps(fl)
    c = client()
    c.timeout = None
    if format_ and format_.strip() == "json":
        format_ = "{{json .}}"
    try:
        for ev in c.stream_json("GET", "/events", params):
            if format_:
                click.echo(fmt.render(format_, ev), nl=False)
            else:
                click.echo(event_line(ev))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except APIError as e:
        click.echo(f"Error response from daemon: {e.message}", err=True)
        sys.exit(1)






@click.command("restart")
@click.option("-t", "--time", "--timeout", "timeout", type=int, help="seconds to wait before "
              "killing the container")
@click.option("-s", "--signal", "sig", help="signal to send to the container")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def restart_cmd(timeout: int | None, sig: str | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    c = client()
    c.timeout = None
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/restart",
                                          {"t": timeout, "signal": sig}))


@click.command("pause")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def pause_cmd(containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    c = client()
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/pause"))


@click.command("unpause")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def unpause_cmd(containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    c = client()
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/unpause"))


@click.command("rename")
@click.argument("container")
@click.argument("new_name")
@daemon_errors
def rename_cmd(container: str, new_name: str) -> None:
    """Rename a container."""
    try:
        client().request("POST", f"/containers/{container}/rename", {"name": new_name})
    except APIError as e:
        click.echo(f"Error response from daemon: {e.message}", err=True)
        sys.exit(1)


@click.command("top")
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@daemon_errors
def top_cmd(container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container."""
    params = {"ps_args": " ".join(ps_args)} if ps_args else None
    try:
        r = client().get_json(f"/containers/{container}/top", params)
    except APIError as e:
        click.echo(f"Error response from daemon: {e.message}", err=True)
        sys.exit(1)
    text = "\t".join(r.get("Titles") or []) + "\n"
    for p in r.get("Processes") or []:
        text += "\t".join(p) + "\n"
    click.echo(fmt.tabulate(text, minwidth=20, padding=3), nl=False)


@click.command("update")
@click.option("--blkio-weight", type=int, help="block IO (relative weight), between 10 and 1000")
@click.option("--cpu-period", type=int, help="limit CPU CFS period")
@click.option("--cpu-quota", type=int, help="limit CPU CFS quota")
@click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
@click.option("--cpus", help="number of CPUs")
@click.option("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
@click.option("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)")
@click.option("-m", "--memory", help="memory limit")
@click.option("--memory-reservation", help="memory soft limit")
@click.option("--memory-swap", help="swap limit equal to memory plus swap: -1 for unlimited")
@click.option("--pids-limit", type=int, help="tune container pids limit (-1 for unlimited)")
@click.option("--restart", "restart_", help="restart policy to apply when a container exits")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def update_cmd(containers: tuple[str, ...], **o: Any) -> None:
    """Update configuration of one or more containers."""
    from sampan.cli import run_opts

    body: dict[str, Any] = {}
    for flag, key in (("memory", "Memory"), ("memory_reservation", "MemoryReservation"),
                      ("memory_swap", "MemorySwap")):
        v = run_opts.ram(o.get(flag), "--" + flag.replace("_", "-"))
        if v is not None:
            body[key] = v
    for flag, key in (("blkio_weight", "BlkioWeight"), ("cpu_period", "CpuPeriod"),
                      ("cpu_quota", "CpuQuota"), ("cpu_shares", "CpuShares"),
                      ("pids_limit", "PidsLimit")):
        if o.get(flag) is not None:
            body[key] = o[flag]
    for flag, key in (("cpuset_cpus", "CpusetCpus"), ("cpuset_mems", "CpusetMems")):
        if o.get(flag):
            body[key] = o[flag]
    if o.get("cpus"):
        try:
            body["NanoCpus"] = int(round(float(o["cpus"]) * 1e9))
        except ValueError:
            raise click.BadParameter(f"failed to parse {o['cpus']} as a rational number",
                                     param_hint="--cpus") from None
    pol = run_opts.restart_policy(o.get("restart_"))
    if pol is not None:
        body["RestartPolicy"] = pol
    if not body:
        click.echo("You must provide one or more flags when using this command.", err=True)
        sys.exit(1)
    c = client()

    def one(n: str) -> None:
        r = c.post_json(f"/containers/{n}/update", None, body)
        for w in (r or {}).get("Warnings") or []:
            click.echo(f"WARNING: {w}", err=True)

    each_name(containers, one)


# --------------------------------------------------------------------------- stats


STATS_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
               "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")
STATS_HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def stats_numbers(s: dict[str, Any]) -> dict[str, float]:
    """docker CLI's arithmetic on one stats document (cgroup v1 and v2)."""
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                           or []) or 1
    cpu_perc = cpu_delta / sys_delta * online * 100 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage") or 0
    st = mem.get("stats") or {}
    if "total_inactive_file" in st and st["total_inactive_file"] < usage:
        usage -= st["total_inactive_file"]
    elif st.get("inactive_file", usage) < usage:
        usage -= st["inactive_file"]
    limit = mem.get("limit") or 0
    rx = tx = 0
    for n in (s.get("networks") or {}).values():
        rx += n.get("rx_bytes", 0)
        tx += n.get("tx_bytes", 0)
    rd = wr = 0
    for e in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(e.get("op", "")).lower()
        if op == "read":
            rd += e.get("value", 0)
        elif op == "write":
            wr += e.get("value", 0)
    return {"cpu": cpu_perc, "mem": usage, "limit": limit,
            "memperc": usage / limit * 100 if limit else 0.0, "rx": rx, "tx": tx,
            "read": rd, "write": wr, "pids": (s.get("pids_stats") or {}).get("current", 0)}


def _stats_row(cid: str, name: str, s: dict[str, Any] | None, trunc: bool) -> fmt.Row:
    if s is None or s.get("read", "").startswith("0001-"):
        num = None
    else:
        num = stats_numbers(s)

    def show(f: Any) -> Any:
        return (lambda: "--") if num is None else f

    hs = fmt.human_size
    return fmt.Row("stats", {
        "ID": cid[:12] if trunc else cid,
        "Container": name or (cid[:12] if trunc else cid),
        "Name": name or "--",
        "CPUPerc": show(lambda: f"{num['cpu']:.2f}%"),
        "MemUsage": show(lambda: f"{fmt.bytes_size(num['mem'])} / "
                                 f"{fmt.bytes_size(num['limit'])}"),
        "MemPerc": show(lambda: f"{num['memperc']:.2f}%"),
        "NetIO": show(lambda: f"{hs(num['rx'])} / {hs(num['tx'])}"),
        "BlockIO": show(lambda: f"{hs(num['read'])} / {hs(num['write'])}"),
        "PIDs": show(lambda: str(num["pids"])),
    })


@click.command("stats")
@click.option("-a", "--all", "all_", is_flag=True, help="show all containers (default shows "
              "just running)")
@click.option("--no-stream", is_flag=True, help="disable streaming stats and only pull the "
              "first result")
@click.option("--no-trunc", is_flag=True, help="do not truncate output")
@click.option("--format", "format_", help="format output using a Go template (or json)")
@click.argument("containers", nargs=-1)
@daemon_errors
def stats_cmd(all_: bool, no_stream: bool, no_trunc: bool, format_: str | None,
              containers: tuple[str, ...]) -> None:
    """Display a live stream of container(s) resource usage statistics."""
    import threading

    from sampan.client import Client

    c = client()
    if containers:
        targets = []
        for n in containers:
            try:
                info = c.get_json(f"/containers/{n}/json")
            except APIError as e:
                click.echo(f"Error response from daemon: {e.message}", err=True)
                sys.exit(1)
            targets.append((info["Id"], info["Name"].lstrip("/")))
    else:
        targets = [(s["Id"], (s.get("Names") or ["/"])[0].lstrip("/"))
                   for s in c.get_json("/containers/json", {"all": all_})]
    host = c.host

    def fetch(cid: str, out: dict[str, Any]) -> None:
        cl = Client(host, tls=getattr(c, "tls", None))
        try:
            out[cid] = cl.get_json(f"/containers/{cid}/stats", {"stream": False})
        except ClientError:
            out[cid] = None
        finally:
            cl.close()

    try:
        while True:
            got: dict[str, Any] = {}
            threads = [threading.Thread(target=fetch, args=(cid, got), daemon=True)
                       for cid, _n in targets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows = [_stats_row(cid, name, got.get(cid), not no_trunc) for cid, name in targets]
            text = fmt.render_list(format_, rows, STATS_TABLE, STATS_HEADERS)
            if no_stream:
                click.echo(text, nl=False)
                return
            click.echo("\033[2J\033[H" + text, nl=False)
    except KeyboardInterrupt:
        return


COMMANDS = [events_cmd, restart_cmd, pause_cmd, unpause_cmd, rename_cmd, top_cmd, update_cmd,
            stats_cmd]
