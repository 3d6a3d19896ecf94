"""sampand's configuration: dockerd's flags and daemon.json keys. A directive given both as a
flag and in the file is an error (as with dockerd); otherwise flags and file are merged."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sampan import __version__

DEFAULT_DATA_ROOT = "/var/lib/sampan"
DEFAULT_EXEC_ROOT = "/run/sampan"
DEFAULT_HOST = "unix:///run/sampan/sampan.sock"
DEFAULT_CONFIG_FILE = "/etc/sampan/daemon.json"
DEFAULT_GROUP = "sampan"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class ConfigError(Exception):
    pass


@dataclass
class Host:
    """A listening address: unix socket path or tcp host/port."""

    scheme: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{h}:{self.port}"


def parse_host(s: str, tls: bool = False) -> Host:
    """dockerd's -H syntax: unix:///path, tcp://host:port, host:port, /path, fd:// (refused)."""
    s = s.strip()
    if not s:
        raise ConfigError("invalid empty host address")
    if s.startswith(("unix://", "/")):
        path = s.removeprefix("unix://")
        if not path:
            path = DEFAULT_HOST[len("unix://"):]
        if not path.startswith("/"):
            raise ConfigError(f"invalid host {s!r}: unix socket path must be absolute")
        return Host("unix", path=path)
    if s.startswith("fd://"):
        raise ConfigError(f"invalid host {s!r}: socket activation (fd://) is not supported")
    if "://" in s and not s.startswith("tcp://"):
        raise ConfigError(f"invalid host {s!r}: expected unix:// or tcp://")
    rest = s.removeprefix("tcp://")
    rest = rest.split("/", 1)[0]
    default_port = 2376 if tls else 2375
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ConfigError(f"invalid host {s!r}")
        host, port_s = rest[1:end], rest[end + 1:].lstrip(":")
    elif rest.count(":") == 1:
        host, port_s = rest.split(":")
    elif ":" in rest:
        raise ConfigError(f"invalid host {s!r}: put IPv6 addresses in brackets")
    else:
        host, port_s = rest, ""
    try:
        port = int(port_s) if port_s else default_port
    except ValueError:
        raise ConfigError(f"invalid host {s!r}: bad port {port_s!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"invalid host {s!r}: port out of range")
    return Host("tcp", host=host or "127.0.0.1", port=port)


@dataclass
class DaemonConfig:
    data_root: Path = Path(DEFAULT_DATA_ROOT)
    exec_root: Path = Path(DEFAULT_EXEC_ROOT)
    # where new containers' json-file logs go (<log_root>/<id>/); None: the container's
    # directory, as docker does. A router points it at tmpfs to spare its flash.
    log_root: Path | None = None
    hosts: list[Host] = field(default_factory=list)
    pidfile: Path | None = None
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    log_level: str = "info"
    debug: bool = False
    storage_driver: str | None = None
    storage_opts: list[str] = field(default_factory=list)
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None
    group: str = DEFAULT_GROUP
    group_explicit: bool = False
    config_file: Path | None = None
    labels: list[str] = field(default_factory=list)
    live_restore: bool = True
    bridge: str | None = None  # the default bridge's name (dockerd -b)
    bip: str | None = None  # its address and prefix (dockerd --bip)
    mtu: int = 0  # the default bridge's MTU (dockerd --mtu; 0: per network, docs/network.md)
    extra: dict[str, Any] = field(default_factory=dict)  # accepted keys not used yet

    @property
    def lock_path(self) -> Path:
        return self.data_root / "sampand.lock"


# flag dest -> (daemon.json key, kind)
_KEYS: dict[str, tuple[str, str]] = {
    "data_root": ("data-root", "str"),
    "exec_root": ("exec-root", "str"),
    "log_root": ("log-root", "str"),
    "hosts": ("hosts", "list"),
    "pidfile": ("pidfile", "str"),
    "insecure_registries": ("insecure-registries", "list"),
    "registry_mirrors": ("registry-mirrors", "list"),
    "log_level": ("log-level", "str"),
    "debug": ("debug", "bool"),
    "storage_driver": ("storage-driver", "str"),
    "storage_opts": ("storage-opts", "list"),
    "tls": ("tls", "bool"),
    "tlsverify": ("tlsverify", "bool"),
    "tlscacert": ("tlscacert", "str"),
    "tlscert": ("tlscert", "str"),
    "tlskey": ("tlskey", "str"),
    "group": ("group", "str"),
    "labels": ("labels", "list"),
    "live_restore": ("live-restore", "bool"),
    "bridge": ("bridge", "str"),
    "bip": ("bip", "str"),
    "mtu": ("mtu", "int"),
    "init": ("init", "bool"),
}

# daemon.json keys dockerd knows that Sampan accepts (kept, used by later parts or ignored)
_ACCEPTED = {
    "allow-nondistributable-artifacts", "authorization-plugins", "bip", "bridge",
    "builder", "cdi-spec-dirs", "cgroup-parent", "containerd", "containerd-namespace",
    "containerd-plugin-namespace", "cpu-rt-period", "cpu-rt-runtime", "data-root",
    "default-address-pools", "default-cgroupns-mode", "default-gateway",
    "default-gateway-v6", "default-ipc-mode", "default-network-opts", "default-runtime",
    "default-shm-size", "default-ulimits", "dns", "dns-opts", "dns-search", "exec-opts",
    "experimental", "features", "fixed-cidr", "fixed-cidr-v6", "icc", "init", "init-path",
    "ip", "ip-forward", "ip-masq", "ip6tables", "iptables", "ipv6", "log-driver",
    "log-format", "log-opts", "max-concurrent-downloads", "max-concurrent-uploads",
    "max-download-attempts", "metrics-addr", "min-api-version", "mtu", "no-new-privileges",
    "node-generic-resources", "oom-score-adjust", "proxies", "raw-logs", "runtimes",
    "seccomp-profile", "selinux-enabled", "shutdown-timeout", "userland-proxy",
    "userland-proxy-path", "userns-remap",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sampand", description="Sampan's daemon: the Docker Engine API on a unix socket.")
    # every default is None so that "given on the command line" can be told from "not given"
    p.add_argument("--data-root", help=f"root of persistent state (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", help=f"root of runtime state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("--log-root", help="directory for containers' json-file logs, "
                   "<LOG_ROOT>/<id>/ (default: each container's directory in the data root)")
    p.add_argument("-H", "--host", dest="hosts", action="append", metavar="HOST",
                   help=f"socket(s) to listen on (default {DEFAULT_HOST}); repeatable")
    p.add_argument("-p", "--pidfile", help="pid file (default EXEC_ROOT/sampand.pid)")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append",
                   metavar="REGISTRY", help="registry reachable over plain HTTP/unverified TLS")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append",
                   metavar="URL", help="mirror for docker.io")
    p.add_argument("--config-file", help=f"daemon.json (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("-l", "--log-level", choices=LOG_LEVELS, help="log level (default info)")
    p.add_argument("-D", "--debug", action="store_const", const=True, help="debug logging")
    p.add_argument("-s", "--storage-driver", help="storage driver: overlay or vfs")
    p.add_argument("--storage-opt", dest="storage_opts", action="append", metavar="OPT")
    p.add_argument("--tls", action="store_const", const=True, help="serve TLS on tcp hosts")
    p.add_argument("--tlsverify", action="store_const", const=True,
                   help="TLS and require client certificates signed by --tlscacert")
    p.add_argument("--tlscacert", help="CA for client certificates")
    p.add_argument("--tlscert", help="server certificate")
    p.add_argument("--tlskey", help="server key")
    p.add_argument("-G", "--group", help=f"group owning the unix socket (default "
                                         f"{DEFAULT_GROUP}, when it exists)")
    p.add_argument("--label", dest="labels", action="append", metavar="KEY=VALUE")
    p.add_argument("--live-restore", dest="live_restore", nargs="?", const=True,
                   type=_parse_bool, metavar="BOOL")
    p.add_argument("-b", "--bridge", help="the default bridge's interface (default sampan0; "
                   "none: no default bridge)")
    p.add_argument("--bip", help="the default bridge's address and prefix, e.g. 172.20.0.1/16")
    p.add_argument("--mtu", type=int, help="the default bridge's MTU (default: 65520, with the "
                   "uplink's MTU on the containers' default route; docs/network.md)")
    p.add_argument("--init", action="store_const", const=True,
                   help="run an init inside containers to forward signals and reap processes")
    p.add_argument("--validate", action="store_true", help="check the configuration and exit")
    p.add_argument("-v", "--version", action="version", version=f"sampand {__version__}")
    return p


def _parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {s!r}")


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"unable to configure the daemon with file {path}: "
                              "file does not exist") from None
        return {}
    except OSError as e:
        raise ConfigError(f"unable to configure the daemon with file {path}: {e}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"unable to configure the daemon with file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"unable to configure the daemon with file {path}: "
                          "the configuration must be a JSON object")
    known = {k for k, _ in _KEYS.values()} | _ACCEPTED
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ConfigError(f"unable to configure the daemon with file {path}: the following "
                          f"directives don't match any configuration option: "
                          f"{', '.join(unknown)}")
    return data


