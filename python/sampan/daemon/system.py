"""System endpoints: /_ping, /version, /info, /system/df, /auth."""

from __future__ import annotations

import os
import platform
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sampan import __version__, hostfeatures
from sampan.daemon.engine import Engine, blocking, normalize_auth, python_version
from sampan.daemon.router import API_VERSION, MIN_API_VERSION, Router
from sampan.daemon.server import HTTPError, Request, Response, json_response


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _os_release() -> tuple[str, str]:
    fields = {}
    for line in _read("/etc/os-release").splitlines():
        k, _, v = line.partition("=")
        fields[k] = v.strip().strip('"')
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _fs_type(path: Path) -> str:
    best, fstype = "", ""
    target = str(path.resolve()) if path.exists() else str(path)
    for line in _read("/proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, parts[2]
    return fstype


def cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _rfc3339_now() -> str:
    now = datetime.now(timezone.utc).astimezone()
    return now.isoformat(timespec="microseconds")


def register(r: Router) -> None:
    r.add("GET", "/_ping", ping)
    r.add("HEAD", "/_ping", ping)
    r.add("GET", "/version", version)
    r.add("GET", "/info", info)
    r.add("GET", "/system/df", system_df)
    r.add("POST", "/auth", auth)


async def ping(req: Request, eng: Engine) -> Response:
    return Response(200, b"OK", "text/plain; charset=utf-8", headers=[
        ("Builder-Version", "1"), ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"), ("Swarm", "inactive"),
    ])


def version_info() -> dict[str, Any]:
    uname = os.uname()
    arch = hostfeatures.goarch()
    details = {
        "ApiVersion": API_VERSION, "Arch": arch, "BuildTime": "", "Experimental": "false",
        "GitCommit": "", "GoVersion": python_version(), "KernelVersion": uname.release,
        "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
    }
    return {
        "Platform": {"Name": "Sampan Engine"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "", "GoVersion": python_version(), "Os": "linux", "Arch": arch,
        "KernelVersion": uname.release, "BuildTime": "",
    }


async def version(req: Request, eng: Engine) -> Response:
    return json_response(version_info())


def _registry_config(eng: Engine) -> dict[str, Any]:
    cfg = eng.config
    index = {"docker.io": {"Name": "docker.io", "Mirrors": list(cfg.registry_mirrors),
                           "Secure": True, "Official": True}}
    cidrs = ["::1/128", "127.0.0.0/8"]
    for reg in cfg.insecure_registries:
        if "/" in reg and reg.split("/", 1)[1].isdigit():
            cidrs.append(reg)
        else:
            index[reg] = {"Name": reg, "Mirrors": [], "Secure": False, "Official": False}
    return {"AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None, "InsecureRegistryCIDRs": cidrs,
            "IndexConfigs": index, "Mirrors": list(cfg.registry_mirrors)}


def _graph_and_count(eng: Engine) -> tuple[Any, int]:
    graph = eng.graph_if_open()
    if graph is None:
        return None, 0
    try:
        return graph, len(graph.list(all=True))
    except Exception:  # noqa: BLE001 - /info reports what it can
        return graph, 0


async def info(req: Request, eng: Engine) -> Response:
    cfg = eng.config
    graph, images = await blocking(_graph_and_count, eng)
    warnings = []
    driver, status = "", []
    if graph is not None:
        driver = str(getattr(graph, "driver_name", "") or "")
        status.append(["Backing Filesystem", _fs_type(cfg.data_root)])
        reason = str(getattr(graph, "driver_reason", "") or "")
        if reason:
            status.append(["Reason", reason])
        why = str(getattr(getattr(graph, "driver", None), "reason", "") or "")
        if driver == "vfs" and why and why != "requested" and "created with" not in why:
            warnings.append(f"WARNING: the overlay storage driver is not usable ({why}): "
                            "using vfs, where every layer and container is a full copy")
    else:
        warnings.append("WARNING: the image store is not available")
    for h in cfg.hosts:
        if h.scheme == "tcp" and not cfg.tls:
            warnings.append(f"WARNING: API is accessible on http://{h.host}:{h.port} without "
                            "encryption.")
    name, os_version = _os_release()
    cg = cgroup_version()
    uname = os.uname()
    fwd = _read("/proc/sys/net/ipv4/ip_forward", "0").strip() == "1"
    features = hostfeatures.cgroup_features()
    warnings.extend(hostfeatures.warnings(features))
    security = ["name=seccomp,profile=builtin"] if hostfeatures.seccomp_supported() else []
    if cg == "2":
        security.append("name=cgroupns")
    data = {
        "ID": eng.id,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": images,
        "Driver": driver,
        "DriverStatus": status,
        "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": None,
                    "Log": ["json-file"]},
        **features, "KernelMemoryTCP": False, "IPv4Forwarding": fwd, "BridgeNfIptables": False,
        "BridgeNfIp6tables": False, "Debug": cfg.debug, "NFd": _nfd(),
        "OomKillDisable": False, "NGoroutines": threading.active_count(),
        "SystemTime": _rfc3339_now(), "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": cg, "NEventsListener": 0, "KernelVersion": uname.release,
        "OperatingSystem": name, "OSVersion": os_version, "OSType": "linux",
        "Architecture": platform.machine(), "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": _registry_config(eng), "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(), "GenericResources": None, "DockerRootDir": str(cfg.data_root),
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": socket.gethostname(), "Labels": list(cfg.labels), "ExperimentalBuild": False,
        "ServerVersion": __version__,
        "Runtimes": {"sampan": {"path": "sampan"}}, "DefaultRuntime": "sampan",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": cfg.live_restore, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
        "SecurityOptions": security, "CDISpecDirs": [], "Warnings": warnings,
    }
    data.update(_container_counts(eng))
    return json_response(data)


def _container_counts(eng: Engine) -> dict[str, int]:
    c = getattr(eng, "_containers", None)
    events = getattr(eng, "_events", None)
    out = {"NEventsListener": len(events.subscribers) if events is not None else 0}
    if c is None:
        return out
    recs = c.store.all()
    paused = sum(1 for r in recs if r.running and r.state.get("Paused"))
    running = sum(1 for r in recs if r.running) - paused
    out.update({"Containers": len(recs), "ContainersRunning": running,
                "ContainersPaused": paused, "ContainersStopped": len(recs) - running - paused})
    return out


def _nfd() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _df(graph: Any) -> dict[str, Any]:
    images = list(graph.df())
    layers = getattr(graph, "layers_size", None)
    if callable(layers):
        total = int(layers())
    else:
        total = sum(int(i.get("Size") or 0) for i in images)
    return {"LayersSize": total, "Images": images, "Containers": [], "Volumes": [],
            "BuildCache": []}


async def system_df(req: Request, eng: Engine) -> Response:
    from sampan.daemon import volumes
    from sampan.daemon.images import for_version

    data = await blocking(lambda: _df(eng.graph))
    data["Images"] = [for_version(req, dict(i)) for i in data["Images"]]
    data["Volumes"] = await blocking(volumes.df, eng)
    return json_response(data)


async def auth(req: Request, eng: Engine) -> Response:
    body = await req.json()
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object (AuthConfig)")
    try:
        body = normalize_auth(body)
    except (TypeError, ValueError) as e:
        raise HTTPError(400, f"invalid AuthConfig: {e}") from None
    result = await blocking(eng.on_images("login"), body)
    if not isinstance(result, dict):
        result = {"Status": "Login Succeeded", "IdentityToken": ""}
    return json_response(result)
