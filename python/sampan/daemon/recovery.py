"""Starts that a daemon crash cut short, found when the daemon starts again.

`POST /containers/{id}/start` saves the record as running only after the monitor's "started"
message. If sampand dies in between, the record still says created (or exited) while the
container's monitor lives on: either it already got "start" and runs the process, or it sees
its end of the handshake socket close and is deleting the container. Left alone, the first
leaks a running container nobody can stop (rm would delete its directory under it) and the
second races a new start for the same runtime id. The monitor's pid is not in the record at
that point, so they are found by their argv (`… run CDIR ID RUNTIME_ROOT FD`, docs/monitor.md).

Running ones are adopted, as dockerd adopts the tasks containerd kept; the others are waited
for (killed after a few seconds if stuck) and their runtime state deleted.

A create cut short leaves a container directory without a record, possibly with its rootfs
still mounted (the overlay is mounted before the record is written): `remove_unfinished_create`
detaches what is mounted under it before removing it, never following into a mount."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sampand")

SETTLE_SECONDS = 5.0


def stray_monitors(containers_root: Path) -> dict[str, list[int]]:
    """Run-mode monitors of containers under `containers_root`: {container id: [pids]}."""
    prefix = str(containers_root) + "/"
    out: dict[str, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-2]):
            if a == b"run":
                cdir = argv[i + 1].decode(errors="replace")
                if cdir.startswith(prefix) and argv[i + 2].decode(errors="replace") == \
                        cdir[len(prefix):]:
                    if _alive(int(d)):
                        out.setdefault(cdir[len(prefix):], []).append(int(d))
                break
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _runtime_state(store: Any, cid: str) -> tuple[str, int]:
    try:
        from sampan import _runtime

        c = _runtime.Container.load(cid, str(store.runtime_root))
        return c.status(), int(c.pid)
    except Exception:  # noqa: BLE001 - no state: nothing runs
        return "stopped", 0


def _started_at(pid: int) -> str:
    """RFC 3339 start time of `pid` (boot time + its start ticks)."""
    from sampan.containers.store import now_rfc3339, proc_start_time

    ticks = proc_start_time(pid)
    try:
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return now_rfc3339()
    if ticks is None:
        return now_rfc3339()
    t = btime + ticks / os.sysconf("SC_CLK_TCK")
    s = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{int((t - s) * 1e9):09d}Z"


def recover(c: Any, rec: Any, monitors: list[int]) -> bool:
    """A record that is not running but has live monitors: adopt a running container (True)
    or let the half-made one go (False)."""
    from sampan.containers.store import ZERO_TIME, proc_start_time

    store = c.store
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        monitors = [p for p in monitors if _alive(p)]
        status, pid = _runtime_state(store, rec.id)
        if status in ("running", "paused") and len(monitors) == 1 and pid:
            mon = monitors[0]
            rec.state.update({"Status": "running", "Running": True,
                              "Paused": status == "paused", "Restarting": False,
                              "OOMKilled": False, "Dead": False, "Pid": pid, "ExitCode": 0,
                              "Error": "", "StartedAt": _started_at(pid),
                              "FinishedAt": ZERO_TIME})
            rec.doc["SampanMonitor"] = {"Pid": mon, "StartTime": proc_start_time(mon) or 0}
            rec.save()
            log.info("container %s: adopted the container a cut-short start left running",
                     rec.id[:12])
            c.watch(rec, mon)
            return True
        if not monitors:
            break
        if time.monotonic() > deadline:
            for p in monitors:
                log.warning("container %s: killing monitor %d stuck in a cut-short start",
                            rec.id[:12], p)
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
            break
        time.sleep(0.05)
    try:
        from sampan import _runtime

        _runtime.Container.load(rec.id, str(store.runtime_root)).delete(True)
    except Exception:  # noqa: BLE001 - already deleted by its monitor
        pass
    log.info("container %s: cleaned up a start cut short by the daemon's end", rec.id[:12])
    return False



def remove_unfinished_create(c: Any, cdir: Path) -> None:
    """Remove the remains of a create the crash cut short: a directory under the store with no
    record. Nothing ever ran from it (a start needs the record), so whatever is mounted under
    it (its rootfs overlay) is the create's own and is detached first, deepest first; the
    removal then never crosses a mount, so it cannot delete an image layer's content."""
    from sampan.containers.store import remove_container_dir
    from sampan.containers.volumejournal import release_leftover
    from sampan.graph.fsutil import detach_mounts

    log.info("removing the remains of an unfinished create: %s", cdir.name[:12])
    try:
        detach_mounts(cdir)
    except OSError as e:
        log.warning("container %s: detaching leftover mounts: %s", cdir.name[:12], e)
    try:
        c.eng.graph.release(cdir.name, remove=True)  # its graph record and layer
    except Exception:  # noqa: BLE001 - none: the create died before graph.prepare
        pass
    release_leftover(cdir, c.store.root.parent)
    remove_container_dir(cdir)  # a failure is logged; left for the next start
