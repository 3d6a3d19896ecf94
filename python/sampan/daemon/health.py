"""Healthchecks as dockerd runs them: Config.Healthcheck (or the image's) probed by exec'ing
the test inside the running container; State.Health {Status starting|healthy|unhealthy,
FailingStreak, Log (last 5 results, output cut at 4 KiB)}; `health_status: …` events when the
status changes.

Timing (docker's defaults): interval 30 s, timeout 30 s, 3 retries, start period 0, start
interval 5 s. During the start period probes run every start interval and failures do not
count; the first success ends it.

A probe runs in a short-lived helper process (`python -m sampan.healthprobe`) whose
stdout/stderr the exec'd process inherits: the daemon's own stdio and threads stay out of the
container's way, and a timeout can kill both the helper and the process it started."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from sampan.daemon.events import emit_container
from sampan.errors import InvalidArgument

log = logging.getLogger("sampand")

NS = 1_000_000_000
DEFAULT_INTERVAL = 30 * NS
DEFAULT_TIMEOUT = 30 * NS
DEFAULT_START_INTERVAL = 5 * NS
DEFAULT_RETRIES = 3
MAX_LOG = 5
MAX_OUTPUT = 4096
MIN_DURATION = 1_000_000  # 1 ms
_SAMPAN_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(
    sys.modules["sampan"].__file__ or ".")))


def validate(hc: Any) -> None:
    if hc is None:
        return
    if not isinstance(hc, dict):
        raise InvalidArgument("Healthcheck must be an object")
    test = hc.get("Test")
    if test is not None:
        if not isinstance(test, list) or not all(isinstance(x, str) for x in test):
            raise InvalidArgument("Healthcheck.Test must be a list of strings")
        if test and test[0] not in ("NONE", "CMD", "CMD-SHELL", ""):
            raise InvalidArgument(f"unknown healthcheck type {test[0]!r} (NONE, CMD, "
                                  "CMD-SHELL)")
    for k in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        v = hc.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgument(f"Healthcheck.{k} must be an integer (nanoseconds)")
        if v != 0 and v < MIN_DURATION:
            raise InvalidArgument(f"{k} in Healthcheck cannot be less than 1ms")
    r = hc.get("Retries")
    if r is not None and (isinstance(r, bool) or not isinstance(r, int)):
        raise InvalidArgument("Healthcheck.Retries must be an integer")
    if r is not None and r < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")


def effective(rec: Any, image_hc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container's healthcheck merged over the image's, as docker merges them; None when
    there is none or it is disabled."""
    own = rec.doc["Config"].get("Healthcheck") or {}
    img = image_hc or {}
    hc = dict(img)
    for k, v in own.items():
        if k == "Test":
            if v:
                hc[k] = v
        elif v:
            hc[k] = v
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    return hc


def _image_healthcheck(c: Any, rec: Any) -> dict[str, Any] | None:
    try:
        img = c.eng.graph.inspect(rec.doc["Image"])
    except Exception:  # noqa: BLE001 - the image may be gone
        return None
    return (img.get("Config") or {}).get("Healthcheck")


def _tasks(c: Any) -> dict[str, asyncio.Task]:
    t = getattr(c, "_health_tasks", None)
    if t is None:
        t = c._health_tasks = {}
    return t


