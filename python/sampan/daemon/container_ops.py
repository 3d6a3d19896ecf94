"""Engine API operations on a container's processes and limits: top, stats, rename, pause,
unpause, update — docker's JSON shapes, status codes and events."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from sampan.daemon.engine import Engine, blocking
from sampan.daemon.events import emit_container
from sampan.daemon.server import (
    HTTPError,
    Request,
    Response,
    StreamResponse,
    empty,
    json_response,
)
from sampan.errors import Conflict, InvalidArgument

ZERO_TIME = "0001-01-01T00:00:00Z"
log = logging.getLogger("sampand")


def register(r: Any) -> None:
    r.add("GET", "/containers/{id}/top", top)
    r.add("GET", "/containers/{id}/stats", stats)
    r.add("POST", "/containers/{id}/rename", rename)
    r.add("POST", "/containers/{id}/pause", pause)
    r.add("POST", "/containers/{id}/unpause", unpause)
    r.add("POST", "/containers/{id}/update", update)


def _c(eng: Engine) -> Any:
    from sampan.daemon.containers import get

    return get(eng)


def _runtime_container(c: Any, rec: Any) -> Any:
    from sampan import _runtime

    return _runtime.Container.load(rec.id, str(c.store.runtime_root))


def _not_running(rec: Any) -> Conflict:
    return Conflict(f"Container {rec.id} is not running")


# --------------------------------------------------------------------------- top


def _parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """docker's parsePSOutput: the header's PID column picks the container's rows; the last
    column (the command) keeps its spaces."""
    lines = output.splitlines()
    if not lines:
        raise InvalidArgument("ps printed nothing")
    titles = lines[0].split()
    try:
        pid_col = titles.index("PID")
    except ValueError:
        raise InvalidArgument("Couldn't find PID field in ps output") from None
    procs = []
    for ln in lines[1:]:
        if not ln.strip():
            continue
        fields = ln.split(None, len(titles) - 1)
        if len(fields) <= pid_col:
            continue
        try:
            p = int(fields[pid_col])
        except ValueError:
            raise InvalidArgument(f"Unexpected pid '{fields[pid_col]}': invalid syntax") \
                from None
        if p in pids:
            procs.append(fields)
    return {"Titles": titles, "Processes": procs}


def top_of(pids: list[int], ps_args: str) -> dict[str, Any]:
    args = ps_args.split() if ps_args else ["-ef"]
    pid_list = ",".join(str(p) for p in pids) or "0"
    try:
        out = subprocess.run(["ps", *args, "-q", pid_list], capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            # some ps options (f, for one) do not go with -q: ask for everything, filter here
            out = subprocess.run(["ps", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return _top_from_proc(pids)
    if out.returncode != 0:
        raise InvalidArgument(f"ps: {out.stderr.strip() or 'failed'}")
    return _parse_ps(out.stdout, set(pids))


def _top_from_proc(pids: list[int]) -> dict[str, Any]:
    """Without ps on the host: `ps -ef`'s columns from /proc."""
    import pwd

    hz = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    rows = []
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            st = os.stat(f"/proc/{p}")
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()
        try:
            user = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            user = str(st.st_uid)
        cpu = (int(f[11]) + int(f[12])) // hz
        start = time.strftime("%H:%M", time.localtime(boot + int(f[19]) / hz))
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rows.append([user, str(p), f[1], "0", start, "?",
                     f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}",
                     cmd.decode(errors="replace") or f"[{name}]"])
    return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": rows}


async def top(req: Request, eng: Engine) -> Response:
    c = _c(eng)
    rec = c.store.get(req.params["id"])
    if not rec.running:
        raise _not_running(rec)
    if rec.state.get("Restarting"):
        raise Conflict(f"Container {rec.id} is restarting, wait until the container is running")
    pids = await blocking(lambda: _runtime_container(c, rec).ps())
    return json_response(await blocking(top_of, list(pids), req.q("ps_args") or ""))


# --------------------------------------------------------------------------- stats


def _now_rfc3339() -> str:
    from sampan.containers.store import now_rfc3339

    return now_rfc3339()


