"""`sampan runtime …`: runc's verbs and flags over the Rust runtime, so the same scripts drive
runc and Sampan."""

from __future__ import annotations

import json
import os
import signal as signals
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import click

from sampan import runtime as rt


def _fail(msg: str, code: int = 1) -> "NoReturn":  # noqa: F821
    click.echo(f"sampan: error: {msg}", err=True)
    sys.exit(code)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except rt.ContainerError as e:
            _fail(str(e))


@click.group(cls=_Group)
@click.option("--root", default=rt.DEFAULT_ROOT, show_default=True, help="state directory")
@click.option("--debug", is_flag=True, hidden=True)
@click.option("--log", hidden=True)
@click.option("--log-format", hidden=True)
@click.option("--systemd-cgroup", is_flag=True, hidden=True)
@click.pass_context
def runtime(ctx: click.Context, root: str, **_: Any) -> None:
    """The low-level OCI runtime (runc-compatible)."""
    ctx.obj = {"root": root}


def _root(ctx: click.Context) -> str:
    return ctx.obj["root"]


def _signal(name: str) -> int:
    s = name.upper()
    if s.isdigit():
        return int(s)
    if not s.startswith("SIG"):
        s = "SIG" + s
    try:
        return int(getattr(signals, s))
    except AttributeError:
        _fail(f"unknown signal {name!r}")


def _bundle_terminal(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return bool(json.load(f).get("process", {}).get("terminal"))
    except (OSError, ValueError):
        return False


_create_options = [
    click.option("-b", "--bundle", default=".", help="path to the bundle"),
    click.option("--console-socket", help="unix socket that receives the pty master"),
    click.option("--pid-file", help="write the container's pid here"),
    click.option("--preserve-fds", default=0, type=int, help="extra fds to pass (from 3)"),
    click.option("--no-pivot", is_flag=True, hidden=True),
    click.option("--no-new-keyring", is_flag=True, hidden=True),
]


def _with_create_options(f: Any) -> Any:
    for opt in reversed(_create_options):
        f = opt(f)
    return f


@runtime.command()
@click.argument("container_id")
@_with_create_options
@click.pass_context
def create(ctx, container_id, bundle, console_socket, pid_file, preserve_fds, **_):
    """Create a container; its process waits for `start`."""
    rt.Container.create(
        container_id,
        bundle,
        root=_root(ctx),
        console_socket=console_socket,
        pid_file=pid_file,
        preserve_fds=preserve_fds,
    )


@runtime.command()
@click.argument("container_id")
@click.pass_context
def start(ctx, container_id):
    """Start a created container."""
    rt.Container.load(container_id, _root(ctx)).start()


@runtime.command()
@click.argument("container_id")
@click.pass_context
def state(ctx, container_id):
    """Print the container's state as JSON."""
    click.echo(json.dumps(rt.Container.load(container_id, _root(ctx)).state(), indent=2))


@runtime.command()
@click.option("-a", "--all", "all_", is_flag=True, help="signal every process in the container")
@click.argument("container_id")
@click.argument("signal", default="SIGTERM")
@click.pass_context
def kill(ctx, all_, container_id, signal):
    """Send a signal (default SIGTERM) to the container."""
    rt.Container.load(container_id, _root(ctx)).kill(_signal(signal), all_)


@runtime.command()
@click.option("-f", "--force", is_flag=True, help="kill the container if it runs")
@click.argument("container_id")
@click.pass_context
def delete(ctx, force, container_id):
    """Delete a container and everything it holds."""
    try:
        c = rt.Container.load(container_id, _root(ctx))
    except rt.ContainerError:
        if force:
            return
        raise
    c.delete(force)


@runtime.command()
@click.argument("container_id")
@click.pass_context
def pause(ctx, container_id):
    """Freeze every process of the container."""
    rt.Container.load(container_id, _root(ctx)).pause()


@runtime.command()
@click.argument("container_id")
@click.pass_context
def resume(ctx, container_id):
    """Thaw a paused container."""
    rt.Container.load(container_id, _root(ctx)).resume()


@runtime.command()
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1)
@click.pass_context
def ps(ctx, fmt, container_id, ps_args):
    """List the processes in the container."""
    pids = rt.Container.load(container_id, _root(ctx)).ps()
    if fmt == "json":
        click.echo(json.dumps(pids))
        return
    args = list(ps_args) or ["-ef"]
    out = subprocess.run(["ps", *args], capture_output=True, text=True, check=False).stdout
    lines = out.splitlines()
    if not lines:
        return
    header = lines[0]
    cols = header.split()
    pid_col = cols.index("PID") if "PID" in cols else 1
    click.echo(header)
    wanted = {str(p) for p in pids}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > pid_col and fields[pid_col] in wanted:
            click.echo(line)


