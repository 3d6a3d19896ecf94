"""sampand --log-root: container json-file logs in `<log-root>/<id>/` (a router's tmpfs, not
its flash), through a real daemon and real containers, with each monitor. The test mounts the
tmpfs itself; every check that the log is there is paired with one that nothing went to the
data root."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from interactive import MONITORS, stream_bytes
from sampan.containers import monitorbin

LINES = "i=0; while [ $i -lt {n} ]; do echo line-$i; {pause}i=$((i+1)); done"


class Env:
    """A daemon root, a tmpfs for the log root, and the monitor kind the daemon must use."""

    def __init__(self, kind: str, root: Path, archive: bytes):
        from daemonlib import Daemon, mkdir

        self.kind = kind
        self.archive = archive
        self.tmpfs = mkdir(root / "tmpfs")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs",
                        str(self.tmpfs)], check=True)
        self.d = Daemon(mkdir(root), fake=False)
        self.loaded = False

    def start(self, *flags: str):
        """sampand with `flags`, run with this kind of monitor (the daemon's environment
        decides: SAMPAN_MONITOR=python forces the Python one)."""
        old = os.environ.get("SAMPAN_MONITOR")
        if self.kind == "python":
            os.environ["SAMPAN_MONITOR"] = "python"
        else:
            os.environ.pop("SAMPAN_MONITOR", None)
        try:
            self.d.start(*flags)
        finally:
            if old is None:
                os.environ.pop("SAMPAN_MONITOR", None)
            else:
                os.environ["SAMPAN_MONITOR"] = old
        if not self.loaded:
            st, _h, body = self.d.request("POST", "/images/load?quiet=1", self.archive,
                                          {"Content-Type": "application/x-tar"})
            assert st == 200, body
            self.loaded = True
        return self.d

    def close(self) -> None:
        if self.d.proc is not None and self.d.proc.poll() is None:
            for c in self.d.json("GET", "/containers/json?all=1")[1] or []:
                self.d.request("DELETE", f"/containers/{c['Id']}?force=1")
        self.d.stop()
        subprocess.run(["umount", "-l", str(self.tmpfs)], check=False)


@pytest.fixture(params=MONITORS)
def env(request, croot, busybox_archive):
    kind = request.param
    if kind == "rust" and not os.access(monitorbin.BINARY, os.X_OK):
        pytest.skip("the Rust monitor is not built (python/sampan/libexec/sampan-monitor)")
    # short: the daemon's socket path must fit in sun_path
    e = Env(kind, croot / f"lr-{request.function.__name__[5:12]}-{kind}", busybox_archive)
    yield e
    e.close()


def run(d, name: str, cmd: str, log_opts: dict | None = None) -> dict:
    host = {"LogConfig": {"Type": "json-file", "Config": log_opts}} if log_opts else {}
    st, r = d.json("POST", f"/containers/create?name={name}",
                   {"Image": "busybox", "Cmd": ["sh", "-c", cmd], "HostConfig": host})
    assert st == 201, r
    st, _h, body = d.request("POST", f"/containers/{name}/start")
    assert st == 204, body
    return d.json("GET", f"/containers/{name}/json")[1]


def wait_exited(d, name: str) -> dict:
    st, _h, body = d.request("POST", f"/containers/{name}/wait", timeout=60)
    assert st == 200, body
    return d.json("GET", f"/containers/{name}/json")[1]


def logs(d, name: str, query: str = "", timeout: float = 30) -> list[str]:
    st, _h, body = d.request("GET", f"/containers/{name}/logs?stdout=1&stderr=1{query}",
                             timeout=timeout)
    assert st == 200, body
    return stream_bytes(body, 1).decode().splitlines()


def monitor_cmdline(d, cid: str) -> str:
    """The running container's monitor, as the daemon's record names it."""
    doc = json.loads((d.data / "containers" / cid / "config.v2.json").read_text())
    pid = doc["SampanMonitor"]["Pid"]
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def assert_monitor_kind(kind: str, cmdline: str) -> None:
    argv0, _, rest = cmdline.partition(" ")
    if kind == "python":
        assert "-m sampan.monitor run " in rest, cmdline
    else:
        assert argv0.endswith("/sampan-monitor") and rest.startswith("run "), cmdline


def json_logs_under(p: Path) -> list[Path]:
    return [f for f in p.rglob("*") if "json.log" in f.name]


def test_logs_live_in_the_log_root(env):
    logroot = env.tmpfs / "logs"  # not there yet: sampand makes it, owner-only
    d = env.start("--log-root", str(logroot))
    assert stat.S_IMODE(logroot.stat().st_mode) == 0o700

    info = run(d, "rot", LINES.format(n=300, pause=""), {"max-size": "2k", "max-file": "3"})
    cid = info["Id"]
    info = wait_exited(d, "rot")
    log = Path(info["LogPath"])
    assert log == logroot / cid / f"{cid}-json.log"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in log.parent.iterdir()) == \
        [log.name, log.name + ".1", log.name + ".2"]
    assert all(p.stat().st_size <= 2048 for p in log.parent.iterdir())
    assert json_logs_under(d.data) == []
    lines = logs(d, "rot")
    first = int(lines[0].split("-")[1])
    assert first > 0 and lines == [f"line-{i}" for i in range(first, 300)]
    assert logs(d, "rot", "&tail=5") == [f"line-{i}" for i in range(295, 300)]

    # follow, across rotations, while the monitor writes into the log root
    run(d, "fol", "sleep 0.5; " + LINES.format(n=150, pause="usleep 10000; "),
        {"max-size": "1k", "max-file": "3"})
    assert_monitor_kind(env.kind, monitor_cmdline(d, d.json("GET", "/containers/fol/json")[1]
                                                  ["Id"]))
    got: list[list[str]] = []
    t = threading.Thread(target=lambda: got.append(logs(d, "fol", "&follow=1", 60)))
    t.start()
    t.join(60)
    assert got and got[0] == [f"line-{i}" for i in range(150)]
    info = wait_exited(d, "fol")
    assert Path(info["LogPath"] + ".2").exists()  # it did rotate while followed
    assert json_logs_under(d.data) == []

    # rename changes nothing; rm and prune remove the directory in the log root
    assert d.request("POST", "/containers/rot/rename?name=rot2")[0] == 204
    assert logs(d, "rot2", "&tail=1") == ["line-299"]
    assert d.request("DELETE", "/containers/rot2")[0] == 204
    assert not log.parent.exists()
    fol_dir = Path(info["LogPath"]).parent
    st, pruned = d.json("POST", "/containers/prune")
    assert st == 200 and info["Id"] in pruned["ContainersDeleted"]
    assert not fol_dir.exists()
    assert list(logroot.iterdir()) == []


def test_restart_with_another_log_root_and_a_wiped_tmpfs(env):
    old_root = env.tmpfs / "old"
    d = env.start("--log-root", str(old_root))
    run(d, "done", "echo before-restart")
    wait_exited(d, "done")
    live = run(d, "live", "i=0; while true; do echo tick-$i; i=$((i+1)); usleep 100000; done")
    assert_monitor_kind(env.kind, monitor_cmdline(d, live["Id"]))
    assert Path(live["LogPath"]).parent.parent == old_root
    d.stop()  # live-restore (the default): "live" goes on, its monitor still logging

    # another daemon, without --log-root: old containers keep their recorded log path
    d = env.start()
    assert logs(d, "done") == ["before-restart"]
    n = len(logs(d, "live"))
    deadline = time.monotonic() + 20
    while len(logs(d, "live")) <= n + 3:
        assert time.monotonic() < deadline, "the live container's log stopped growing"
        time.sleep(0.2)
    info = d.json("GET", "/containers/live/json")[1]
    assert info["State"]["Running"] and info["LogPath"] == live["LogPath"]
    new = run(d, "new", "echo in-the-data-root")
    wait_exited(d, "new")
    assert Path(new["LogPath"]).parent == d.data / "containers" / new["Id"]
    assert logs(d, "new") == ["in-the-data-root"]
    # a restart of an old container writes where its record says
    assert d.request("POST", "/containers/done/start")[0] == 204
    wait_exited(d, "done")
    assert logs(d, "done") == ["before-restart", "before-restart"]
    assert d.request("DELETE", "/containers/live?force=1")[0] == 204
    assert not Path(live["LogPath"]).parent.exists()

    # a reboot empties the tmpfs: no log is an empty answer, not an error
    d.stop()
    subprocess.run(["umount", str(env.tmpfs)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs",
                    str(env.tmpfs)], check=True)
    d = env.start("--log-root", str(env.tmpfs / "third"))
    assert not old_root.exists()
    assert logs(d, "done") == []
    assert logs(d, "done", "&tail=3&follow=1") == []
    assert logs(d, "done", "&since=1") == []
    # started again, it logs into its recorded directory, made anew
    assert d.request("POST", "/containers/done/start")[0] == 204
    wait_exited(d, "done")
    assert logs(d, "done") == ["before-restart"]
    assert stat.S_IMODE((old_root / d.json("GET", "/containers/done/json")[1]["Id"]).stat()
                        .st_mode) == 0o700
    assert d.request("DELETE", "/containers/done")[0] == 204
    assert list(old_root.iterdir()) == []


def test_bad_log_root_is_a_startup_error(croot):
    from daemonlib import Daemon, mkdir

    root = mkdir(croot / "logroot-bad")
    d = Daemon(root, fake=False)
    afile = root / "a-file"
    afile.write_text("")
    for flags, msg in ((["--log-root", "relative/logs"], "must be an absolute path"),
                       (["--log-root", str(afile)], "exists and is not a directory"),
                       (["--log-root", str(afile / "sub")], "cannot create log-root")):
        r = d.run(*flags)
        assert r.returncode == 1, (flags, r.stdout, r.stderr)
        assert msg in r.stderr, (flags, r.stderr)
        assert "Traceback" not in r.stderr
    d.config.write_text(json.dumps({"log-root": 7}))
    r = d.run()
    assert r.returncode == 1 and "log-root must be a string" in r.stderr, r.stderr
    d.config.write_text(json.dumps({"log-root": str(root / "x")}))
    r = d.run("--log-root", str(root / "y"))
    assert r.returncode == 1 and "specified both as a flag and in the configuration file" \
        in r.stderr, r.stderr
    r = d.run("--validate")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    shutil.rmtree(root, ignore_errors=True)
