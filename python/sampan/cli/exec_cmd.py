"""Interactive verbs and flags: `exec`, `attach`, and what `run`/`create`/`start` need to
attach (-i, -t, -a, --detach-keys, --sig-proxy) — docker's flags, checks, messages and exit
codes. The terminal work is in `sampan.cli.attach`."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from sampan.cli.attach import Session, terminal_size
from sampan.cli.system_cmd import client, daemon_errors
from sampan.client import APIError, ClientError

EXIT_ENGINE = 125


def _fail(msg: str, code: int) -> None:
    click.echo(msg, err=True)
    sys.exit(code)


# --------------------------------------------------------------------------- run / create


def interactive_options(fn: Any) -> Any:
    opts = [
        click.option("-i", "--interactive", is_flag=True,
                     help="keep STDIN open even if not attached"),
        click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-TTY"),
        click.option("-a", "--attach", "attach_streams", multiple=True,
                     type=click.Choice(["stdin", "stdout", "stderr", "STDIN", "STDOUT",
                                        "STDERR"]),
                     help="attach to STDIN, STDOUT or STDERR"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _streams(o: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(stdin, stdout, stderr) to attach, as docker decides them."""
    chosen = {s.lower() for s in o.get("attach_streams") or ()}
    if chosen:
        return "stdin" in chosen, "stdout" in chosen, "stderr" in chosen
    return bool(o.get("interactive")), True, True


def apply_interactive(body: dict[str, Any], o: dict[str, Any], detach: bool = True) -> None:
    """The create request's Tty/OpenStdin/Attach*/StdinOnce/ConsoleSize from the flags."""
    stdin, stdout, stderr = _streams(o)
    if detach and not o.get("attach_streams"):
        stdin = stdout = stderr = False
    tty = bool(o.get("tty"))
    body["Tty"] = tty
    body["OpenStdin"] = bool(o.get("interactive"))
    body["AttachStdin"] = stdin
    body["AttachStdout"] = stdout
    body["AttachStderr"] = stderr
    body["StdinOnce"] = bool(o.get("interactive")) and stdin
    if tty:
        size = terminal_size()
        if size:
            body.setdefault("HostConfig", {})["ConsoleSize"] = [size[0], size[1]]


def check_tty_input(tty: bool, stdin: bool) -> None:
    if tty and stdin and not os.isatty(0):
        _fail("the input device is not a TTY", 1)


def _keys(spec: str | None) -> bytes:
    from sampan import termkeys

    try:
        return termkeys.parse(spec)
    except ValueError as e:
        _fail(str(e), EXIT_ENGINE)
    return b""


def _start_error_code(msg: str) -> int:
    low = msg.lower()
    if "not found" in low or "no such file" in low:
        return 127
    if "permission denied" in low or "is a directory" in low:
        return 126
    return EXIT_ENGINE


def attach_and_start(cid: str, *, tty: bool, stdin: bool, stdout: bool, stderr: bool,
                     detach_keys: str | None, sig_proxy: bool, auto_remove: bool,
                     start: bool = True) -> int:
    """docker's order: wait registered, attach, start, relay; the container's exit code (0
    after a detach)."""
    keys = _keys(detach_keys)
    c = client()
    waiter = c.fork()
    waiter.timeout = None
    wait = waiter.request("POST", f"/containers/{cid}/wait",
                          {"condition": "removed" if auto_remove else "next-exit"},
                          stream=True)
    h = None
    if stdin or stdout or stderr:
        h = c.fork().hijack(f"/containers/{cid}/attach",
                            {"stream": True, "stdin": stdin, "stdout": stdout,
                             "stderr": stderr, "detachKeys": detach_keys or None})
    if start:
        try:
            c.request("POST", f"/containers/{cid}/start")
        except APIError as e:
            if h is not None:
                h.close()
            if auto_remove:  # as docker: return once the daemon has removed it
                try:
                    wait.read()
                except (OSError, ClientError):
                    pass
            waiter.close()
            _fail(f"Error response from daemon: {e.message}", _start_error_code(e.message))
    if h is None:
        click.echo(cid)
        return 0
    why = _relay(c, cid, h, tty, stdin, keys, sig_proxy)
    if why == "detached":
        waiter.close()
        return 0
    res = _wait_result(wait, waiter)
    err = (res.get("Error") or {}).get("Message") if isinstance(res.get("Error"), dict) \
        else None
    if err and res.get("StatusCode") is None:
        _fail(f"Error: {err}", EXIT_ENGINE)
    return int(res.get("StatusCode", 0))


