"""Container verbs: run, create, start, stop, kill, rm, ps, logs, inspect, wait — docker's
flags (a subset for now: no -i/-t yet), output and exit codes (the container's own; 125 engine
error; 126 cannot invoke; 127 not found)."""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import click

from sampan.cli import format as fmt
from sampan.cli import mount_opts
from sampan.cli.networks_cmd import apply_network_options, network_options, ps_ports
from sampan.cli.system_cmd import client, daemon_errors, each_name
from sampan.client import APIError, ClientError

EXIT_ENGINE = 125
PS_TABLE = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
            "{{.Ports}}\t{{.Names}}")
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "RunningFor": "CREATED", "CreatedAt": "CREATED AT", "Status": "STATUS",
              "Ports": "PORTS", "Names": "NAMES", "State": "STATE", "Labels": "LABELS",
              "Mounts": "MOUNTS", "Networks": "NETWORKS", "Size": "SIZE"}


def _engine_fail(msg: str, code: int = EXIT_ENGINE) -> None:
    click.echo(msg, err=True)
    sys.exit(code)


def _kv_list(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        k, _, val = v.partition("=")
        out[k] = val
    return out


def _memory(v: str | None) -> int:
    if not v:
        return 0
    s = v.strip().lower().rstrip("b")
    mult = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(s)
    except ValueError:
        raise click.BadParameter(f"invalid size: '{v}'") from None


def _create_options(fn: Any) -> Any:
    opts = [
        click.option("--name", help="assign a name to the container"),
        click.option("-e", "--env", multiple=True, help="set environment variables"),
        click.option("-w", "--workdir", help="working directory inside the container"),
        click.option("-u", "--user", help="username or UID (format: <name|uid>[:<group|gid>])"),
        click.option("-h", "--hostname", help="container host name"),
        click.option("-m", "--memory", help="memory limit"),
        click.option("--pids-limit", type=int, help="tune container pids limit"),
        click.option("--read-only", is_flag=True, help="mount the root filesystem read-only"),
        click.option("--entrypoint", help="overwrite the default ENTRYPOINT of the image"),
        click.option("-l", "--label", multiple=True, help="set meta data on a container"),
        click.option("--network", "--net", default="default",
                     help="connect a container to a network (none, host)"),
        click.option("--cap-add", multiple=True, help="add Linux capabilities"),
        click.option("--cap-drop", multiple=True, help="drop Linux capabilities"),
        click.option("--security-opt", multiple=True, help="security options"),
        click.option("--privileged", is_flag=True, help="give extended privileges"),
        click.option("-v", "--volume", multiple=True,
                     help="bind mount a volume (/src:/dst[:ro], name:/dst, /dst)"),
        click.option("--mount", "mounts", multiple=True,
                     help="attach a filesystem mount (type=volume|bind|tmpfs,source=,target=)"),
        click.option("--tmpfs", multiple=True, help="mount a tmpfs directory (/dst[:opts])"),
        click.option("--volumes-from", multiple=True,
                     help="mount volumes from the specified container(s) (name[:ro|rw])"),
        click.option("--rm", "auto_remove", is_flag=True,
                     help="automatically remove the container when it exits"),
        click.option("--stop-signal", help="signal to stop the container"),
        click.option("--stop-timeout", type=int, help="timeout (in seconds) to stop a container"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    from sampan.cli import log_opts, run_opts
    from sampan.cli.exec_cmd import interactive_options

    return log_opts.options(run_opts.options(interactive_options(network_options(fn))))


def _body(image: str, command: tuple[str, ...], o: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"Image": image, "Env": list(o["env"]),
                            "Labels": _kv_list(o["label"]), "Tty": False, "OpenStdin": False,
                            "AttachStdout": True, "AttachStderr": True}
    if command:
        body["Cmd"] = list(command)
    if o["entrypoint"] is not None:
        body["Entrypoint"] = [o["entrypoint"]] if o["entrypoint"] else []
    for k, key in (("workdir", "WorkingDir"), ("user", "User"), ("hostname", "Hostname"),
                   ("stop_signal", "StopSignal"), ("stop_timeout", "StopTimeout")):
        if o[k] is not None:
            body[key] = o[k]
    body["HostConfig"] = {
        "Binds": list(o["volume"]) or None,
        "Memory": _memory(o["memory"]),
        "PidsLimit": o["pids_limit"],
        "ReadonlyRootfs": o["read_only"],
        "Privileged": o["privileged"],
        "CapAdd": list(o["cap_add"]) or None,
        "CapDrop": list(o["cap_drop"]) or None,
        "SecurityOpt": list(o["security_opt"]) or None,
        "AutoRemove": o["auto_remove"],
        "NetworkMode": o["network"],
    }
    apply_network_options(body, o)
    mount_opts.apply(body, o["volume"], o["mounts"], o["tmpfs"], o["volumes_from"])
    from sampan.cli.exec_cmd import apply_interactive

    apply_interactive(body, o, bool(o.get("detach")))
    from sampan.cli import run_opts

    run_opts.apply(body, o)
    from sampan.cli import log_opts

    log_opts.apply(body, o)
    return body


def _do_create(image: str, command: tuple[str, ...], o: dict[str, Any]) -> str:
    c = client()
    try:
        r = c.post_json("/containers/create", {"name": o["name"]}, _body(image, command, o))
    except APIError as e:
        _engine_fail(f"Error response from daemon: {e.message}")
    for w in r.get("Warnings") or []:
        click.echo(f"WARNING: {w}", err=True)
    return r["Id"]


def _start_failed(e: APIError) -> None:
    low = e.message.lower()
    code = EXIT_ENGINE
    if "not found" in low or "no such file" in low:
        code = 127
    elif "permission denied" in low:
        code = 126
    _engine_fail(f"Error response from daemon: {e.message}", code)


def demux(chunks: Any, tty: bool = False) -> None:
    """Write a (multiplexed, without tty) stream to stdout/stderr as it comes."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    buf = b""
    for chunk in chunks:
        if tty:
            out.write(chunk)
            out.flush()
            continue
        buf += chunk
        while len(buf) >= 8:
            kind, size = struct.unpack(">BxxxL", buf[:8])
            if len(buf) < 8 + size:
                break
            data, buf = buf[8:8 + size], buf[8 + size:]
            f = err if kind == 2 else out
            f.write(data)
            f.flush()


@click.command("create", context_settings={"ignore_unknown_options": False,
                                          "allow_interspersed_args": False})
@_create_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@daemon_errors
def create_cmd(image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create a new container."""
    click.echo(_do_create(image, command, o))


def _run_options(fn: Any) -> Any:
    from sampan.cli.exec_cmd import run_options

    return run_options(fn)


@click.command("run", context_settings={"allow_interspersed_args": False})
@_create_options
@_run_options
@click.option("-d", "--detach", is_flag=True, help="run in the background, print the id")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@daemon_errors
def run_cmd(image: str, command: tuple[str, ...], detach: bool, **o: Any) -> None:
    """Create and run a new container from an image."""
    rm = o["auto_remove"]
    if not detach:
        from sampan.cli import exec_cmd

        exec_cmd.check_tty_input(o["tty"], exec_cmd._streams(o)[0])
        cid = _do_create(image, command, o)
        sys.exit(exec_cmd.run_attached(cid, o))
    cid = _do_create(image, command, dict(o, detach=True))
    c = client()
    try:
        c.request("POST", f"/containers/{cid}/start")
    except APIError as e:
        if rm:
            try:
                c.request("DELETE", f"/containers/{cid}", {"force": True})
            except ClientError:
                pass
        _start_failed(e)
    click.echo(cid)


@click.command("start")
@click.option("-a", "--attach", is_flag=True, help="attach STDOUT/STDERR and forward signals")
@click.option("-i", "--interactive", is_flag=True, help="attach container's STDIN")
@click.option("--detach-keys", help="override the key sequence for detaching a container")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def start_cmd(attach: bool, interactive: bool, detach_keys: str | None,
              containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    c = client()
    if attach or interactive:
        if len(containers) > 1:
            _engine_fail("you cannot start and attach multiple containers at once", 1)
        from sampan.cli.exec_cmd import start_attached

        sys.exit(start_attached(containers[0], interactive, detach_keys))
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/start"))


@click.command("stop")
@click.option("-t", "--time", "--timeout", "timeout", type=int, help="seconds to wait before "
              "killing the container")
@click.option("-s", "--signal", "sig", help="signal to send")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def stop_cmd(timeout: int | None, sig: str | None, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    c = client()
    c.timeout = None
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/stop",
                                          {"t": timeout, "signal": sig}))


@click.command("kill")
@click.option("-s", "--signal", "sig", default="KILL", help="signal to send")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def kill_cmd(sig: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""
    c = client()
    each_name(containers, lambda n: c.request("POST", f"/containers/{n}/kill", {"signal": sig}))


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="force the removal of a running container")
@click.option("-v", "--volumes", is_flag=True, help="remove anonymous volumes")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def rm_cmd(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    c = client()
    each_name(containers, lambda n: c.request("DELETE", f"/containers/{n}",
                                          {"force": force, "v": volumes}))


def _ps_row(s: dict[str, Any], trunc: bool) -> fmt.Row:
    cmd = s.get("Command", "")
    if trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return fmt.Row("container", {
        "ID": fmt.short_id(s["Id"], trunc),
        "Image": s.get("Image", ""),
        "Command": json.dumps(cmd, ensure_ascii=False),
        "RunningFor": lambda: fmt.time_ago(s.get("Created")),
        "CreatedAt": lambda: fmt.go_time_string(s.get("Created")),
        "Status": s.get("Status", ""),
        "State": s.get("State", ""),
        "Ports": lambda: ps_ports(s),
        "Names": ",".join(n.lstrip("/") for n in s.get("Names") or []),
        "Labels": ",".join(f"{k}={v}" for k, v in (s.get("Labels") or {}).items()),
        "Mounts": lambda: mount_opts.ps_mounts(s, trunc),
        "Networks": ",".join((s.get("NetworkSettings") or {}).get("Networks") or {}),
        "Size": "0B",
    })


@click.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="show all containers")
@click.option("-q", "--quiet", is_flag=True, help="only display container IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="filter output (key=value)")
@click.option("-n", "--last", type=int, default=-1, help="show n last created containers")
@click.option("-l", "--latest", is_flag=True, help="show the latest created container")
@click.option("--no-trunc", is_flag=True, help="don't truncate output")
@click.option("--format", "format_", help="format output using a Go template (or json)")
@daemon_errors
def ps_cmd(all_: bool, quiet: bool, filters: tuple[str, ...], last: int, latest: bool,
           no_trunc: bool, format_: str | None) -> None:
    """List containers."""
    fl: dict[str, list[str]] = {}
    for f in filters:
        k, _, v = f.partition("=")
        fl.setdefault(k, []).append(v)
    if latest:
        last = 1
    params: dict[str, Any] = {"all": all_ or last > 0}
    if last > 0:
        params["limit"] = last
    if fl:
        params["filters"] = json.dumps(fl)
    rows = client().get_json("/containers/json", params)
    if quiet and not format_:
        for s in rows:
            click.echo(s["Id"] if no_trunc else s["Id"][:12])
        return
    click.echo(fmt.render_list(format_, [_ps_row(s, not no_trunc) for s in rows], PS_TABLE,
                               PS_HEADERS), nl=False)


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="follow log output")
@click.option("-t", "--timestamps", is_flag=True, help="show timestamps")
@click.option("-n", "--tail", default="all", help="number of lines from the end")
@click.argument("container")
@daemon_errors
def logs_cmd(follow: bool, timestamps: bool, tail: str, container: str) -> None:
    """Fetch the logs of a container."""
    c = client()
    info = c.get_json(f"/containers/{container}/json")
    r = c.request("GET", f"/containers/{container}/logs",
                  {"stdout": True, "stderr": True, "follow": follow,
                   "timestamps": timestamps, "tail": tail}, stream=True)
    demux(r.chunks(), bool(info["Config"].get("Tty")))


@click.command("wait")
@click.argument("containers", nargs=-1, required=True)
@daemon_errors
def wait_cmd(containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    c = client()
    c.timeout = None
    failed = False
    for n in containers:
        try:
            click.echo(c.post_json(f"/containers/{n}/wait")["StatusCode"])
        except APIError as e:
            click.echo(f"Error response from daemon: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@click.command("inspect")
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@click.option("--type", "type_", type=click.Choice(["container", "image"]))
@click.argument("names", nargs=-1, required=True)
@daemon_errors
def inspect_cmd(format_: str | None, type_: str | None, names: tuple[str, ...]) -> None:
    """Return low-level information on containers or images."""
    c = client()
    out, failed = [], False
    for n in names:
        obj = None
        for kind in ([type_] if type_ else ["container", "image"]):
            try:
                obj = c.get_json(f"/{kind}s/{n}/json")
                break
            except APIError as e:
                if e.status != 404:
                    raise
        if obj is None:
            click.echo(f"Error: No such object: {n}", err=True)
            failed = True
            continue
        out.append(obj)
    if format_:
        for obj in out:
            click.echo(fmt.render(format_, obj))
    else:
        click.echo(json.dumps(out, indent=4))
    if failed:
        sys.exit(1)


COMMANDS = [run_cmd, create_cmd, start_cmd, stop_cmd, kill_cmd, rm_cmd, ps_cmd, logs_cmd,
            wait_cmd, inspect_cmd]
from sampan.cli.exec_cmd import COMMANDS as _EXEC_COMMANDS  # noqa: E402

COMMANDS += _EXEC_COMMANDS
