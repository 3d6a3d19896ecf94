"""`sampan version`, `sampan info`, `sampan system df|info`, and the plumbing every command
that talks to the daemon shares: the client from the global options, docker's error messages
and exit codes, the hint to start a daemon when none answers."""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from sampan import __version__, hostfeatures
from sampan.cli import format as fmt
from sampan.client import (
    API_VERSION,
    APIError,
    Client,
    ClientError,
    DaemonUnreachable,
    StreamError,
    TLSConfig,
)

EXIT_ENGINE = 125

START_HINT = """\
Start one (as root) with:
    sampand &
  or, with your own places:
    sampand --data-root DIR --exec-root DIR -H unix:///path/to/sampan.sock &
and point the CLI at it with -H unix:///path/to/sampan.sock or SAMPAN_HOST."""


# --------------------------------------------------------------------------- global state


class CliState:
    """The global options (`sampan -H … --tlsverify …`) and a lazily made client."""

    def __init__(self, host: str | None = None, tls: bool = False, tlsverify: bool = False,
                 tlscacert: str | None = None, tlscert: str | None = None,
                 tlskey: str | None = None, config_dir: str | None = None,
                 debug: bool = False):
        self.host = host or os.environ.get("SAMPAN_HOST") or None
        self.tls = tls or tlsverify
        self.tlsverify = tlsverify
        cert_dir = Path(os.environ.get("SAMPAN_CERT_PATH") or config_path(config_dir))
        self.tlscacert = tlscacert or _existing(cert_dir / "ca.pem")
        self.tlscert = tlscert or _existing(cert_dir / "cert.pem")
        self.tlskey = tlskey or _existing(cert_dir / "key.pem")
        self.config_dir = config_path(config_dir)
        self.debug = debug
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            tls = None
            if self.tls:
                tls = TLSConfig(verify=self.tlsverify, cacert=self.tlscacert,
                                cert=self.tlscert, key=self.tlskey)
            self._client = Client(self.host, tls=tls)
        return self._client


def _existing(p: Path) -> str | None:
    return str(p) if p.is_file() else None


def config_path(override: str | None = None) -> Path:
    """Sampan's client config directory (config.json with credentials, TLS files): --config,
    else $SAMPAN_CONFIG, else ~/.sampan — the place `sampan.registry.credentials` reads."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SAMPAN_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(os.path.expanduser("~")) / ".sampan"


def state(ctx: click.Context | None = None) -> CliState:
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def client() -> Client:
    return state().client()


# --------------------------------------------------------------------------- errors


def fail(msg: str, code: int = 1) -> None:
    click.echo(msg, err=True)
    sys.exit(code)


def daemon_errors(fn: Callable) -> Callable:
    """Docker's error conventions for a command that talks to the daemon."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except DaemonUnreachable as e:
            click.echo(f"Cannot connect to the Sampan daemon at {e.host}. Is sampand running?",
                       err=True)
            if state().debug:
                click.echo(f"({e.cause})", err=True)
            click.echo(START_HINT, err=True)
            sys.exit(EXIT_ENGINE)
        except StreamError as e:
            fail(e.message)
        except APIError as e:
            fail(f"Error response from daemon: {e.message}")
        except fmt.FormatError as e:
            fail(str(e))
        except ClientError as e:
            fail(f"Error: {e}")
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


