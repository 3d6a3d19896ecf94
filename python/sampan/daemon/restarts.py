"""What happens when a container's process ends (its events, then its restart policy), and
docker's restart manager: policies no, on-failure[:N], always, unless-stopped; a delay of
100 ms doubling after each restart up to a minute, back to 100 ms once a run lasted 10 s;
`stop` cancels the policy until the next start; `kill` counts as a manual stop for
unless-stopped; when the daemon starts, containers whose policy says so start again (always:
even after a stop, as docker does; unless-stopped: unless stopped by the user).

State kept per container: `doc["SampanRestart"]` (persisted, hidden from inspect):
{"ManuallyStopped": bool}; in memory: the current delay, whether the policy was cancelled,
and the pending restart timer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sampan.daemon.events import emit_container
from sampan.errors import InvalidArgument

log = logging.getLogger("sampand")

POLICIES = ("no", "always", "unless-stopped", "on-failure")
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


class _Manager:
    __slots__ = ("delay", "cancelled", "timer")

    def __init__(self) -> None:
        self.delay = 0.0
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None


def _managers(c: Any) -> dict[str, _Manager]:
    m = getattr(c, "_restart_managers", None)
    if m is None:
        m = c._restart_managers = {}
    return m


def _mgr(c: Any, cid: str) -> _Manager:
    ms = _managers(c)
    if cid not in ms:
        ms[cid] = _Manager()
    return ms[cid]


def validate_policy(policy: Any, auto_remove: bool, update: bool = False) -> dict[str, Any]:
    """docker's checks (runconfig/hostconfig_unix.go, daemon/update.go); the normalised
    policy."""
    if policy is None:
        return {"Name": "no", "MaximumRetryCount": 0}
    if not isinstance(policy, dict):
        raise InvalidArgument("RestartPolicy must be an object")
    name = policy.get("Name") or "no"
    count = policy.get("MaximumRetryCount") or 0
    if name not in POLICIES:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidArgument("invalid restart policy: MaximumRetryCount must be an integer")
    if count < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count must be a positive "
                              "integer")
    if count and name != "on-failure":
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used "
                              "with 'on-failure'")
    if auto_remove and name != "no":
        if update:
            raise InvalidArgument("Restart policy cannot be updated because AutoRemove is "
                                  "enabled for the container")
        raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")
    return {"Name": name, "MaximumRetryCount": count}


def validate_create(body: dict[str, Any]) -> None:
    """Before a create: the restart policy and the healthcheck (bad ones are a 400 and create
    nothing)."""
    from sampan.daemon import health

    host = body.get("HostConfig") or {}
    if isinstance(host, dict):
        pol = validate_policy(host.get("RestartPolicy"), bool(host.get("AutoRemove")))
        if host.get("RestartPolicy") is not None:
            host["RestartPolicy"] = pol
        if body.get("Hostname") and str(host.get("NetworkMode") or "").startswith("container:"):
            raise InvalidArgument("Conflicting options: hostname and the network mode")
        if body.get("Hostname") and host.get("UTSMode") == "host":
            raise InvalidArgument("Conflicting options: hostname and the UTS mode")
    health.validate(body.get("Healthcheck"))


def _manual(rec: Any) -> bool:
    return bool((rec.doc.get("SampanRestart") or {}).get("ManuallyStopped"))


def _set_manual(rec: Any, value: bool) -> None:
    rec.doc["SampanRestart"] = {"ManuallyStopped": value}


def should_restart(rec: Any, exit_code: int, manually_stopped: bool) -> bool:
    pol = rec.doc["HostConfig"].get("RestartPolicy") or {}
    name = pol.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not manually_stopped
    if name == "on-failure":
        mx = pol.get("MaximumRetryCount") or 0
        return exit_code != 0 and (mx == 0 or rec.doc.get("RestartCount", 0) < mx)
    return False


# --------------------------------------------------------------------------- hooks


def on_exit(c: Any, rec: Any) -> None:
    """Called on the event loop by `Containers._exited`, after the exit is recorded."""
    from sampan.containers.store import parse_rfc3339
    from sampan.daemon import health

    health.stop(c, rec)
    st = rec.state
    if st.get("Paused"):  # it died frozen (killed from outside): it is not paused any more
        st["Paused"] = False
        rec.save()
    if st.get("OOMKilled"):
        emit_container(c.eng, rec, "oom")
    started = parse_rfc3339(st.get("StartedAt", ""))
    finished = parse_rfc3339(st.get("FinishedAt", ""))
    ran = finished - started if started and finished >= started else 0.0
    emit_container(c.eng, rec, "die", exitCode=st.get("ExitCode", 0), execDuration=int(ran))
    m = _mgr(c, rec.id)
    if m.cancelled or getattr(c, "_shutting_down", False) or \
            rec.doc["HostConfig"].get("AutoRemove"):
        return
    if not should_restart(rec, int(st.get("ExitCode") or 0), _manual(rec)):
        return
    if ran >= RESET_AFTER:
        m.delay = 0.0
    m.delay = FIRST_DELAY if m.delay == 0 else min(m.delay * 2, MAX_DELAY)
    _schedule(c, rec, m.delay)


def _schedule(c: Any, rec: Any, delay: float) -> None:
    m = _mgr(c, rec.id)
    if m.timer is not None:
        return
    st = rec.state
    st["Restarting"] = True
    st["Status"] = "restarting"
    try:
        rec.save()
    except OSError as e:
        log.warning("container %s: %s", rec.id[:12], e)
    loop = asyncio.get_running_loop()
    m.timer = loop.call_later(delay, lambda: asyncio.ensure_future(_restart(c, rec)))


async def _restart(c: Any, rec: Any) -> None:
    from sampan.daemon.engine import blocking

    m = _mgr(c, rec.id)
    m.timer = None
    if m.cancelled or rec.id not in c.store.by_id or rec.running:
        return
    rec.doc["RestartCount"] = rec.doc.get("RestartCount", 0) + 1
    c.event(rec.id)
    try:
        mon = await blocking(c.store.start, rec)
    except Exception as e:  # noqa: BLE001 - a failed start counts as an exit
        log.warning("container %s: restart failed: %s", rec.id[:12], e)
        ev = c.exited.pop(rec.id, None)
        if ev is not None:
            ev.set()
        rec.state["Restarting"] = False
        on_exit(c, rec)
        return
    c.watch(rec, mon)
    emit_container(c.eng, rec, "start")
    started(c, rec, by_user=False)


def started(c: Any, rec: Any, by_user: bool = True) -> None:
    """After any start: healthchecks begin; a start by the user gives a fresh restart
    manager (docker's ResetRestartManager)."""
    from sampan.daemon import health

    if by_user:
        m = _mgr(c, rec.id)
        if m.timer is not None:
            m.timer.cancel()
        _managers(c)[rec.id] = _Manager()
        if _manual(rec):
            _set_manual(rec, False)
            rec.save()
    health.start(c, rec)


def stopping(c: Any, rec: Any) -> bool:
    """`stop` (and restart's stop): the policy is cancelled until the next start. True when a
    pending restart was cancelled (the stop then did something)."""
    m = _mgr(c, rec.id)
    m.cancelled = True
    _set_manual(rec, True)
    if m.timer is None:
        return False
    m.timer.cancel()
    m.timer = None
    rec.state["Restarting"] = False
    rec.state["Status"] = "exited"
    rec.save()
    return True


def killed(c: Any, rec: Any) -> None:
    """`kill`: docker marks the container manually stopped (unless-stopped will not restart
    it; always and on-failure still may)."""
    _set_manual(rec, True)
    rec.save()


def on_daemon_start(c: Any) -> None:
    """Containers that are not running and whose policy says so start again (docker's
    restore with AutoRestart)."""
    from sampan.daemon import health

    n = 0
    for rec in c.store.all():
        st = rec.state
        if rec.running:
            health.start(c, rec, resume=True)
            continue
        if st.get("Status") in ("created", "removing"):
            continue
        if rec.doc["HostConfig"].get("AutoRemove"):
            continue
        if not should_restart(rec, int(st.get("ExitCode") or 0), _manual(rec)):
            if st.get("Restarting"):
                st["Restarting"] = False
                st["Status"] = "exited"
                rec.save()
            continue
        _schedule(c, rec, 0)
        n += 1
    if n:
        log.info("restarting %d container(s) by their restart policy", n)


def status_text(rec: Any, now: float | None = None) -> str | None:
    """ps's Status for a restarting container: "Restarting (1) 2 seconds ago"."""
    from sampan.containers.store import parse_rfc3339
    from sampan.units import human_duration

    st = rec.state
    if not st.get("Restarting"):
        return None
    t = (now or time.time()) - parse_rfc3339(st.get("FinishedAt", ""))
    return f"Restarting ({st.get('ExitCode', 0)}) {human_duration(t)} ago"
