"""The JSON types of a container create request, checked the way dockerd's decoder checks them.

dockerd decodes POST /containers/create into Go structs (container.Config inline, HostConfig,
NetworkingConfig), so a value of the wrong JSON type, a number that does not fit its Go integer
type, or a fraction where an integer belongs is a 400 before anything is created, while unknown
fields are ignored and `null` leaves the zero value. The rest of the daemon reads these fields
with plain dict lookups and `bool()`/`int()`; checking the whole tree here, once, keeps a
`"Tty": "yes"` or a `Memory` of 2**70 from ever reaching the store, the OCI config or the kernel.
"""

from __future__ import annotations

from typing import Any

from sampan.errors import InvalidArgument

# Go scalar types: (JSON kind, bounds for integers)
_INT_BOUNDS = {
    "int": (-(2**63), 2**63 - 1), "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
    "uint": (0, 2**64 - 1), "float64": None,
}

# A type is: "string" | "bool" | an integer name above | "any" (interface{}) |
# ("list", T) | ("map", T) (object with string keys) | ("strslice",) (string or []string) |
# dict (a struct: field -> type; other fields ignored).
STRSLICE = ("strslice",)
STRS = ("list", "string")
STRMAP = ("map", "string")
EMPTYSTRUCTMAP = ("map", {})

HEALTHCHECK = {"Test": STRS, "Interval": "int64", "Timeout": "int64", "StartPeriod": "int64",
               "StartInterval": "int64", "Retries": "int"}

CONFIG: dict[str, Any] = {
    "Hostname": "string", "Domainname": "string", "User": "string",
    "AttachStdin": "bool", "AttachStdout": "bool", "AttachStderr": "bool",
    "ExposedPorts": EMPTYSTRUCTMAP, "Tty": "bool", "OpenStdin": "bool", "StdinOnce": "bool",
    "Env": STRS, "Cmd": STRSLICE, "Healthcheck": HEALTHCHECK, "ArgsEscaped": "bool",
    "Image": "string", "Volumes": EMPTYSTRUCTMAP, "WorkingDir": "string",
    "Entrypoint": STRSLICE, "NetworkDisabled": "bool", "MacAddress": "string",
    "OnBuild": STRS, "Labels": STRMAP, "StopSignal": "string", "StopTimeout": "int",
    "Shell": STRSLICE,
}

_THROTTLE = ("list", {"Path": "string", "Rate": "uint64"})
MOUNT = {
    "Type": "string", "Source": "string", "Target": "string", "ReadOnly": "bool",
    "Consistency": "string",
    "BindOptions": {"Propagation": "string", "NonRecursive": "bool",
                    "CreateMountpoint": "bool", "ReadOnlyNonRecursive": "bool",
                    "ReadOnlyForceRecursive": "bool"},
    "VolumeOptions": {"NoCopy": "bool", "Labels": STRMAP, "Subpath": "string",
                      "DriverConfig": {"Name": "string", "Options": STRMAP}},
    "TmpfsOptions": {"SizeBytes": "int64", "Mode": "uint32",
                     "Options": ("list", ("list", "string"))},
}

HOST_CONFIG: dict[str, Any] = {
    "Binds": STRS, "ContainerIDFile": "string",
    "LogConfig": {"Type": "string", "Config": STRMAP},
    "NetworkMode": "string",
    "PortBindings": ("map", ("list", {"HostIp": "string", "HostPort": "string"})),
    "RestartPolicy": {"Name": "string", "MaximumRetryCount": "int"},
    "AutoRemove": "bool", "VolumeDriver": "string", "VolumesFrom": STRS,
    "ConsoleSize": ("list", "uint"), "Annotations": STRMAP,
    "CapAdd": STRSLICE, "CapDrop": STRSLICE, "CgroupnsMode": "string",
    "Dns": STRS, "DnsOptions": STRS, "DnsSearch": STRS, "ExtraHosts": STRS, "GroupAdd": STRS,
    "IpcMode": "string", "Cgroup": "string", "Links": STRS, "OomScoreAdj": "int",
    "PidMode": "string", "Privileged": "bool", "PublishAllPorts": "bool",
    "ReadonlyRootfs": "bool", "SecurityOpt": STRS, "StorageOpt": STRMAP, "Tmpfs": STRMAP,
    "UTSMode": "string", "UsernsMode": "string", "ShmSize": "int64", "Sysctls": STRMAP,
    "Runtime": "string", "Isolation": "string",
    # Resources (inline)
    "CpuShares": "int64", "Memory": "int64", "NanoCpus": "int64", "CgroupParent": "string",
    "BlkioWeight": "uint16",
    "BlkioWeightDevice": ("list", {"Path": "string", "Weight": "uint16"}),
    "BlkioDeviceReadBps": _THROTTLE, "BlkioDeviceWriteBps": _THROTTLE,
    "BlkioDeviceReadIOps": _THROTTLE, "BlkioDeviceWriteIOps": _THROTTLE,
    "CpuPeriod": "int64", "CpuQuota": "int64", "CpuRealtimePeriod": "int64",
    "CpuRealtimeRuntime": "int64", "CpusetCpus": "string", "CpusetMems": "string",
    "Devices": ("list", {"PathOnHost": "string", "PathInContainer": "string",
                         "CgroupPermissions": "string"}),
    "DeviceCgroupRules": STRS,
    "DeviceRequests": ("list", {"Driver": "string", "Count": "int", "DeviceIDs": STRS,
                                "Capabilities": ("list", STRS), "Options": STRMAP}),
    "KernelMemory": "int64", "KernelMemoryTCP": "int64", "MemoryReservation": "int64",
    "MemorySwap": "int64", "MemorySwappiness": "int64", "OomKillDisable": "bool",
    "PidsLimit": "int64", "Ulimits": ("list", {"Name": "string", "Hard": "int64",
                                               "Soft": "int64"}),
    "CpuCount": "int64", "CpuPercent": "int64", "IOMaximumIOps": "uint64",
    "IOMaximumBandwidth": "uint64",
    "Mounts": ("list", MOUNT), "MaskedPaths": STRS, "ReadonlyPaths": STRS, "Init": "bool",
}