@runtime.command(name="list")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="only ids")
@click.pass_context
def list_(ctx, fmt, quiet):
    """List containers."""
    items = rt.list(_root(ctx))
    if quiet:
        for s in items:
            click.echo(s["id"])
    elif fmt == "json":
        click.echo(json.dumps(items))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for s in items:
            rows.append(
                (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _tty_session(start: Any) -> int:
    """Run `start(console_socket_path)` while proxying the pty it sends to this terminal."""
    from sampan.cli.console import ConsoleSocket, proxy

    sock = ConsoleSocket()
    stop = threading.Event()
    result: dict = {}

    def runner() -> None:
        try:
            result["code"] = start(sock.path)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            result["error"] = e
        finally:
            stop.set()

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    master = sock.wait_master()
    if master is not None:
        proxy(master, stop)
        os.close(master)
    t.join()
    sock.close()
    if "error" in result:
        raise result["error"]
    return result["code"]


@runtime.command()
@click.argument("container_id")
@_with_create_options
@click.option("-d", "--detach", is_flag=True, help="do not wait for the container")
@click.option("--keep", is_flag=True, help="do not delete the container after it exits")
@click.pass_context
def run(ctx, container_id, bundle, console_socket, pid_file, preserve_fds, detach, keep, **_):
    """Create and start a container, wait for it, delete it; exit with its status."""
    root = _root(ctx)
    if detach or keep:
        c = rt.Container.create(
            container_id, bundle, root=root, console_socket=console_socket,
            pid_file=pid_file, preserve_fds=preserve_fds,
        )
        c.start()
        if detach:
            return
        code = c.wait()
        sys.exit(code)
    if console_socket is None and _bundle_terminal(bundle):
        code = _tty_session(
            lambda path: rt.run(container_id, bundle, root=root, console_socket=path,
                                pid_file=pid_file, preserve_fds=preserve_fds)
        )
    else:
        code = rt.run(
            container_id, bundle, root=root, console_socket=console_socket,
            pid_file=pid_file, preserve_fds=preserve_fds,
        )
    sys.exit(code)


def _parse_user(user: str) -> "tuple[int, Optional[int]]":
    uid, _, gid = user.partition(":")
    try:
        return int(uid), (int(gid) if gid else None)
    except ValueError:
        _fail(f"--user {user!r}: expected UID[:GID] as numbers")


@runtime.command(
    name="exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("-p", "--process", "process_file", help="process.json to run")
@click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-terminal")
@click.option("--console-socket", help="unix socket that receives the pty master")
@click.option("-d", "--detach", is_flag=True)
@click.option("--pid-file")
@click.option("--cwd")
@click.option("-e", "--env", multiple=True)
@click.option("-u", "--user")
@click.option("-g", "--additional-gids", multiple=True, type=int)
@click.option("-c", "--cap", multiple=True)
@click.option("--no-new-privs", is_flag=True)
@click.option("--preserve-fds", default=0, type=int)
@click.argument("container_id")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx, process_file, tty, console_socket, detach, pid_file, cwd, env, user,
          additional_gids, cap, no_new_privs, preserve_fds, container_id, command):
    """Run a process in a running container."""
    c = rt.Container.load(container_id, _root(ctx))
    if process_file:
        process = json.loads(Path(process_file).read_text())
    else:
        if not command:
            _fail("exec: give a command or --process")
        with open(os.path.join(c.bundle, "config.json")) as f:
            process = json.load(f).get("process", {})
        process["args"] = list(command)
        process["terminal"] = tty
        if cwd:
            process["cwd"] = cwd
        if env:
            process["env"] = list(process.get("env", [])) + list(env)
        if user:
            uid, gid = _parse_user(user)
            process.setdefault("user", {})["uid"] = uid
            if gid is not None:
                process["user"]["gid"] = gid
        if additional_gids:
            process.setdefault("user", {})["additionalGids"] = list(additional_gids)
        if cap:
            caps = process.setdefault("capabilities", {})
            for k in ("bounding", "effective", "permitted"):
                caps[k] = sorted(set(caps.get(k, [])) | set(cap))
        if no_new_privs:
            process["noNewPrivileges"] = True
    terminal = bool(process.get("terminal"))

    def go(sock: Optional[str]) -> int:
        return c.exec(process, console_socket=sock, detach=detach, pid_file=pid_file,
                      preserve_fds=preserve_fds)

    if terminal and console_socket is None and not detach:
        code = _tty_session(go)
    else:
        code = go(console_socket)
    if not detach:
        sys.exit(code)


@runtime.command()
@click.option("-b", "--bundle", default=".", help="where to write config.json")
@click.option("--rootless", is_flag=True, hidden=True)
def spec(bundle, rootless):
    """Write a default config.json, as `runc spec` does."""
    from sampan.bundle import runc_spec, write_config

    target = Path(bundle) / "config.json"
    if target.exists():
        _fail(f"File {target} exists. Remove it first")
    write_config(bundle, runc_spec(terminal=True))