def _check_kind(path: Path, key: str, kind: str, value: Any) -> Any:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(x, str) for x in value),
        "int": isinstance(value, int) and not isinstance(value, bool),
    }[kind]
    if not ok:
        want = {"str": "a string", "bool": "true or false", "list": "a list of strings",
                "int": "an integer"}[kind]
        raise ConfigError(f"unable to configure the daemon with file {path}: "
                          f"{key} must be {want}, not {json.dumps(value)}")
    return value


def load(argv: list[str] | None = None) -> tuple[DaemonConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    explicit_file = args.config_file is not None
    path = Path(args.config_file or DEFAULT_CONFIG_FILE)
    file = _read_file(path, explicit_file)

    conflicts = []
    merged: dict[str, Any] = {}
    for dest, (key, kind) in _KEYS.items():
        flag = getattr(args, dest, None)
        if key in file:
            value = _check_kind(path, key, kind, file[key])
            if flag is not None:
                conflicts.append(f"{key}: (from flag: {_show(flag)}, from file: {_show(value)})")
                continue
            merged[dest] = value
        elif flag is not None:
            merged[dest] = flag
    if conflicts:
        raise ConfigError(f"unable to configure the daemon with file {path}: the following "
                          "directives are specified both as a flag and in the configuration "
                          f"file: {', '.join(conflicts)}")

    cfg = DaemonConfig(config_file=path if (explicit_file or file) else None)
    cfg.extra = {k: v for k, v in file.items() if k in _ACCEPTED and k not in
                 {key for key, _ in _KEYS.values()}}
    cfg.data_root = Path(merged.get("data_root", DEFAULT_DATA_ROOT))
    cfg.exec_root = Path(merged.get("exec_root", DEFAULT_EXEC_ROOT))
    for name in ("data_root", "exec_root"):
        p = getattr(cfg, name)
        if not p.is_absolute():
            setattr(cfg, name, Path(os.path.abspath(p)))
    cfg.log_root = _log_root(merged.get("log_root"))
    cfg.debug = bool(merged.get("debug", False))
    cfg.log_level = merged.get("log_level", "debug" if cfg.debug else "info")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"invalid log level {cfg.log_level!r}: one of {', '.join(LOG_LEVELS)}")
    cfg.tlsverify = bool(merged.get("tlsverify", False))
    cfg.tls = bool(merged.get("tls", False)) or cfg.tlsverify
    cfg.tlscacert = merged.get("tlscacert")
    cfg.tlscert = merged.get("tlscert")
    cfg.tlskey = merged.get("tlskey")
    hosts = merged.get("hosts") or [DEFAULT_HOST]
    if "hosts" not in merged and cfg.exec_root != Path(DEFAULT_EXEC_ROOT):
        hosts = [f"unix://{cfg.exec_root}/sampan.sock"]
    cfg.hosts = [parse_host(h, cfg.tls) for h in hosts]
    seen = set()
    for h in cfg.hosts:
        if str(h) in seen:
            raise ConfigError(f"host {h} given twice")
        seen.add(str(h))
    pid = merged.get("pidfile")
    cfg.pidfile = Path(pid) if pid else cfg.exec_root / "sampand.pid"
    cfg.insecure_registries = list(merged.get("insecure_registries", []))
    cfg.registry_mirrors = list(merged.get("registry_mirrors", []))
    for m in cfg.registry_mirrors:
        if not m.startswith(("http://", "https://")):
            raise ConfigError(f"invalid mirror {m!r}: it must start with http:// or https://")
    cfg.storage_driver = merged.get("storage_driver") or None
    cfg.storage_opts = list(merged.get("storage_opts", []))
    cfg.group = merged.get("group", DEFAULT_GROUP)
    cfg.group_explicit = "group" in merged
    cfg.labels = list(merged.get("labels", []))
    cfg.live_restore = bool(merged.get("live_restore", True))
    if "init" in merged:  # read where daemon.json's other container defaults are
        cfg.extra["init"] = merged["init"]
    cfg.bridge = merged.get("bridge") or None
    cfg.bip = merged.get("bip") or None
    cfg.mtu = int(merged.get("mtu") or 0)
    if cfg.mtu and not 68 <= cfg.mtu <= 65535:
        raise ConfigError(f"invalid --mtu {cfg.mtu}: between 68 and 65535")
    if cfg.bridge and (len(cfg.bridge) > 15 or "/" in cfg.bridge or " " in cfg.bridge):
        raise ConfigError(f"invalid bridge name {cfg.bridge!r}")
    if cfg.bip:
        import ipaddress

        try:
            ipaddress.IPv4Interface(cfg.bip)
        except ValueError:
            raise ConfigError(f"invalid --bip {cfg.bip!r}: expected an IPv4 address with a "
                              "prefix, e.g. 172.20.0.1/16") from None
    _check_tls(cfg)
    return cfg, args