def start(c: Any, rec: Any, resume: bool = False) -> None:
    """Begin probing a container that just started (`resume`: one the daemon found running
    when it started, whose health so far is kept)."""
    stop(c, rec)
    own = rec.doc["Config"].get("Healthcheck") or {}
    if (own.get("Test") or [""])[0] == "NONE":
        return
    # a start copied the image's healthcheck into Config: a resume need not open the image
    # store (an idle daemon does not)
    image_hc = None if resume else _image_healthcheck(c, rec)
    if image_hc and not own:
        rec.doc["Config"]["Healthcheck"] = image_hc  # inspect shows it, as docker's does
    hc = effective(rec, image_hc)
    if hc is None:
        rec.state.pop("Health", None)
        return
    if not (resume and rec.state.get("Health")):
        rec.state["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        rec.save()
    _tasks(c)[rec.id] = asyncio.ensure_future(_monitor(c, rec, hc))


def stop(c: Any, rec: Any) -> None:
    t = _tasks(c).pop(rec.id, None)
    if t is not None:
        t.cancel()


async def _monitor(c: Any, rec: Any, hc: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    interval = (hc.get("Interval") or DEFAULT_INTERVAL) / NS
    timeout = (hc.get("Timeout") or DEFAULT_TIMEOUT) / NS
    start_period = (hc.get("StartPeriod") or 0) / NS
    start_interval = (hc.get("StartInterval") or DEFAULT_START_INTERVAL) / NS
    retries = hc.get("Retries") or DEFAULT_RETRIES
    began = loop.time()
    in_start = start_period > 0
    try:
        while True:
            if in_start and loop.time() - began >= start_period:
                in_start = False
            await asyncio.sleep(start_interval if in_start else interval)
            if not rec.running:
                return
            if rec.state.get("Paused"):
                continue
            result = await probe(c, rec, hc["Test"], timeout)
            if not rec.running:
                return
            h = rec.state.setdefault("Health", {"Status": "starting", "FailingStreak": 0,
                                                "Log": []})
            old = h["Status"]
            h["Log"] = (h.get("Log") or [])[-(MAX_LOG - 1):] + [result]
            if result["ExitCode"] == 0:
                h["FailingStreak"] = 0
                h["Status"] = "healthy"
                in_start = False
            elif in_start and loop.time() - began < start_period:
                pass  # failures in the start period do not count
            else:
                h["FailingStreak"] = h.get("FailingStreak", 0) + 1
                if h["FailingStreak"] >= retries:
                    h["Status"] = "unhealthy"
            rec.save()
            if h["Status"] != old:
                emit_container(c.eng, rec, "health_status: " + h["Status"])
    except asyncio.CancelledError:
        pass
    except Exception:  # noqa: BLE001 - a broken probe loop must not take the daemon down
        log.exception("container %s: healthcheck", rec.id[:12])


def _process(rec: Any, test: list[str]) -> dict[str, Any]:
    """The container's own process settings (user, env, cwd, caps, …) with the probe's args."""
    spec = json.loads((rec.dir / "config.json").read_text())
    proc = dict(spec["process"])
    if test[0] == "CMD-SHELL":
        args = ["/bin/sh", "-c", " ".join(test[1:])]
    else:
        args = list(test[1:])
    proc["args"] = args
    proc["terminal"] = False
    proc.pop("consoleSize", None)
    return proc


async def probe(c: Any, rec: Any, test: list[str], timeout: float) -> dict[str, Any]:
    from sampan.containers.store import now_rfc3339

    start = now_rfc3339()
    try:
        proc = _process(rec, test)
        proc_json = json.dumps(proc)
    except (OSError, ValueError, IndexError) as e:
        return {"Start": start, "End": now_rfc3339(), "ExitCode": -1,
                "Output": f"cannot prepare the healthcheck: {e}"}
    # a probe is an exec, and docker's event stream shows it as one
    exec_id = os.urandom(32).hex()
    cmd = " ".join(proc["args"])
    emit_container(c.eng, rec, "exec_create: " + cmd, execID=exec_id)
    emit_container(c.eng, rec, "exec_start: " + cmd, execID=exec_id)
    pidfile = rec.dir / f".health-{os.getpid()}.pid"
    # -S: no site initialisation (a third of the helper's start-up); sampan's own directory
    # is all the helper needs on its path
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
    env["PYTHONPATH"] = _SAMPAN_PARENT
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-S", "-B", "-m", "sampan.healthprobe", str(c.store.runtime_root), rec.id,
        proc_json, str(pidfile), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        start_new_session=True)
    out = bytearray()

    async def read() -> None:
        assert p.stdout is not None
        while True:
            chunk = await p.stdout.read(65536)
            if not chunk:
                return
            if len(out) < MAX_OUTPUT:
                out.extend(chunk[:MAX_OUTPUT - len(out)])

    reader = asyncio.ensure_future(read())
    try:
        code = await asyncio.wait_for(p.wait(), timeout)
        await asyncio.wait_for(reader, 5)
        text = out.decode(errors="replace")
    except asyncio.TimeoutError:
        _kill_probe(pidfile, p)
        try:
            await asyncio.wait_for(p.wait(), 5)
        except asyncio.TimeoutError:
            pass
        reader.cancel()
        code = -1
        text = f"Health check exceeded timeout ({_human_seconds(timeout)})"
    finally:
        try:
            pidfile.unlink()
        except OSError:
            pass
    emit_container(c.eng, rec, "exec_die", execID=exec_id, exitCode=code)
    return {"Start": start, "End": now_rfc3339(), "ExitCode": code, "Output": text}


def _human_seconds(t: float) -> str:
    return f"{t:g}s"


def _kill_probe(pidfile: Any, p: Any) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    try:
        p.kill()
    except ProcessLookupError:
        pass


def status_suffix(rec: Any) -> str:
    """ps's "(healthy)" after Up …."""
    h = rec.state.get("Health")
    if not h or not rec.running:
        return ""
    s = h.get("Status")
    if s == "starting":
        return " (health: starting)"
    return f" ({s})" if s else ""

