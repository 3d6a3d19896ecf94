"""HostConfig resource and isolation options → the OCI config, with dockerd's validation and
its messages: CPU (shares, NanoCpus, quota/period, cpuset), memory (reservation, swap,
swappiness, OOM killer), block I/O weight, ulimits, devices, sysctls, /dev/shm size,
oom_score_adj, seccomp profiles sent inline, and the namespace modes (ipc, pid, uts, and
`container:<name>` for the network).

`apply()` edits a config made by `spec.make_spec`; `live_resources()` is what `update` writes
to a running container's cgroup. Values the host cannot enforce are dropped with docker's
warning rather than failing (docker does the same)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable

from sampan.errors import Conflict, InvalidArgument

CGROUP = Path("/sys/fs/cgroup")
DEFAULT_SHM = 64 * 1024 * 1024
CPU_PERIOD = 100_000

RLIMITS = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
           "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")

# Sysctls in a namespace the container has its own of (runc's validation, as docker applies).
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}

# What docker's inspect shows for resources nobody asked for.
HOSTCONFIG_DEFAULTS: dict[str, Any] = {
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False, "Ulimits": [],
    "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "IpcMode": "private", "PidMode": "", "UTSMode": "", "UsernsMode": "", "OomScoreAdj": 0,
    "Cgroup": "",
}

# HostConfig keys `update` accepts (docker's container.UpdateConfig resources).
UPDATE_KEYS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares",
               "CpuQuota", "CpuPeriod", "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight",
               "CpuRealtimePeriod", "CpuRealtimeRuntime", "KernelMemory", "MemorySwappiness",
               "OomKillDisable", "RestartPolicy")


def _int(host: dict[str, Any], key: str) -> int:
    v = host.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(f"{key} must be an integer")
    return v


def _exists(*parts: str) -> bool:
    return any((CGROUP / p).exists() for p in parts)


def _v2_controllers() -> set[str]:
    for p in (CGROUP / "cgroup.controllers", CGROUP / "unified/cgroup.controllers"):
        try:
            return set(p.read_text().split())
        except OSError:
            continue
    return set()


def _pure_v2() -> bool:
    return (CGROUP / "cgroup.controllers").exists()


def swap_limit_supported() -> bool:
    if _pure_v2():
        return "memory" in _v2_controllers() and any(CGROUP.glob("*/memory.swap.max"))
    return _exists("memory/memory.memsw.limit_in_bytes")


def blkio_weight_supported() -> bool:
    if _pure_v2():
        return "io" in _v2_controllers() and (
            any(CGROUP.glob("*/io.weight")) or any(CGROUP.glob("*/io.bfq.weight")))
    return _exists("blkio/blkio.weight", "blkio/blkio.bfq.weight")


def _online_cpus() -> set[int]:
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return set(range(os.cpu_count() or 1))
    return parse_cpuset(text, "cpus")


def _online_mems() -> set[int]:
    try:
        return parse_cpuset(Path("/sys/devices/system/node/online").read_text().strip(), "mems")
    except OSError:
        return {0}


def parse_cpuset(spec: str, what: str = "cpus") -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise InvalidArgument(f"Invalid value {spec} for {what}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise InvalidArgument(f"Invalid value {spec} for {what}")
        out.update(range(lo, hi + 1))
    return out


def validate(host: dict[str, Any], update: bool = False) -> list[str]:
    """docker's checks of the resource fields (daemon/daemon_unix.go verifyPlatformContainer
    Resources). Fixes `host` in place as dockerd does (swap twice the memory, dropped values
    the kernel cannot enforce); returns the warnings."""
    warnings: list[str] = []
    mem = _int(host, "Memory")
    swap = _int(host, "MemorySwap")
    res = _int(host, "MemoryReservation")
    if mem < 0 and mem != -1 or mem and 0 < mem < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap and not swap_limit_supported():
        warnings.append("Your kernel does not support swap limit capabilities or the cgroup "
                        "is not mounted. Memory limited without swap.")
        host["MemorySwap"] = -1
        swap = -1
    if swap > 0 and not update and mem <= 0:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if mem > 0 and swap > 0 and swap < mem:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if mem > 0 and swap == 0 and not update and swap_limit_supported():
        host["MemorySwap"] = 2 * mem  # docker's default: as much swap as memory
    if res < 0:
        raise InvalidArgument("Invalid memory reservation")
    if res and res < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if mem > 0 and res > 0 and mem < res:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    sw = host.get("MemorySwappiness")
    if sw is not None and sw != -1 and (isinstance(sw, bool) or not isinstance(sw, int)
                                        or not 0 <= sw <= 100):
        raise InvalidArgument(f"Invalid value: {sw}, valid memory swappiness range is 0-100")
    if host.get("OomKillDisable") and mem <= 0 and not update:
        warnings.append("OOM killer is disabled for the container, but no memory limit is set, "
                        "this can result in the system running out of resources.")
    if _int(host, "KernelMemory"):
        warnings.append("Setting kernel memory limit is not supported; the limit is ignored")
        host["KernelMemory"] = 0
    nano = _int(host, "NanoCpus")
    period = _int(host, "CpuPeriod")
    quota = _int(host, "CpuQuota")
    if nano and period:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano and quota:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    ncpu = len(_online_cpus())
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                              f"{ncpu} CPUs available")
    if nano and nano < 10_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                              f"{ncpu} CPUs available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if quota and quota != -1 and quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if _int(host, "CpuShares") < 0:
        raise InvalidArgument("shares: invalid argument")
    for key, what, online in (("CpusetCpus", "cpus", _online_cpus),
                              ("CpusetMems", "mems", _online_mems)):
        v = host.get(key)
        if v in (None, ""):
            continue
        if not isinstance(v, str):
            raise InvalidArgument(f"{key} must be a string")
        want = parse_cpuset(v, what)
        avail = online()
        if not want <= avail:
            have = ",".join(str(c) for c in sorted(avail))
            raise InvalidArgument(f"Requested {'CPUs' if what == 'cpus' else 'memory nodes'} "
                                  f"are not available - requested {v}, available: {have}")
    bw = _int(host, "BlkioWeight")
    if bw and not 10 <= bw <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    if bw and not blkio_weight_supported():
        warnings.append("Your kernel does not support Block I/O weight or the cgroup is not "
                        "mounted. Weight discarded.")
        host["BlkioWeight"] = 0
    pids = host.get("PidsLimit")
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int)):
        raise InvalidArgument("PidsLimit must be an integer")
    if not update:
        adj = _int(host, "OomScoreAdj")
        if not -1000 <= adj <= 1000:
            raise InvalidArgument(f"Invalid value {adj}, range for oom score adj is "
                                  "[-1000, 1000]")
        shm = _int(host, "ShmSize")
        if shm < 0:
            raise InvalidArgument("SHM size can not be less than 0")
    return warnings


def live_resources(host: dict[str, Any]) -> dict[str, Any]:
    """The OCI `linux.resources` for `host` (without devices: those are set at create)."""
    out: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    limit = _int(host, "Memory")
    if limit:
        mem["limit"] = limit
    swap = _int(host, "MemorySwap")
    if swap and (limit or swap == -1):
        mem["swap"] = swap
    if _int(host, "MemoryReservation"):
        mem["reservation"] = host["MemoryReservation"]
    sw = host.get("MemorySwappiness")
    if isinstance(sw, int) and 0 <= sw <= 100:
        mem["swappiness"] = sw
    if host.get("OomKillDisable"):
        mem["disableOOMKiller"] = True
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    if _int(host, "CpuShares"):
        cpu["shares"] = host["CpuShares"]
    nano = _int(host, "NanoCpus")
    if nano:
        cpu["period"] = CPU_PERIOD
        cpu["quota"] = nano * CPU_PERIOD // 1_000_000_000
    if _int(host, "CpuPeriod"):
        cpu["period"] = host["CpuPeriod"]
    if _int(host, "CpuQuota"):
        cpu["quota"] = host["CpuQuota"]
    if host.get("CpusetCpus"):
        cpu["cpus"] = host["CpusetCpus"]
    if host.get("CpusetMems"):
        cpu["mems"] = host["CpusetMems"]
    if cpu:
        out["cpu"] = cpu
    pids = host.get("PidsLimit")
    if pids:
        out["pids"] = {"limit": pids if pids > 0 else -1}
    if _int(host, "BlkioWeight"):
        out["blockIO"] = {"weight": host["BlkioWeight"]}
    return out


# --------------------------------------------------------------------------- the rest


def rlimits(ulimits: Any) -> list[dict[str, Any]]:
    out = []
    if ulimits is None:
        return out
    if not isinstance(ulimits, list):
        raise InvalidArgument("Ulimits must be a list")
    seen = set()
    for u in ulimits:
        if not isinstance(u, dict):
            raise InvalidArgument("Ulimits entries must be objects with Name, Soft, Hard")
        name = str(u.get("Name") or "").lower()
        if name not in RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        soft, hard = u.get("Soft"), u.get("Hard")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (soft, hard)):
            raise InvalidArgument(f"invalid ulimit {name}: Soft and Hard must be integers")
        if soft > hard:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard limit: "
                                  f"{soft} > {hard}")
        if name in seen:
            continue
        seen.add(name)
        unl = 2**64 - 1
        out.append({"type": "RLIMIT_" + name.upper(),
                    "soft": unl if soft < 0 else soft, "hard": unl if hard < 0 else hard})
    return out


def devices(entries: Any, privileged: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """HostConfig.Devices → (linux.devices, cgroup allow rules). A directory on the host adds
    every device below it, as docker does."""
    devs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    if entries is None:
        return devs, rules
    if not isinstance(entries, list):
        raise InvalidArgument("Devices must be a list")
    for e in entries:
        if not isinstance(e, dict) or not e.get("PathOnHost"):
            raise InvalidArgument("Devices entries need PathOnHost")
        src = str(e["PathOnHost"])
        dst = str(e.get("PathInContainer") or src)
        perms = str(e.get("CgroupPermissions") or "rwm")
        if not perms or any(c not in "rwm" for c in perms):
            raise InvalidArgument(f"invalid device mode: {perms}")
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid device path in container: {dst}")
        try:
            st = os.stat(src)
        except OSError as err:
            raise InvalidArgument(f"error gathering device information while adding custom "
                                  f"device \"{src}\": {err.strerror.lower()}") from None
        found: list[tuple[str, os.stat_result]] = []
        if stat.S_ISDIR(st.st_mode):
            for dirpath, _dirs, files in os.walk(src):
                for f in sorted(files):
                    p = os.path.join(dirpath, f)
                    try:
                        s2 = os.stat(p)
                    except OSError:
                        continue
                    if stat.S_ISCHR(s2.st_mode) or stat.S_ISBLK(s2.st_mode):
                        found.append((os.path.join(dst, os.path.relpath(p, src)), s2))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append((dst, st))
        else:
            raise InvalidArgument(f"error gathering device information while adding custom "
                                  f"device \"{src}\": not a device node")
        for path, s in found:
            kind = "c" if stat.S_ISCHR(s.st_mode) else "b"
            major, minor = os.major(s.st_rdev), os.minor(s.st_rdev)
            devs.append({"path": path, "type": kind, "major": major, "minor": minor,
                         "fileMode": stat.S_IMODE(s.st_mode), "uid": s.st_uid, "gid": s.st_gid})
            rules.append({"allow": True, "type": kind, "major": major, "minor": minor,
                          "access": perms})
    return devs, rules


def sysctls(values: Any, netmode: str, ipcmode: str, utsmode: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidArgument("Sysctls must be an object")
    out = {}
    for k, v in values.items():
        k = str(k)
        if k in _IPC_SYSCTLS or k.startswith("fs.mqueue."):
            if ipcmode == "host" or ipcmode.startswith("container:"):
                raise InvalidArgument(f"sysctl {k!r} is not allowed in host IPC namespace"
                                      if ipcmode == "host" else
                                      f"sysctl {k!r} is not allowed: the IPC namespace is "
                                      "shared with another container")
        elif k.startswith("net."):
            if netmode == "host":
                raise InvalidArgument(f"sysctl {k!r} is not allowed in host network namespace")
            if netmode == "container":
                raise InvalidArgument(f"sysctl {k!r} is not allowed: the network namespace is "
                                      "shared with another container")
        elif k == "kernel.domainname":
            if utsmode == "host":
                raise InvalidArgument(f"sysctl {k!r} is not allowed in host UTS namespace")
        else:
            raise InvalidArgument(f"sysctl {k!r} is not in a separate kernel namespace "
                                  "(allowed: kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, "
                                  "net.* with a private network namespace)")
        if not re.fullmatch(r"[a-z0-9_./-]+", k) or ".." in k:
            raise InvalidArgument(f"invalid sysctl name {k!r}")
        out[k] = str(v)
    return out


def docker_seccomp_to_oci(profile: dict[str, Any], caps: list[str]) -> dict[str, Any]:
    """A seccomp profile in docker's format (archMap, names, includes/excludes by capability
    and architecture) → OCI `linux.seccomp` for this machine."""
    from sampan import _runtime

    native = _runtime.seccomp_native_arch()
    if "defaultAction" not in profile:
        raise InvalidArgument("seccomp profile has no defaultAction")
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches: list[str] = []
    if profile.get("archMap"):
        for m in profile["archMap"]:
            if m.get("architecture") == native:
                arches = [native, *(m.get("subArchitectures") or [])]
    elif profile.get("architectures"):
        arches = list(profile["architectures"])
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = profile["flags"]
    capset = set(caps)
    rules = []
    for sc in profile.get("syscalls") or []:
        inc, exc = sc.get("includes") or {}, sc.get("excludes") or {}
        if inc.get("caps") and not all(c in capset for c in inc["caps"]):
            continue
        if inc.get("arches") and native not in inc["arches"]:
            continue
        if exc.get("caps") and any(c in capset for c in exc["caps"]):
            continue
        if exc.get("arches") and native in exc["arches"]:
            continue
        names = sc.get("names") or ([sc["name"]] if sc.get("name") else [])
        if not names:
            continue
        r: dict[str, Any] = {"names": names, "action": sc.get("action")}
        if sc.get("args"):
            r["args"] = sc["args"]
        if "errnoRet" in sc:
            r["errnoRet"] = sc["errnoRet"]
        rules.append(r)
    out["syscalls"] = rules
    try:
        _runtime.seccomp_program(json.dumps(out))
    except Exception as e:  # noqa: BLE001 - the runtime names what is wrong
        raise InvalidArgument(f"Error loading seccomp profile: {e}") from None
    return out


def security_opt(opt: str) -> tuple[str, str] | None:
    """Options `spec.make_spec` leaves to this module: ('seccomp', json), ('ignore', warning),
    ('systempaths', 'unconfined'); None for the others."""
    k, sep, v = opt.partition("=")
    if not sep:
        k, sep, v = opt.partition(":")
    if k == "seccomp" and v not in ("unconfined", ""):
        return "seccomp", v
    if k == "apparmor":
        return "ignore", f"AppArmor is not supported by this daemon: security-opt {opt!r} " \
                         "ignored"
    if k == "label":
        return "ignore", ""
    if k == "systempaths" and v == "unconfined":
        return "systempaths", v
    return None


def _ns_target(store: Any, ref: str, what: str) -> Any:
    try:
        other = store.get(ref)
    except Exception:  # noqa: BLE001 - NotFound → docker's message
        raise InvalidArgument(f"No such container: {ref}") from None
    return other


def _ns_path(store: Any, ref: str, what: str, ns: str) -> str:
    other = _ns_target(store, ref, what)
    if not other.running or not other.state.get("Pid"):
        raise Conflict(f"cannot join {what} of a non running container: {other.id}")
    return f"/proc/{other.state['Pid']}/ns/{ns}"


def _set_ns(spec: dict[str, Any], ns_type: str, mode: str, path: str | None) -> None:
    """mode "new": own namespace; "host": none; "join": `path`."""
    nss = [n for n in spec["linux"]["namespaces"] if n["type"] != ns_type]
    if mode == "new":
        nss.append({"type": ns_type})
    elif mode == "join":
        nss.append({"type": ns_type, "path": path})
    spec["linux"]["namespaces"] = nss


def apply(spec: dict[str, Any], host: dict[str, Any], config: dict[str, Any], store: Any,
          cdir: Path | None = None) -> list[str]:
    """Edit the OCI config `spec` (from spec.make_spec) for the options this module owns.
    `store` resolves `container:<name>` modes. Returns warnings for the create answer."""
    warnings = validate(host)
    for k, v in HOSTCONFIG_DEFAULTS.items():
        if host.get(k) is None:
            host[k] = json.loads(json.dumps(v))
    linux = spec["linux"]
    proc = spec["process"]
    res = linux.setdefault("resources", {})
    for k, v in live_resources(host).items():
        if k == "memory" or k == "cpu":
            res.setdefault(k, {}).update(v)
        else:
            res[k] = v
    rl = rlimits(host.get("Ulimits"))
    if rl:
        proc["rlimits"] = rl
    adj = _int(host, "OomScoreAdj")
    if adj:
        proc["oomScoreAdj"] = adj
    devs, rules = devices(host.get("Devices"), bool(host.get("Privileged")))
    if devs:
        linux.setdefault("devices", []).extend(devs)
        res.setdefault("devices", []).extend(rules)

    # namespaces
    netmode = host.get("NetworkMode") or "default"
    ipc = host.get("IpcMode") or "private"
    pid = host.get("PidMode") or ""
    uts = host.get("UTSMode") or ""
    if not isinstance(ipc, str) or not (ipc in ("private", "shareable", "host", "none")
                                        or ipc.startswith("container:")):
        raise InvalidArgument(f"invalid IPC mode: {ipc}")
    if not isinstance(pid, str) or not (pid in ("", "host", "private")
                                        or pid.startswith("container:")):
        raise InvalidArgument(f"invalid PID mode: {pid}")
    if not isinstance(uts, str) or uts not in ("", "host", "private"):
        raise InvalidArgument(f"invalid UTS mode: {uts}")
    if ipc == "host":
        _set_ns(spec, "ipc", "host", None)
    elif ipc.startswith("container:"):
        ref = ipc.split(":", 1)[1]
        other = _ns_target(store, ref, "IPC namespace")
        if (other.doc["HostConfig"].get("IpcMode") or "private") not in ("shareable", "host"):
            raise InvalidArgument(f"cannot join IPC of container {ref}: non-shareable IPC "
                                  "(hint: use IpcMode:shareable for the donor container)")
        _set_ns(spec, "ipc", "join", _ns_path(store, ref, "IPC namespace", "ipc"))
    if pid == "host":
        _set_ns(spec, "pid", "host", None)
    elif pid.startswith("container:"):
        _set_ns(spec, "pid", "join", _ns_path(store, pid.split(":", 1)[1], "PID namespace",
                                              "pid"))
    if uts == "host":
        _set_ns(spec, "uts", "host", None)
        spec.pop("hostname", None)
    if isinstance(netmode, str) and netmode.startswith("container:"):
        ref = netmode.split(":", 1)[1]
        path = _ns_path(store, ref, "network stack", "net")
        _set_ns(spec, "network", "join", path)
        other = _ns_target(store, ref, "network stack")
        donor = (other.doc.get("Config") or {}).get("Hostname")
        if donor:
            # docker: the donor's host name too (in a UTS namespace of its own)
            spec["hostname"] = config["Hostname"] = donor
            proc["env"] = [e for e in proc.get("env", []) if not e.startswith("HOSTNAME=")]
            proc["env"].append("HOSTNAME=" + donor)
        if cdir is not None:
            # the donor's view of names: its hostname, hosts and resolv.conf
            for name in ("hostname", "hosts", "resolv.conf"):
                try:
                    (cdir / name).write_bytes((other.dir / name).read_bytes())
                except OSError:
                    pass
    sc = sysctls(host.get("Sysctls"), "container" if str(netmode).startswith("container:")
                 else netmode, ipc, uts)
    if sc:
        linux["sysctl"] = sc

    # /dev/shm
    shm = _int(host, "ShmSize") or DEFAULT_SHM
    mounts = spec["mounts"]
    for i, m in enumerate(mounts):
        if m["destination"] != "/dev/shm":
            continue
        if ipc == "host":
            mounts[i] = {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                         "options": ["rbind", "rprivate"]}
        elif ipc == "none":
            del mounts[i]
        else:
            opts = [o for o in m["options"] if not o.startswith("size=")]
            m["options"] = opts + [f"size={shm // 1024}k"]
        break
    if ipc not in ("host", "none"):
        host["ShmSize"] = shm

    # security options this module owns
    caps = list((proc.get("capabilities") or {}).get("bounding") or [])
    for opt in host.get("SecurityOpt") or []:
        got = security_opt(str(opt))
        if got is None:
            continue
        kind, val = got
        if kind == "seccomp":
            if host.get("Privileged"):
                continue  # docker: privileged containers run unconfined
            from sampan import hostfeatures

            if not hostfeatures.seccomp_supported():
                raise InvalidArgument("seccomp is not enabled in your kernel, cannot run a "
                                      "custom seccomp profile.")
            try:
                profile = json.loads(val)
            except ValueError:
                raise InvalidArgument("Decoding seccomp profile failed: the profile must be "
                                      "JSON (the CLI sends the file's content)") from None
            if not isinstance(profile, dict):
                raise InvalidArgument("Decoding seccomp profile failed: not a JSON object")
            linux["seccomp"] = docker_seccomp_to_oci(profile, caps)
        elif kind == "ignore" and val:
            warnings.append(val)
        elif kind == "systempaths":
            linux.pop("maskedPaths", None)
            linux.pop("readonlyPaths", None)
    return warnings


def refresh_joins(rec: Any, store: Any, write: Callable[[Path, bytes], None]) -> None:
    """Before a start: namespaces joined from other containers point at their current pid."""
    host = rec.doc["HostConfig"]
    modes = [("network", host.get("NetworkMode") or "", "net", "network stack"),
             ("ipc", host.get("IpcMode") or "", "ipc", "IPC namespace"),
             ("pid", host.get("PidMode") or "", "pid", "PID namespace")]
    if not any(str(m).startswith("container:") for _t, m, _n, _w in modes):
        return
    path = rec.dir / "config.json"
    spec = json.loads(path.read_text())
    for ns_type, mode, ns, what in modes:
        if str(mode).startswith("container:"):
            _set_ns(spec, ns_type, "join", _ns_path(store, mode.split(":", 1)[1], what, ns))
    write(path, json.dumps(spec).encode())