ENDPOINT = {
    "IPAMConfig": {"IPv4Address": "string", "IPv6Address": "string", "LinkLocalIPs": STRS},
    "Links": STRS, "Aliases": STRS, "MacAddress": "string", "DriverOpts": STRMAP,
    "NetworkID": "string", "EndpointID": "string", "Gateway": "string",
    "IPAddress": "string", "IPPrefixLen": "int", "IPv6Gateway": "string",
    "GlobalIPv6Address": "string", "GlobalIPv6PrefixLen": "int", "DNSNames": STRS,
}

CREATE: dict[str, Any] = dict(CONFIG)
CREATE["HostConfig"] = HOST_CONFIG
CREATE["NetworkingConfig"] = {"EndpointsConfig": ("map", ENDPOINT)}


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number " + (str(v) if isinstance(v, int) else repr(v))
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _goname(t: Any) -> str:
    if isinstance(t, str):
        return {"string": "string", "bool": "bool"}.get(t, t)
    if isinstance(t, dict):
        return "struct"
    if t == STRSLICE:
        return "strslice.StrSlice"
    inner = _goname(t[1])
    return f"[]{inner}" if t[0] == "list" else f"map[string]{inner}"


def _fail(v: Any, path: str, t: Any) -> None:
    raise InvalidArgument(f"json: cannot unmarshal {_kind(v)} into Go struct field "
                          f"CreateRequest.{path} of type {_goname(t)}")


def check(v: Any, t: Any, path: str) -> None:
    if v is None:
        return  # null leaves Go's zero value
    if t == "string":
        if not isinstance(v, str):
            _fail(v, path, t)
    elif t == "bool":
        if not isinstance(v, bool):
            _fail(v, path, t)
    elif isinstance(t, str) and t in _INT_BOUNDS:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and t == "float64":
                return
            _fail(v, path, t)
        lo, hi = _INT_BOUNDS[t] or (None, None)
        if lo is not None and not lo <= v <= hi:
            _fail(v, path, t)
    elif t == "any":
        return
    elif t == STRSLICE:
        if isinstance(v, str):
            return
        if not isinstance(v, list):
            _fail(v, path, t)
        for x in v:
            if not isinstance(x, str):
                _fail(x, path, t)
    elif isinstance(t, dict):
        if not isinstance(v, dict):
            _fail(v, path, t)
        for k, sub in t.items():
            if k in v:
                check(v[k], sub, f"{path}.{k}" if path else k)
    elif t[0] == "list":
        if not isinstance(v, list):
            _fail(v, path, t)
        for x in v:
            check(x, t[1], path)
    elif t[0] == "map":
        if not isinstance(v, dict):
            _fail(v, path, t)
        for x in v.values():
            check(x, t[1], path)


def check_create(body: Any) -> None:
    """A 400 (InvalidArgument, docker's decoder words) for the first field of the wrong type."""
    if not isinstance(body, dict):
        raise InvalidArgument("config cannot be empty in order to create a container")
    check(body, CREATE, "")
    size = (body.get("HostConfig") or {}).get("ConsoleSize")
    if size is not None and len(size) != 2:
        raise InvalidArgument("json: cannot unmarshal array into Go struct field "
                              "CreateRequest.HostConfig.ConsoleSize of type [2]uint")
    if body.get("StopSignal"):
        from sampan.containers.store import parse_signal

        parse_signal(body["StopSignal"])  # dockerd refuses an unknown one at create