def _relay(c: Any, cid: str, h: Any, tty: bool, stdin: bool, keys: bytes,
           sig_proxy: bool) -> str:
    """Run the terminal session of an attach to `cid` (resizes and, with `sig_proxy`, the
    signals the CLI receives go to the container); why it ended."""
    kc = c.fork()

    def resize(rows: int, cols: int) -> None:
        kc.request("POST", f"/containers/{cid}/resize", {"h": rows, "w": cols})

    def kill(sig: int) -> None:
        kc.request("POST", f"/containers/{cid}/kill", {"signal": str(int(sig))})

    return Session(h, tty=tty, stdin=stdin, detach_keys=keys, resize=resize,
                   kill=kill if sig_proxy else None).run()


def _wait_result(wait: Any, waiter: Any) -> dict[str, Any]:
    """The body of the container's wait response ({} if the daemon went away); closes it."""
    try:
        return json.loads(wait.read() or b"{}")
    except (ValueError, OSError, ClientError):
        return {}
    finally:
        waiter.close()


def run_attached(cid: str, o: dict[str, Any]) -> int:
    stdin, stdout, stderr = _streams(o)
    return attach_and_start(cid, tty=bool(o.get("tty")), stdin=stdin, stdout=stdout,
                            stderr=stderr, detach_keys=o.get("detach_keys"),
                            sig_proxy=o.get("sig_proxy", True),
                            auto_remove=bool(o.get("auto_remove")))


def run_options(fn: Any) -> Any:
    fn = click.option("--sig-proxy", type=click.BOOL, default=True, is_flag=False,
                      flag_value=True, help="proxy received signals to the process")(fn)
    fn = click.option("--detach-keys", help="override the key sequence for detaching")(fn)
    return fn


# --------------------------------------------------------------------------- start -a


def start_attached(name: str, stdin_flag: bool, detach_keys: str | None) -> int:
    c = client()
    info = c.get_json(f"/containers/{name}/json")
    cfg = info.get("Config") or {}
    tty = bool(cfg.get("Tty"))
    stdin = stdin_flag and bool(cfg.get("OpenStdin"))
    check_tty_input(tty, stdin)
    if info["State"].get("Running"):
        # already running: docker attaches to it
        return _attach_running(info, stdin, True, detach_keys)
    return attach_and_start(info["Id"], tty=tty, stdin=stdin, stdout=True, stderr=True,
                            detach_keys=detach_keys, sig_proxy=True,
                            auto_remove=bool((info.get("HostConfig") or {}).get("AutoRemove")))


# --------------------------------------------------------------------------- attach


def _attach_running(info: dict[str, Any], stdin: bool, sig_proxy: bool,
                    detach_keys: str | None, escape_is_error: bool = False) -> int:
    """Relay an attach to a running container; its exit code. After the detach keys: 0, or
    docker attach's "read escape sequence" and 1 when `escape_is_error`."""
    cid = info["Id"]
    tty = bool((info.get("Config") or {}).get("Tty"))
    keys = _keys(detach_keys)
    c = client()
    waiter = c.fork()
    waiter.timeout = None
    wait = waiter.request("POST", f"/containers/{cid}/wait", {"condition": "not-running"},
                          stream=True)
    h = c.fork().hijack(f"/containers/{cid}/attach",
                        {"stream": True, "stdin": stdin, "stdout": True, "stderr": True,
                         "detachKeys": detach_keys or None})
    why = _relay(c, cid, h, tty, stdin, keys, sig_proxy)
    if why == "detached":
        waiter.close()
        if escape_is_error:
            _fail("read escape sequence", 1)
        return 0
    res = _wait_result(wait, waiter)
    return int(res.get("StatusCode", 0))


@click.command("attach")
@click.option("--no-stdin", is_flag=True, help="do not attach STDIN")
@click.option("--sig-proxy", type=click.BOOL, default=True, is_flag=False, flag_value=True,
              help="proxy all received signals to the process")
