"""Live-restore: containers outlive a kill -9 of sampand (their monitors are not its
children); after a restart they are still running and stop works, and one that exited
during the outage shows its real exit code. Also the monitor's memory (PSS)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from daemonlib import start_daemon


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return -1


def test_kill9_daemon_and_restart(croot, busybox_archive):
    d = start_daemon(croot / "live", busybox_archive)
    try:
        for n in ("la", "lb", "lc"):
            assert d.sampan("run", "-d", "--name", n, "busybox", "sleep", "300").returncode == 0
        assert d.sampan("run", "-d", "--name", "quits", "busybox", "sh", "-c",
                        "sleep 1; echo bye; exit 42").returncode == 0
        mon = d.json("GET", "/containers/la/json")[1]
        d.stop(signal.SIGKILL)
        time.sleep(1.5)  # "quits" exits while the daemon is down
        d.start()
        for n in ("la", "lb", "lc"):
            st = d.json("GET", f"/containers/{n}/json")[1]["State"]
            assert st["Running"] and st["Status"] == "running", st
        st = d.json("GET", "/containers/quits/json")[1]["State"]
        assert (st["Status"], st["ExitCode"]) == ("exited", 42)
        assert d.sampan("logs", "quits").stdout == "bye\n"
        r = d.sampan("stop", "-t", "1", "la", "lb")
        assert r.returncode == 0, r.stderr
        assert d.json("GET", "/containers/la/json")[1]["State"]["ExitCode"] == 137
        assert d.sampan("ps", "-q").stdout.split() == [mon["Id"][:12] for _ in ()] + \
            [d.json("GET", "/containers/lc/json")[1]["Id"][:12]]
        assert d.sampan("rm", "-f", "la", "lb", "lc", "quits").returncode == 0
    finally:
        d.stop()


def test_monitor_pss_reported(croot, busybox_archive, capsys):
    d = start_daemon(croot / "pss", busybox_archive)
    try:
        assert d.sampan("run", "-d", "--name", "p1", "busybox", "sleep", "60").returncode == 0
        cid = d.json("GET", "/containers/p1/json")[1]["Id"]
        import json
        mon = json.loads((d.data / "containers" / cid / "config.v2.json").read_text())
        pid = mon["SampanMonitor"]["Pid"]
        pss = pss_kib(pid)
        with capsys.disabled():
            print(f"\nmonitor PSS: {pss} KiB (goal <= 3072 KiB)")
        assert pss > 0
        d.sampan("rm", "-f", "p1")
    finally:
        d.stop()
