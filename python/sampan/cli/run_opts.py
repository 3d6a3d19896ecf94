"""`run`/`create` flags for restart policies, healthchecks, resources, devices, sysctls,
ulimits, namespaces and seccomp profile files — parsed as the docker CLI parses them and put
into the create request (`apply`)."""

from __future__ import annotations

import re
from typing import Any

import click

_UNITS = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def ram(v: str | None, flag: str) -> int | None:
    """docker's RAMInBytes: 512, 64m, 1.5g, 100kb; -1 for unlimited where allowed."""
    if v is None or v == "":
        return None
    s = v.strip().lower()
    if s == "-1":
        return -1
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", s)
    if not m:
        raise click.BadParameter(f"invalid size: '{v}'", param_hint=flag)
    return int(float(m.group(1)) * _UNITS[m.group(2) or "b"])


_DUR = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10 ** 6, "s": 10 ** 9, "m": 60 * 10 ** 9,
        "h": 3600 * 10 ** 9}


def duration_ns(v: str | None, flag: str) -> int | None:
    """Go's time.ParseDuration: 30s, 1m30s, 500ms, 0."""
    if v is None or v == "":
        return None
    s = v.strip()
    if s == "0":
        return 0
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR[m.group(2)]
        pos = m.end()
    if pos != len(s) or not pos:
        raise click.BadParameter(f"invalid duration {v!r} (e.g. 30s, 1m30s, 500ms)",
                                 param_hint=flag)
    return int(total)


def restart_policy(v: str | None) -> dict[str, Any] | None:
    if v is None:
        return None
    name, sep, count = v.partition(":")
    if sep and name != "on-failure":
        raise click.BadParameter("maximum retry count can only be used with 'on-failure'",
                                 param_hint="--restart")
    n = 0
    if sep:
        try:
            n = int(count)
        except ValueError:
            raise click.BadParameter("maximum retry count must be an integer",
                                     param_hint="--restart") from None
    return {"Name": name, "MaximumRetryCount": n}


def ulimit(v: str) -> dict[str, Any]:
    name, sep, val = v.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"invalid ulimit argument: {v}", param_hint="--ulimit")
    soft, _, hard = val.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise click.BadParameter(f"invalid ulimit argument: {v}", param_hint="--ulimit") \
            from None
    return {"Name": name, "Soft": s, "Hard": h}


def device(v: str) -> dict[str, str]:
    """/dev/x, /dev/x:/dev/y, /dev/x:rwm, /dev/x:/dev/y:rwm."""
    parts = v.split(":")
    src, dst, mode = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if re.fullmatch(r"[rwm]{1,3}", parts[1]):
            mode = parts[1]
        else:
            dst = parts[1]
    elif len(parts) == 3:
        dst, mode = parts[1], parts[2]
        if not re.fullmatch(r"[rwm]{1,3}", mode):
            raise click.BadParameter(f"invalid device mode: {mode}", param_hint="--device")
    elif len(parts) > 3:
        raise click.BadParameter(f"invalid device specification: {v}", param_hint="--device")
    if not src.startswith("/") or not dst.startswith("/"):
        raise click.BadParameter(f"invalid device specification: {v}", param_hint="--device")
    return {"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": mode}


def seccomp_files(opts: list[str]) -> list[str]:
    """`seccomp=<file>`: docker's CLI reads the file and sends its JSON inline."""
    out = []
    for o in opts:
        k, sep, v = o.partition("=")
        if not sep:
            k, sep, v = o.partition(":")
        if k == "seccomp" and v not in ("unconfined", "builtin", "") and not v.lstrip()\
                .startswith("{"):
            try:
                with open(v, encoding="utf-8") as f:
                    v = f.read()
            except OSError as e:
                raise click.BadParameter(f"opening seccomp profile ({v}) failed: "
                                         f"{e.strerror}", param_hint="--security-opt") from None
            out.append("seccomp=" + v)
        else:
            out.append(o)
    return out


