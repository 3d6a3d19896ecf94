"""--init (docker-init from the monitor binary) and json-file log rotation, end to end through
sampand with the real docker CLI (and the sampan CLI once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from interactive import MONITORS, daemon_for, stop_daemon
from sampan.containers import monitorbin

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
needs_init = pytest.mark.skipif(monitorbin.binary() is None,
                                reason="--init needs python/sampan/libexec/sampan-monitor")


@pytest.fixture(scope="module", params=MONITORS)
def sd(request, croot, busybox_archive):
    d = daemon_for(request.param, croot / f"initlogs-{request.param}", busybox_archive)
    yield d
    stop_daemon(d)


def wait_exited(sd, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, info = sd.json("GET", f"/containers/{name}/json")
        assert st == 200, info
        if info["State"]["Status"] == "exited":
            return info
        time.sleep(0.05)
    raise AssertionError(f"{name} did not exit")


ZOMBIES = "grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l"
# Three orphans that exit once PID 1 has become `sleep`, which never waits.
ORPHANS = "(sleep 0.3 &); (sleep 0.3 &); (sleep 0.3 &); exec sleep 60"


def zombies_in(sd, name: str) -> int:
    time.sleep(1)  # the orphans are gone by now, reaped or not
    r = sd.docker("exec", name, "sh", "-c", ZOMBIES)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


@docker_cli
@needs_init
def test_init_reaps_zombies(sd):
    r = sd.docker("run", "-d", "--init", "--name", "with-init", "busybox", "sh", "-c", ORPHANS)
    assert r.returncode == 0, r.stderr
    r0 = sd.docker("run", "-d", "--name", "no-init", "busybox", "sh", "-c", ORPHANS)
    assert r0.returncode == 0, r0.stderr
    try:
        assert zombies_in(sd, "with-init") == 0
        # The control: without an init the same orphans stay zombies.
        assert zombies_in(sd, "no-init") == 3
        r = sd.docker("exec", "with-init", "cat", "/proc/1/cmdline")
        assert r.stdout.split("\0")[:3] == ["/sbin/docker-init", "--", "sh"]
        info = sd.json("GET", "/containers/with-init/json")[1]
        assert info["HostConfig"]["Init"] is True
        assert info["Path"] == "sh" and info["Args"] == ["-c", ORPHANS]
    finally:
        sd.docker("rm", "-f", "with-init", "no-init")


@docker_cli
@needs_init
def test_init_exit_status_and_signals(sd):
    r = sd.docker("run", "--rm", "--init", "busybox", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    # The command gets default signal dispositions (nothing ignored, SIGPIPE included).
    r = sd.docker("run", "--rm", "--init", "busybox", "grep", "SigIgn", "/proc/self/status")
    assert r.stdout.split() == ["SigIgn:", "0000000000000000"], r.stdout + r.stderr
    # SIGTERM reaches the command through the init: `sleep` dies of it (143). Without the
    # init, `sleep` as PID 1 ignores SIGTERM and only the SIGKILL after the timeout ends it.
    for name, init, code in (("term-init", ["--init"], 143), ("term-bare", [], 137)):
        r = sd.docker("run", "-d", *init, "--name", name, "busybox", "sleep", "60")
        assert r.returncode == 0, r.stderr
        r = sd.docker("stop", "-t", "2", name)
        assert r.returncode == 0, r.stderr
        assert wait_exited(sd, name)["State"]["ExitCode"] == code, name
        sd.docker("rm", "-f", name)


@needs_init
def test_sampan_cli_init(sd):
    r = sd.sampan("run", "--rm", "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("/sbin/docker-init\0--\0sh")


LINES = "i=0; while [ $i -lt {n} ]; do echo line-$i; {pause}i=$((i+1)); done"


@docker_cli
def test_rotation_and_logs(sd):
    r = sd.docker("run", "-d", "--name", "rot", "--log-opt", "max-size=2k",
                  "--log-opt", "max-file=3", "busybox", "sh", "-c",
                  LINES.format(n=300, pause=""))
    assert r.returncode == 0, r.stderr
    info = wait_exited(sd, "rot")
    assert info["HostConfig"]["LogConfig"] == {"Type": "json-file",
                                               "Config": {"max-size": "2k", "max-file": "3"}}
    log = Path(info["LogPath"])
    names = sorted(p.name for p in log.parent.glob(log.name + "*"))
    assert names == [log.name, log.name + ".1", log.name + ".2"]
    assert all(p.stat().st_size <= 2048 for p in log.parent.glob(log.name + "*"))
    r = sd.docker("logs", "rot")
    lines = r.stdout.splitlines()
    first = int(lines[0].split("-")[1])
    assert first > 0  # the oldest went with the rotations
    assert lines == [f"line-{i}" for i in range(first, 300)]
    r = sd.docker("logs", "--tail", "5", "rot")
    assert r.stdout.splitlines() == [f"line-{i}" for i in range(295, 300)]
    sd.docker("rm", "-f", "rot")


@docker_cli
def test_logs_follow_across_rotations(sd):
    # ~13 entries per file at 1k, one line every 10 ms: many rotations while following.
    r = sd.docker("run", "-d", "--name", "rotf", "--log-opt", "max-size=1k",
                  "--log-opt", "max-file=3", "busybox", "sh", "-c",
                  "sleep 1; " + LINES.format(n=200, pause="usleep 10000; "))
    assert r.returncode == 0, r.stderr
    out: list[str] = []

    def follow():
        p = subprocess.run(["docker", "logs", "-f", "rotf"], capture_output=True, text=True,
                           env={**os.environ, "DOCKER_HOST": sd.host,
                                "DOCKER_CONFIG": str(sd.root / "docker-config")}, timeout=60)
        out.append(p.stdout)

    t = threading.Thread(target=follow)
    t.start()
    t.join(60)
    assert out, "docker logs -f did not end"
    info = wait_exited(sd, "rotf")
    log = Path(info["LogPath"])
    assert (log.parent / (log.name + ".2")).exists()  # it did rotate, more than once
    assert out[0].splitlines() == [f"line-{i}" for i in range(200)]
    sd.docker("rm", "-f", "rotf")


@docker_cli
def test_log_driver_none_and_unknown(sd):
    before = sd.json("GET", "/containers/json?all=1")[1]
    r = sd.docker("run", "--rm", "--log-driver", "syslog", "busybox", "true")
    assert r.returncode == 125
    assert "logger: no log driver named 'syslog' is registered" in r.stderr
    for bad, msg in (({"Type": "json-file", "Config": {"max-size": "lots"}}, "invalid size"),
                     ({"Type": "json-file", "Config": {"max-file": "3"}},
                      "max-file can only be used with max-size"),
                     ({"Type": "json-file", "Config": {"nope": "1"}},
                      "unknown log opt 'nope' for json-file log driver"),
                     ({"Type": 7}, "LogConfig.Type")):
        st, body = sd.json("POST", "/containers/create",
                           {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"LogConfig": bad}})
        assert st == 400 and msg in body["message"], (bad, body)
    assert sd.json("GET", "/containers/json?all=1")[1] == before  # nothing created
    r = sd.docker("run", "-d", "--name", "nolog", "--log-driver", "none", "busybox", "echo", "x")
    assert r.returncode == 0, r.stderr
    info = wait_exited(sd, "nolog")
    log = Path(info["LogPath"])
    assert not log.exists() or log.stat().st_size == 0
    assert json.loads((log.parent / "monitor.json").read_text())["log"]["driver"] == "none"
    for logs in (sd.docker("logs", "nolog"), sd.sampan("logs", "nolog")):  # dockerd's 501
        assert logs.returncode == 1, logs
        assert "configured logging driver does not support reading" in logs.stderr
    sd.docker("rm", "-f", "nolog")


def _check_init_by_default(d):
    """With init on by default: a container's pid 1 is docker-init, unless it opts out."""
    for name, host, want in (("dflt", {}, "/sbin/docker-init"),
                             ("off", {"Init": False}, "cat")):
        st, r = d.json("POST", f"/containers/create?name={name}",
                       {"Image": "busybox", "Cmd": ["cat", "/proc/1/cmdline"],
                        "HostConfig": host})
        assert st == 201, r
        assert d.request("POST", f"/containers/{name}/start")[0] == 204
        wait_exited(d, name)
        st, _h, out = d.request("GET", f"/containers/{name}/logs?stdout=1")
        assert out[8:].split(b"\0")[0].decode() == want, out