def each_name(names: tuple[str, ...], fn: Callable[[str], Any]) -> None:
    """Docker's loop over several names (start, stop, rm, ...): one failure does not stop the
    rest, each success prints its name, any failure makes the exit code 1."""
    failed = False
    for n in names:
        try:
            fn(n)
            click.echo(n)
        except APIError as e:
            click.echo(f"Error response from daemon: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


def inspect_each(c: Client, base: str, names: tuple[str, ...], format_: str | None) -> None:
    """`sampan volume|network inspect`: the objects found are still printed when some names
    are missing (docker prints them, then exits 1); errors other than 404 abort."""
    out, failed = [], False
    for n in names:
        try:
            out.append(c.get_json(f"{base}/{n}"))
        except APIError as e:
            if e.status != 404:
                raise
            click.echo(f"Error response from daemon: {e.message}", err=True)
            failed = True
    if format_:
        for obj in out:
            click.echo(fmt.render(format_, obj), nl=False)
    else:
        click.echo(json.dumps(out, indent=4))
    if failed:
        sys.exit(1)


def write_output(chunks: Iterable[bytes], output: str | None) -> None:
    """A tar stream (save, export) to stdout, or to the file `output`: complete or not at all
    (a temp file, fsynced, renamed over it; removed if the stream fails or is interrupted)."""
    if not output:
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        return
    tmp = f"{output}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------- version


def _client_version() -> dict[str, Any]:
    return {
        "Platform": {"Name": "Sampan"}, "Version": __version__, "ApiVersion": API_VERSION,
        "DefaultAPIVersion": API_VERSION, "GitCommit": "",
        "GoVersion": "python" + platform.python_version(), "Os": "linux",
        "Arch": hostfeatures.goarch(),
        "BuildTime": "", "Context": "default",
    }


@click.command("version")
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@daemon_errors
def version_cmd(format_: str | None) -> None:
    """Show the Sampan version information."""
    cli = _client_version()
    try:
        server = client().version_info()
    except DaemonUnreachable:
        if not format_:
            _print_client_version(cli)
            click.echo()
        raise
    if format_:
        click.echo(fmt.render(format_, {"Client": cli, "Server": server}), nl=False)
        return
    _print_client_version(cli)
    click.echo()
    name = (server.get("Platform") or {}).get("Name", "")
    click.echo(f"Server: {name}".rstrip())
    for comp in server.get("Components") or []:
        click.echo(f" {comp.get('Name')}:")
        d = comp.get("Details") or {}
        rows = [("Version", comp.get("Version", "")),
                ("API version", (f"{d.get('ApiVersion', server.get('ApiVersion', ''))} "
                                f"(minimum version {d.get('MinAPIVersion', '')})")),
                ("Python version", d.get("GoVersion", "")),
                ("Git commit", d.get("GitCommit", "")),
                ("Built", d.get("BuildTime", "")),
                ("OS/Arch", f"{d.get('Os', '')}/{d.get('Arch', '')}"),
                ("Experimental", d.get("Experimental", "false"))]
        for k, v in rows:
            click.echo(f"  {k + ':':<18}{v}".rstrip())


def _print_client_version(cli: dict[str, Any]) -> None:
    click.echo("Client:")
    for k, v in [("Version", cli["Version"]), ("API version", cli["ApiVersion"]),
                 ("Python version", cli["GoVersion"]),
                 ("OS/Arch", f"{cli['Os']}/{cli['Arch']}"), ("Context", cli["Context"])]:
        click.echo(f" {k + ':':<19}{v}".rstrip())


# --------------------------------------------------------------------------- info


def _client_info() -> dict[str, Any]:
    return {"Debug": state().debug, "Version": __version__, "Context": "default",
            "Plugins": [], "Warnings": None}


@click.command("info")
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@daemon_errors
def info_cmd(format_: str | None) -> None:
    """Display system-wide information."""
    show_info(format_)


def show_info(format_: str | None) -> None:
    info = client().info()
    if format_:
        data = dict(info)
        data["ClientInfo"] = _client_info()
        click.echo(fmt.render(format_, data), nl=False)
        return
    ci = _client_info()
    out = ["Client:", f" Version:    {ci['Version']}", f" Context:    {ci['Context']}",
           f" Debug Mode: {str(ci['Debug']).lower()}", "", "Server:"]
    g = info.get
    out += [f" Containers: {g('Containers', 0)}", f"  Running: {g('ContainersRunning', 0)}",
            f"  Paused: {g('ContainersPaused', 0)}", f"  Stopped: {g('ContainersStopped', 0)}",
            f" Images: {g('Images', 0)}", f" Server Version: {g('ServerVersion', '')}",
            f" Storage Driver: {g('Driver', '')}"]
    for pair in g("DriverStatus") or []:
        if isinstance(pair, list) and len(pair) == 2:
            out.append(f"  {pair[0]}: {pair[1]}")
    out += [f" Logging Driver: {g('LoggingDriver', '')}",
            f" Cgroup Driver: {g('CgroupDriver', '')}",
            f" Cgroup Version: {g('CgroupVersion', '')}", " Plugins:"]
    plugins = g("Plugins") or {}
    for k in ("Volume", "Network", "Log"):
        out.append(f"  {k}: {' '.join(plugins.get(k) or [])}")
    swarm = (g("Swarm") or {}).get("LocalNodeState", "inactive")
    out += [f" Swarm: {swarm}", f" Runtimes: {' '.join(sorted(g('Runtimes') or {}))}",
            f" Default Runtime: {g('DefaultRuntime', '')}"]
    sec = g("SecurityOptions") or []
    if sec:
        out.append(" Security Options:")
        for opt in sec:
            parts = dict(p.split("=", 1) for p in opt.split(",") if "=" in p)
            out.append(f"  {parts.get('name', opt)}")
            for k, v in parts.items():
                if k != "name":
                    out.append(f"   {k.capitalize()}: {v}")
    out += [f" Kernel Version: {g('KernelVersion', '')}",
            f" Operating System: {g('OperatingSystem', '')}",
            f" OSType: {g('OSType', '')}", f" Architecture: {g('Architecture', '')}",
            f" CPUs: {g('NCPU', 0)}", f" Total Memory: {fmt.bytes_size(g('MemTotal', 0))}",
            f" Name: {g('Name', '')}", f" ID: {g('ID', '')}",
            f" Sampan Root Dir: {g('DockerRootDir', '')}",
            f" Debug Mode: {str(bool(g('Debug'))).lower()}"]
    if g("Debug"):
        out += [f"  File Descriptors: {g('NFd', 0)}", f"  Threads: {g('NGoroutines', 0)}",
                f"  System Time: {g('SystemTime', '')}"]
    for k, label in (("HttpProxy", "HTTP Proxy"), ("HttpsProxy", "HTTPS Proxy"),
                     ("NoProxy", "No Proxy")):
        if g(k):
            out.append(f" {label}: {g(k)}")
    labels = g("Labels") or []
    if labels:
        out.append(" Labels:")
        out += [f"  {x}" for x in labels]
    out.append(f" Experimental: {str(bool(g('ExperimentalBuild'))).lower()}")
    reg = g("RegistryConfig") or {}
    insecure = list(reg.get("InsecureRegistryCIDRs") or [])
    insecure += [k for k, v in (reg.get("IndexConfigs") or {}).items()
                 if isinstance(v, dict) and not v.get("Secure", True)]
    if insecure:
        out.append(" Insecure Registries:")
        out += [f"  {x}" for x in insecure]
    mirrors = reg.get("Mirrors") or []
    if mirrors:
        out.append(" Registry Mirrors:")
        out += [f"  {x}" for x in mirrors]
    out.append(f" Live Restore Enabled: {str(bool(g('LiveRestoreEnabled'))).lower()}")
    click.echo("\n".join(line.rstrip() for line in out) + "\n")
    for w in g("Warnings") or []:
        click.echo(w, err=True)


# --------------------------------------------------------------------------- system df


def _hs(n: int) -> str:
    return fmt.human_size(n, precision=4)  # docker's units.HumanSize here


def df_summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    images = data.get("Images") or []
    layers = int(data.get("LayersSize") or 0)
    active = [i for i in images if int(i.get("Containers") or 0) > 0]
    used = sum(int(i.get("Size") or 0) - max(0, int(i.get("SharedSize") or 0))
               for i in active)
    reclaim = max(0, layers - used)

    def pct(part: int, whole: int) -> str:
        return f" ({part * 100 // whole}%)" if whole else ""

    containers = data.get("Containers") or []
    csize = sum(int(c.get("SizeRw") or 0) for c in containers)
    crun = [c for c in containers if c.get("State") == "running"]
    creclaim = sum(int(c.get("SizeRw") or 0) for c in containers if c not in crun)
    vols = data.get("Volumes") or []
    vsize = sum(int((v.get("UsageData") or {}).get("Size") or 0) for v in vols)
    vactive = [v for v in vols if int((v.get("UsageData") or {}).get("RefCount") or 0) > 0]
    vreclaim = sum(int((v.get("UsageData") or {}).get("Size") or 0) for v in vols
                   if v not in vactive)
    cache = data.get("BuildCache") or []
    bsize = sum(int(b.get("Size") or 0) for b in cache)
    return [
        {"Type": "Images", "TotalCount": str(len(images)), "Active": str(len(active)),
         "Size": _hs(layers),
         "Reclaimable": _hs(reclaim) + pct(reclaim, layers)},
        {"Type": "Containers", "TotalCount": str(len(containers)), "Active": str(len(crun)),
         "Size": _hs(csize),
         "Reclaimable": _hs(creclaim) + pct(creclaim, csize)},
        {"Type": "Local Volumes", "TotalCount": str(len(vols)), "Active": str(len(vactive)),
         "Size": _hs(vsize),
         "Reclaimable": _hs(vreclaim) + pct(vreclaim, vsize)},
        {"Type": "Build Cache", "TotalCount": str(len(cache)), "Active": "0",
         "Size": _hs(bsize), "Reclaimable": _hs(bsize)},
    ]


DF_TABLE = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
              "Reclaimable": "RECLAIMABLE"}