OPTIONS = [
    click.option("--restart", "restart_", help="restart policy (no, on-failure[:max-retries], "
                 "always, unless-stopped)"),
    click.option("--health-cmd", help="command to run to check health"),
    click.option("--health-interval", help="time between running the check (ms|s|m|h)"),
    click.option("--health-timeout", help="maximum time to allow one check to run"),
    click.option("--health-retries", type=int, help="consecutive failures needed to report "
                 "unhealthy"),
    click.option("--health-start-period", help="start period for the container to initialize "
                 "before starting health-retries countdown"),
    click.option("--health-start-interval", help="time between running the check during the "
                 "start period"),
    click.option("--no-healthcheck", is_flag=True, help="disable any container-specified "
                 "HEALTHCHECK"),
    click.option("--memory-swap", help="swap limit equal to memory plus swap: '-1' to enable "
                 "unlimited swap"),
    click.option("--memory-reservation", help="memory soft limit"),
    click.option("--memory-swappiness", type=int, help="tune container memory swappiness "
                 "(0 to 100)"),
    click.option("--kernel-memory", help="kernel memory limit (ignored)", hidden=True),
    click.option("--oom-kill-disable", is_flag=True, help="disable OOM killer"),
    click.option("--oom-score-adj", type=int, help="tune host's OOM preferences "
                 "(-1000 to 1000)"),
    click.option("--cpus", help="number of CPUs"),
    click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)"),
    click.option("--cpu-period", type=int, help="limit CPU CFS (Completely Fair Scheduler) "
                 "period"),
    click.option("--cpu-quota", type=int, help="limit CPU CFS (Completely Fair Scheduler) "
                 "quota"),
    click.option("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)"),
    click.option("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)"),
    click.option("--blkio-weight", type=int, help="block IO (relative weight), between 10 and "
                 "1000, or 0 to disable"),
    click.option("--ulimit", "ulimits", multiple=True, help="ulimit options (nofile=1024:2048)"),
    click.option("--device", "devices", multiple=True, help="add a host device to the container"),
    click.option("--sysctl", "sysctls", multiple=True, help="sysctl options (name=value)"),
    click.option("--shm-size", help="size of /dev/shm"),
    click.option("--ipc", help="IPC mode to use (private, shareable, host, none, "
                 "container:<name|id>)"),
    click.option("--pid", "pid_mode", help="PID namespace to use (host, container:<name|id>)"),
    click.option("--uts", help="UTS namespace to use (host)"),
]


def options(fn: Any) -> Any:
    for o in reversed(OPTIONS):
        fn = o(fn)
    return fn


def apply(body: dict[str, Any], o: dict[str, Any]) -> None:
    """Put the parsed flags into the create request `body`."""
    host = body.setdefault("HostConfig", {})
    pol = restart_policy(o.get("restart_"))
    if pol is not None:
        host["RestartPolicy"] = pol
    if o.get("no_healthcheck"):
        if any(o.get(k) for k in ("health_cmd", "health_interval", "health_timeout",
                                  "health_retries", "health_start_period",
                                  "health_start_interval")):
            raise click.UsageError("--no-healthcheck conflicts with --health-* options")
        body["Healthcheck"] = {"Test": ["NONE"]}
    else:
        hc: dict[str, Any] = {}
        if o.get("health_cmd"):
            hc["Test"] = ["CMD-SHELL", o["health_cmd"]]
        for flag, key in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                          ("health_start_period", "StartPeriod"),
                          ("health_start_interval", "StartInterval")):
            v = duration_ns(o.get(flag), "--" + flag.replace("_", "-"))
            if v is not None:
                if v < 0:
                    raise click.BadParameter("must be positive",
                                             param_hint="--" + flag.replace("_", "-"))
                hc[key] = v
        if o.get("health_retries") is not None:
            if o["health_retries"] < 0:
                raise click.BadParameter("--health-retries cannot be negative")
            hc["Retries"] = o["health_retries"]
        if hc:
            body["Healthcheck"] = hc
    for flag, key in (("memory_swap", "MemorySwap"), ("memory_reservation",
                                                      "MemoryReservation"),
                      ("kernel_memory", "KernelMemory"), ("shm_size", "ShmSize")):
        v = ram(o.get(flag), "--" + flag.replace("_", "-"))
        if v is not None:
            host[key] = v
    if o.get("memory_swappiness") is not None:
        host["MemorySwappiness"] = o["memory_swappiness"]
    if o.get("oom_kill_disable"):
        host["OomKillDisable"] = True
    if o.get("oom_score_adj") is not None:
        host["OomScoreAdj"] = o["oom_score_adj"]
    if o.get("cpus"):
        try:
            host["NanoCpus"] = int(round(float(o["cpus"]) * 1e9))
        except ValueError:
            raise click.BadParameter(f"failed to parse {o['cpus']} as a rational number",
                                     param_hint="--cpus") from None
    for flag, key in (("cpu_shares", "CpuShares"), ("cpu_period", "CpuPeriod"),
                      ("cpu_quota", "CpuQuota"), ("blkio_weight", "BlkioWeight")):
        if o.get(flag) is not None:
            host[key] = o[flag]
    for flag, key in (("cpuset_cpus", "CpusetCpus"), ("cpuset_mems", "CpusetMems"),
                      ("ipc", "IpcMode"), ("pid_mode", "PidMode"), ("uts", "UTSMode")):
        if o.get(flag):
            host[key] = o[flag]
    if o.get("ulimits"):
        host["Ulimits"] = [ulimit(u) for u in o["ulimits"]]
    if o.get("devices"):
        host["Devices"] = [device(d) for d in o["devices"]]
    if o.get("sysctls"):
        sc = {}
        for s in o["sysctls"]:
            k, sep, v = s.partition("=")
            if not sep or not k:
                raise click.BadParameter(f"{s} is not a valid sysctl value (name=value)",
                                         param_hint="--sysctl")
            sc[k] = v
        host["Sysctls"] = sc
    if host.get("SecurityOpt"):
        host["SecurityOpt"] = seccomp_files(list(host["SecurityOpt"]))