@needs_init
def test_sampand_init_flag(croot, busybox_archive):
    """`sampand --init`, dockerd's flag: containers get docker-init unless they opt out; it
    conflicts with daemon.json's "init" as every flag does."""
    from daemonlib import Daemon, mkdir

    root = mkdir(croot / "init-flag")
    d = Daemon(root, fake=False)
    d.start("--init")
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        _check_init_by_default(d)
    finally:
        d.stop()
    (root / "daemon.json").write_text(json.dumps({"init": False}))
    r = d.run("--init", "--validate")
    assert r.returncode != 0 and "init: (from flag: true, from file: false)" in r.stderr, r


@needs_init
def test_daemon_json_defaults(croot, busybox_archive):
    """daemon.json "init": true makes --init the default (HostConfig.Init false still opts
    out); "log-driver"/"log-opts" are what a container without LogConfig.Type gets."""
    from daemonlib import Daemon, mkdir

    root = mkdir(croot / "init-default")
    (root / "daemon.json").write_text(json.dumps({
        "init": True, "log-driver": "json-file",
        "log-opts": {"max-size": "1k", "max-file": "2"}}))
    d = Daemon(root, fake=False)
    d.start()
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        _check_init_by_default(d)
        for name, host, opts in (
                ("logdflt", {}, {"max-size": "1k", "max-file": "2"}),
                ("logown", {"LogConfig": {"Type": "", "Config": {"max-size": "2k"}}},
                 {"max-size": "2k"})):
            st, r = d.json("POST", f"/containers/create?name={name}",
                           {"Image": "busybox", "Cmd": ["sh", "-c", LINES.format(n=100, pause="")],
                            "HostConfig": host})
            assert st == 201, r
            assert d.request("POST", f"/containers/{name}/start")[0] == 204
            info = wait_exited(d, name)
            assert info["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": opts}
            log = Path(info["LogPath"])
            names = sorted(p.name for p in log.parent.glob(log.name + "*"))
            if name == "logdflt":
                assert names == [log.name, log.name + ".1"], names
            else:  # max-file defaults to 1: the file is cut, never renamed
                assert names == [log.name], names
            assert all(p.stat().st_size <= int(opts["max-size"][0]) * 1024
                       for p in log.parent.glob(log.name + "*"))
    finally:
        stop_daemon(d)