@click.command("df")
@click.option("-v", "--verbose", is_flag=True, help="show detailed information on space usage")
@click.option("--format", "format_", help="format the output with a Go template (or json)")
@daemon_errors
def df_cmd(verbose: bool, format_: str | None) -> None:
    """Show disk usage."""
    data = client().df()
    if verbose and not format_:
        from sampan.cli.images_cmd import image_rows

        click.echo("Images space usage:\n")
        rows = image_rows(data.get("Images") or [], digests=False, trunc=True, df=True)
        table = ("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t"
                 "{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}")
        from sampan.cli.images_cmd import IMAGE_HEADERS

        click.echo(fmt.render_list(table, rows, table, IMAGE_HEADERS), nl=False)
        click.echo("\nContainers space usage:\n")
        click.echo("CONTAINER ID   IMAGE     COMMAND   LOCAL VOLUMES   SIZE      CREATED   "
                   "STATUS    NAMES")
        click.echo("\nLocal Volumes space usage:\n")
        click.echo("VOLUME NAME   LINKS     SIZE")
        click.echo("\nBuild cache usage: 0B\n")
        click.echo("CACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED")
        return
    rows = [fmt.Row("diskUsage", r) for r in df_summary(data)]
    if format_ and format_.strip() == "json":
        for r in rows:
            click.echo(fmt.go_json(r))
        return
    click.echo(fmt.render_list(format_, rows, DF_TABLE, DF_HEADERS), nl=False)


@click.group("system")
def system_group() -> None:
    """Manage Sampan."""


@system_group.command("info")
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@daemon_errors
def system_info(format_: str | None) -> None:
    """Display system-wide information."""
    show_info(format_)


system_group.add_command(df_cmd)


def dump_json(obj: Any) -> str:
    """docker inspect's JSON: indented by 4 spaces, <>& escaped like Go."""
    s = json.dumps(obj, indent=4, ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


COMMANDS = [version_cmd, info_cmd, system_group]