@click.option("--detach-keys", help="override the key sequence for detaching a container")
@click.argument("container")
@daemon_errors
def attach_cmd(no_stdin: bool, sig_proxy: bool, detach_keys: str | None,
               container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    info = client().get_json(f"/containers/{container}/json")
    st = info.get("State") or {}
    if not st.get("Running"):
        _fail("You cannot attach to a stopped container, start it first", 1)
    if st.get("Paused"):
        _fail("You cannot attach to a paused container, unpause it first", 1)
    cfg = info.get("Config") or {}
    stdin = not no_stdin and bool(cfg.get("OpenStdin"))
    check_tty_input(bool(cfg.get("Tty")), stdin)
    sys.exit(_attach_running(info, stdin, sig_proxy, detach_keys, escape_is_error=True))


# --------------------------------------------------------------------------- exec


def _env_file(paths: tuple[str, ...]) -> list[str]:
    out = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            _fail(f"open {p}: {e.strerror.lower() if e.strerror else e}", EXIT_ENGINE)
        for ln in lines:
            s = ln.strip()
            if not s or s.startswith("#"):
                continue
            k, sep, _v = s.partition("=")
            if not k or any(ch.isspace() for ch in k):
                _fail(f"variable '{k}' contains whitespaces", EXIT_ENGINE)
            if sep:
                out.append(ln.lstrip())
            elif k in os.environ:
                out.append(f"{k}={os.environ[k]}")
    return out


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="keep STDIN open even if not attached")
@click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-TTY")
@click.option("-d", "--detach", is_flag=True, help="run the command in the background")
@click.option("-e", "--env", multiple=True, help="set environment variables")
@click.option("--env-file", multiple=True, help="read in a file of environment variables")
@click.option("-u", "--user", help="username or UID (format: <name|uid>[:<group|gid>])")
@click.option("-w", "--workdir", help="working directory inside the container")
@click.option("--privileged", is_flag=True, help="give extended privileges to the command")
@click.option("--detach-keys", help="override the key sequence for detaching")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@daemon_errors
def exec_cmd(interactive: bool, tty: bool, detach: bool, env: tuple[str, ...],
             env_file: tuple[str, ...], user: str | None, workdir: str | None,
             privileged: bool, detach_keys: str | None, container: str,
             command: tuple[str, ...]) -> None:
    """Execute a command in a running container."""
    if not detach:
        check_tty_input(tty, interactive)
    keys = _keys(detach_keys)
    envs = _env_file(env_file)
    for e in env:
        if "=" in e:
            envs.append(e)
        elif e in os.environ:
            envs.append(f"{e}={os.environ[e]}")
    body: dict[str, Any] = {
        "Cmd": list(command), "Env": envs or None, "User": user or "",
        "WorkingDir": workdir or "", "Tty": tty, "Privileged": privileged,
        "AttachStdin": interactive and not detach, "AttachStdout": not detach,
        "AttachStderr": not detach, "DetachKeys": detach_keys or "",
    }
    size = terminal_size() if tty else None
    if size:
        body["ConsoleSize"] = [size[0], size[1]]
    c = client()
    try:
        eid = c.post_json(f"/containers/{container}/exec", body=body)["Id"]
    except APIError as e:
        _fail(f"Error response from daemon: {e.message}", 1)
    start = {"Detach": detach, "Tty": tty}
    if size:
        start["ConsoleSize"] = [size[0], size[1]]
    if detach:
        c.post_json(f"/exec/{eid}/start", body=start)
        return
    h = c.fork().hijack(f"/exec/{eid}/start", body=start)
    kc = c.fork()

    def resize(rows: int, cols: int) -> None:
        kc.request("POST", f"/exec/{eid}/resize", {"h": rows, "w": cols})

    why = Session(h, tty=tty, stdin=interactive, detach_keys=keys, resize=resize).run()
    if why == "detached":
        sys.exit(0)
    info = c.get_json(f"/exec/{eid}/json")
    code = info.get("ExitCode")
    sys.exit(int(code) if code is not None else 0)


COMMANDS = [attach_cmd, exec_cmd]
