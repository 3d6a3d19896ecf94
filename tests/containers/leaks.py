"""What a daemon may leave behind on the host, scoped to one daemon's data root and one set of
container ids (other daemons run on the same machine at the same time): mounts under the data
root, cgroups named after the containers, monitor processes started for that data root, runtime
state, container directories."""

from __future__ import annotations

import os
from pathlib import Path


def mounts_under(root: Path) -> list[str]:
    r = str(root)
    out = []
    for ln in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = ln.split()[4]
        if mp == r or mp.startswith(r + "/"):
            out.append(mp)
    return out


def cgroups_of(ids: set[str]) -> list[str]:
    """Cgroup directories named after one of `ids`, in every hierarchy (v1 controllers, v2)."""
    found = []
    base = Path("/sys/fs/cgroup")
    tops = [base] + [p for p in base.iterdir() if p.is_dir()]
    for top in tops:
        for parent in (top / "sampan", top):
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            found += [str(parent / n) for n in names if n in ids]
    return found


def monitors_for(root: Path) -> list[int]:
    """Live (not zombie) processes whose command line names a path under `root`."""
    r = str(root).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if r in cmd and state != "Z" and int(d) != os.getpid():
            out.append(int(d))
    return out


def pids_alive(pids) -> list[int]:
    out = []
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(p)
    return out


def leftovers(d, ids: set[str], daemon_pid: int | None = None) -> dict[str, list]:
    """Everything still there for `ids` under daemon `d` (a daemonlib.Daemon); empty lists
    when clean. The daemon's own process is not a leak."""
    mons = [p for p in monitors_for(d.root) if p != daemon_pid]
    cdir = d.data / "containers"
    rt = d.exec / "runtime"
    return {
        "mounts": mounts_under(d.data) + mounts_under(d.exec),
        "cgroups": cgroups_of(ids),
        "monitors": mons,
        "container dirs": sorted(os.listdir(cdir)) if cdir.exists() else [],
        "runtime state": sorted(os.listdir(rt)) if rt.exists() else [],
    }


def assert_clean(d, ids: set[str], daemon_pid: int | None = None, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(d, ids, daemon_pid)
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {left}")
        time.sleep(0.2)