def _system_cpu_ns() -> int:
    """/proc/stat's first line in nanoseconds (docker's system_cpu_usage)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))


def _online_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _mem_total() -> int:
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_file(cid: str, controller: str, name: str) -> Path | None:
    for p in (Path("/sys/fs/cgroup") / controller / "sampan" / cid / name,
              Path("/sys/fs/cgroup/sampan") / cid / name):
        if p.exists():
            return p
    return None


def _memory_stat(cid: str) -> dict[str, int]:
    p = _cgroup_file(cid, "memory", "memory.stat")
    out: dict[str, int] = {}
    if p is None:
        return out
    try:
        for ln in p.read_text().splitlines():
            k, _, v = ln.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
    except OSError:
        pass
    return out


def _percpu(cid: str) -> list[int] | None:
    p = _cgroup_file(cid, "cpuacct", "cpuacct.usage_percpu")
    if p is None:
        return None
    try:
        return [int(x) for x in p.read_text().split()]
    except (OSError, ValueError):
        return None


def _networks(pid: int) -> dict[str, Any] | None:
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return None
    nets = {}
    for ln in text.splitlines()[2:]:
        name, _, rest = ln.partition(":")
        name = name.strip()
        if name == "lo" or not rest:
            continue
        v = [int(x) for x in rest.split()]
        nets[name] = {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2],
                      "rx_dropped": v[3], "tx_bytes": v[8], "tx_packets": v[9],
                      "tx_errors": v[10], "tx_dropped": v[11]}
    return nets or None


def _empty_cpu() -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def empty_stats(rec: Any) -> dict[str, Any]:
    return {"name": "/" + rec.name, "id": rec.id, "read": ZERO_TIME, "preread": ZERO_TIME,
            "pids_stats": {}, "blkio_stats": {"io_service_bytes_recursive": None,
                                              "io_serviced_recursive": None,
                                              "io_queue_recursive": None,
                                              "io_service_time_recursive": None,
                                              "io_wait_time_recursive": None,
                                              "io_merged_recursive": None,
                                              "io_time_recursive": None,
                                              "sectors_recursive": None},
            "num_procs": 0, "storage_stats": {}, "cpu_stats": _empty_cpu(),
            "precpu_stats": _empty_cpu(), "memory_stats": {}}


def sample(c: Any, rec: Any) -> dict[str, Any]:
    """One stats document (without precpu_stats), docker's cgroup v1 shape."""
    raw = json.loads(_runtime_container(c, rec).stats())
    mem, cpu, pids, blk = raw["memory"], raw["cpu"], raw["pids"], raw["blkio"]
    cpu_usage: dict[str, Any] = {"total_usage": cpu["usage_total_ns"],
                                 "usage_in_kernelmode": cpu["system_ns"],
                                 "usage_in_usermode": cpu["user_ns"]}
    percpu = _percpu(rec.id)
    if percpu is not None:
        cpu_usage["percpu_usage"] = percpu
    limit = mem.get("limit")
    total = _mem_total()
    if not limit or limit > total:
        limit = total
    mstats = _memory_stat(rec.id) or {"cache": mem["cache"], "rss": mem["rss"]}
    pid_stats: dict[str, Any] = {"current": pids["current"]}
    if pids.get("limit"):
        pid_stats["limit"] = pids["limit"]
    out = empty_stats(rec)
    out.update({
        "read": _now_rfc3339(),
        "pids_stats": pid_stats,
        "cpu_stats": {"cpu_usage": cpu_usage, "system_cpu_usage": _system_cpu_ns(),
                      "online_cpus": _online_cpus(),
                      "throttling_data": {"periods": cpu["nr_periods"],
                                          "throttled_periods": cpu["nr_throttled"],
                                          "throttled_time": cpu["throttled_time_ns"]}},
        "memory_stats": {"usage": mem["usage"], "max_usage": mem["max_usage"],
                         "stats": mstats, "limit": limit},
    })
    out["blkio_stats"]["io_service_bytes_recursive"] = [
        {"major": 0, "minor": 0, "op": "read", "value": blk["read_bytes"]},
        {"major": 0, "minor": 0, "op": "write", "value": blk["write_bytes"]}]
    out["blkio_stats"]["io_serviced_recursive"] = [
        {"major": 0, "minor": 0, "op": "read", "value": blk["read_ios"]},
        {"major": 0, "minor": 0, "op": "write", "value": blk["write_ios"]}]
    nets = _networks(rec.state.get("Pid") or 0)
    if nets is not None:
        out["networks"] = nets
    return out