def _log_root(value: str | None) -> Path | None:
    """--log-root / "log-root": absolute, and a directory if it exists (made at start-up)."""
    if value is None or value == "":
        return None
    if not value.startswith("/"):
        raise ConfigError(f"invalid log-root {value!r}: it must be an absolute path")
    p = Path(os.path.normpath(value))
    if p == Path("/"):
        raise ConfigError("invalid log-root '/': a directory of its own is needed")
    if os.path.lexists(p) and not p.is_dir():
        raise ConfigError(f"invalid log-root {value!r}: it exists and is not a directory")
    return p


def _check_tls(cfg: DaemonConfig) -> None:
    tcp = [h for h in cfg.hosts if h.scheme == "tcp"]
    if not cfg.tls:
        return
    if tcp and not (cfg.tlscert and cfg.tlskey):
        raise ConfigError("--tls/--tlsverify need --tlscert and --tlskey")
    if cfg.tlsverify and tcp and not cfg.tlscacert:
        raise ConfigError("--tlsverify needs --tlscacert (the CA that signs client certificates)")
    for name in ("tlscacert", "tlscert", "tlskey"):
        v = getattr(cfg, name)
        if v and not os.path.isfile(v):
            raise ConfigError(f"could not read {name} {v!r}: no such file")


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + " ".join(str(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