async def stats(req: Request, eng: Engine) -> StreamResponse:
    c = _c(eng)
    rec = c.store.get(req.params["id"])
    stream = req.qbool("stream", True)
    one_shot = req.qbool("one-shot")
    if one_shot and stream:
        raise HTTPError(400, "cannot have stream=true and one-shot=true")

    async def take() -> dict[str, Any] | None:
        if not rec.running:
            return None
        try:
            return await blocking(sample, c, rec)
        except Exception as e:  # noqa: BLE001 - it stopped meanwhile
            log.debug("stats of %s: %s", rec.id[:12], e)
            return None

    def line(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    async def body():
        prev = None
        if not stream and not one_shot:
            # docker's non-streamed answer has a precpu sample one second older
            prev = await take()
            if prev is not None:
                await asyncio.sleep(1)
        while True:
            cur = await take()
            if cur is None:
                doc = empty_stats(rec)
                if not stream or prev is None:
                    yield line(doc)
                return
            if prev is not None:
                cur["precpu_stats"] = prev["cpu_stats"]
                cur["preread"] = prev["read"]
            yield line(cur)
            if not stream:
                return
            prev = cur
            await asyncio.sleep(1)

    return StreamResponse(body(), 200, "application/json")


# --------------------------------------------------------------------------- rename


async def rename(req: Request, eng: Engine) -> Response:
    from sampan.containers.spec import valid_name

    c = _c(eng)
    rec = c.store.get(req.params["id"])
    new = (req.q("name") or "").strip()
    if not new:
        raise HTTPError(400, "Neither old nor new names may be empty")
    new = valid_name(new)
    old = rec.name
    if new == old:
        raise HTTPError(400, "Renaming a container with the same name as its current name")
    store = c.store
    with store.lock:
        other = store.names.get(new)
        if other is not None and other != rec.id:
            raise Conflict(f'Conflict. The container name "/{new}" is already in use by '
                           f'container "{other}". You have to remove (or rename) that '
                           "container to be able to reuse that name.")
        store.names[new] = rec.id
        if store.names.get(old) == rec.id:
            del store.names[old]
        rec.doc["Name"] = "/" + new
    await blocking(rec.save)
    emit_container(eng, rec, "rename", oldName="/" + old)
    return empty(204)


# --------------------------------------------------------------------------- pause


async def pause(req: Request, eng: Engine) -> Response:
    c = _c(eng)
    rec = c.store.get(req.params["id"])
    if not rec.running:
        raise _not_running(rec)
    if rec.state.get("Paused"):
        raise Conflict(f"Container {rec.id} is already paused")
    if rec.state.get("Restarting"):
        raise Conflict(f"Container {rec.id} is restarting, wait until the container is running")
    await blocking(lambda: _runtime_container(c, rec).pause())
    rec.state["Paused"] = True
    rec.state["Status"] = "paused"
    await blocking(rec.save)
    emit_container(eng, rec, "pause")
    return empty(204)


async def unpause(req: Request, eng: Engine) -> Response:
    c = _c(eng)
    rec = c.store.get(req.params["id"])
    if not rec.state.get("Paused") or not rec.running:
        raise Conflict(f"Container {rec.id} is not paused")
    await blocking(lambda: _runtime_container(c, rec).resume())
    rec.state["Paused"] = False
    rec.state["Status"] = "running"
    await blocking(rec.save)
    emit_container(eng, rec, "unpause")
    return empty(204)


def thaw_for_signal(c: Any, rec: Any, sig: int) -> None:
    """A paused container's processes cannot act on a signal while frozen: after a stop or
    SIGKILL, thaw them (docker does the same), so the container can exit."""
    if not rec.state.get("Paused"):
        return
    if sig not in (9, 15) and sig != _stop_signal(rec):
        return
    try:
        _runtime_container(c, rec).resume()
    except Exception:  # noqa: BLE001 - it may be gone already
        pass
    rec.state["Paused"] = False
    if rec.running:
        rec.state["Status"] = "running"


def _stop_signal(rec: Any) -> int:
    from sampan.containers.store import parse_signal

    try:
        return parse_signal(rec.doc["Config"].get("StopSignal"), 15)
    except Exception:  # noqa: BLE001
        return 15


# --------------------------------------------------------------------------- update


async def update(req: Request, eng: Engine) -> Response:
    from sampan.containers import resources
    from sampan.daemon import restarts

    c = _c(eng)
    rec = c.store.get(req.params["id"])
    body = await req.json({})
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object (UpdateConfig)")
    unknown = [k for k in body if k not in resources.UPDATE_KEYS and k not in (
        "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CgroupParent", "Devices",
        "DeviceCgroupRules", "DeviceRequests", "Ulimits", "CpuCount", "CpuPercent",
        "IOMaximumIOps", "IOMaximumBandwidth", "CpuShares")]
    if unknown:
        raise HTTPError(400, f"unknown field(s) in the update: {', '.join(unknown)}")
    host = rec.doc["HostConfig"]
    if rec.state.get("Status") == "removing":
        raise Conflict(f"Cannot update container {rec.id}: container is marked for removal "
                       "and cannot be \"update\"")
    # the CLI sends every field: zero (or empty) means "leave as it is"
    given = {k: v for k, v in body.items() if k in resources.UPDATE_KEYS
             and k != "RestartPolicy" and v not in (None, "", 0, False)}
    merged = dict(host)
    merged.update(given)
    # docker: a smaller memory limit than an existing swap limit needs the swap too
    if "Memory" in given and "MemorySwap" not in given:
        old_swap = host.get("MemorySwap") or 0
        if old_swap > 0 and given["Memory"] > old_swap:
            raise Conflict("Cannot update container: Memory limit should be smaller than "
                           "already set memoryswap limit, update the memoryswap at the same "
                           "time")
    if "NanoCpus" in given:
        merged["CpuPeriod"] = merged["CpuQuota"] = 0  # NanoCpus says both
    if "CpuQuota" in given or "CpuPeriod" in given:
        if host.get("NanoCpus") and "NanoCpus" not in given:
            raise Conflict("Cannot update container: Conflicting options: CPU Quota cannot be "
                           "updated as NanoCPUs has already been set")
    try:
        warnings = resources.validate(merged, update=True)
    except InvalidArgument as e:
        raise HTTPError(400, f"Cannot update container {rec.id}: {e}") from None
    policy = body.get("RestartPolicy")
    if policy is not None:
        policy = restarts.validate_policy(policy, bool(host.get("AutoRemove")), update=True)
    live = resources.live_resources({k: merged.get(k) for k in resources.UPDATE_KEYS})
    if rec.running and live:
        try:
            await blocking(lambda: _runtime_container(c, rec).update(json.dumps(live)))
        except Exception as e:  # noqa: BLE001 - the kernel's refusal, named by the runtime
            raise HTTPError(500, f"Cannot update container {rec.id}: {e}") from None
    for k in resources.UPDATE_KEYS:
        if k in merged and k != "RestartPolicy":
            host[k] = merged[k]
    if policy is not None:
        host["RestartPolicy"] = policy
    await blocking(_save_spec_resources, rec, live)
    await blocking(rec.save)
    emit_container(eng, rec, "update")
    return json_response({"Warnings": warnings or None})


def _save_spec_resources(rec: Any, live: dict[str, Any]) -> None:
    """The next start uses the new limits too."""
    from sampan.containers.spec import atomic_write

    path = rec.dir / "config.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    res = spec.setdefault("linux", {}).setdefault("resources", {})
    for k, v in live.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k].update(v)
        else:
            res[k] = v
    atomic_write(path, json.dumps(spec).encode(), 0o600)
