"""Containers for real through sampand: the sampan CLI, the Engine API, the docker CLI and
docker-py; the monitor's logs and exit status."""

from __future__ import annotations

import json
import shutil
import struct
import time

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def run(sd, *args, **kw):
    return sd.sampan("run", "--rm", *args, **kw)


def test_run_echo(sd):
    r = run(sd, "busybox", "echo", "hello")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")


@pytest.mark.parametrize("cmd,code", [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)])
def test_exit_codes(sd, cmd, code):
    assert run(sd, "busybox", "sh", "-c", cmd).returncode == code


def test_not_found_is_127(sd):
    r = run(sd, "busybox", "no-such-command")
    assert r.returncode == 127
    assert "executable file not found" in r.stderr
    assert sd.json("GET", "/containers/json?all=1")[1] == []  # --rm removed it


def test_env_workdir_user_hostname(sd):
    r = run(sd, "-e", "A=b", "-w", "/tmp", "-u", "1:1", "-h", "box", "busybox", "sh", "-c",
            'echo "$A $(pwd) $(id -u):$(id -g) $(hostname) $(cat /etc/hostname)"')
    assert r.stdout == "b /tmp 1:1 box box\n", r.stderr


def test_read_only(sd):
    r = run(sd, "--read-only", "busybox", "touch", "/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    assert run(sd, "busybox", "touch", "/x").returncode == 0


def test_default_security(sd):
    """Docker's 14 capabilities, seccomp filtering on, masked paths."""
    r = run(sd, "busybox", "sh", "-c",
            "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; cat /proc/kcore | wc -c; "
            "mount -t tmpfs x /tmp; echo mount=$?")
    lines = r.stdout.split()
    assert "00000000a80425fb" in lines  # docker's default set
    i = lines.index("Seccomp:")
    assert lines[i + 1] == "2"
    assert "0" in lines and "mount=1" in r.stdout or "mount=255" in r.stdout
    r = run(sd, "--security-opt", "seccomp=unconfined", "--cap-add", "SYS_ADMIN", "busybox",
            "sh", "-c", "grep Seccomp: /proc/self/status; mount -t tmpfs x /tmp && echo ok")
    assert "Seccomp:\t0" in r.stdout and "ok" in r.stdout


def test_oom_kill(sd):
    r = sd.sampan("run", "-d", "--name", "oom", "-m", "8m", "busybox", "sh", "-c",
                  "x=a; while true; do x=$x$x; done")
    assert r.returncode == 0, r.stderr
    assert sd.sampan("wait", "oom").stdout.strip() == "137"
    st = sd.json("GET", "/containers/oom/json")[1]["State"]
    assert st["OOMKilled"] is True and st["ExitCode"] == 137 and st["Status"] == "exited"
    assert sd.sampan("rm", "oom").returncode == 0


def test_logs_and_frames(sd):
    r = sd.sampan("run", "-d", "--name", "lg", "busybox", "sh", "-c",
                  "echo out1; echo err1 >&2; echo out2")
    assert r.returncode == 0
    sd.sampan("wait", "lg")
    st, h, body = sd.request("GET", "/containers/lg/logs?stdout=1&stderr=1")
    frames = []
    while body:
        kind, n = struct.unpack(">BxxxL", body[:8])
        frames.append((kind, body[8:8 + n]))
        body = body[8 + n:]
    assert sorted(frames) == [(1, b"out1\n"), (1, b"out2\n"), (2, b"err1\n")]
    assert h["Content-Type"] == "application/vnd.docker.multiplexed-stream"
    _, _, body = sd.request("GET", "/containers/lg/logs?stdout=1&tail=1")
    assert body[8:] == b"out2\n"
    r = sd.sampan("logs", "-t", "lg")
    assert "out1" in r.stdout and "err1" in r.stderr and r.stdout[:2] == "20"
    cid = sd.json("GET", "/containers/lg/json")[1]["Id"]
    line = json.loads(open(f"{sd.data}/containers/{cid}/{cid}-json.log").readline())
    assert set(line) == {"log", "stream", "time"} and line["time"].endswith("Z")
    sd.sampan("rm", "lg")


def test_logs_follow(sd):
    sd.sampan("run", "-d", "--name", "fol", "busybox", "sh", "-c",
              "echo a; sleep 0.5; echo b")
    r = sd.sampan("logs", "-f", "fol")
    assert r.stdout == "a\nb\n"
    sd.sampan("rm", "fol")


def test_stop_kill_wait_rm(sd):
    assert sd.sampan("run", "-d", "--name", "s1", "busybox", "sh", "-c",
                     "trap 'exit 7' TERM; while true; do sleep 0.1; done").returncode == 0
    assert sd.sampan("run", "-d", "--name", "s2", "busybox", "sleep", "100").returncode == 0
    time.sleep(0.3)
    assert sd.sampan("stop", "s1").returncode == 0
    assert sd.json("GET", "/containers/s1/json")[1]["State"]["ExitCode"] == 7
    assert sd.sampan("kill", "s2").returncode == 0
    assert sd.sampan("wait", "s2").stdout.strip() == "137"
    r = sd.sampan("rm", "s1", "s2")
    assert r.returncode == 0
    assert sd.sampan("run", "-d", "--name", "s3", "busybox", "sleep", "100").returncode == 0
    r = sd.sampan("rm", "s3")
    assert r.returncode == 1 and "container is running" in r.stderr
    assert sd.sampan("rm", "-f", "s3").returncode == 0
    assert sd.request("GET", "/containers/s3/json")[0] == 404


def test_ps_columns_names_prefixes(sd):
    cid = sd.sampan("create", "-l", "a=b", "busybox", "true").stdout.strip()
    r = sd.sampan("ps", "-a")
    head = r.stdout.splitlines()[0].split()
    assert " ".join(head) == "CONTAINER ID IMAGE COMMAND CREATED STATUS PORTS NAMES"
    row = [ln for ln in r.stdout.splitlines() if ln.startswith(cid[:12])][0]
    assert "Created" in row and '"true"' in row
    name = sd.json("GET", f"/containers/{cid[:6]}/json")[1]["Name"]
    assert name.startswith("/") and "_" in name
    assert sd.sampan("ps", "-aq", "--filter", "label=a=b").stdout.split() == [cid[:12]]
    assert sd.sampan("ps", "-q").stdout.split() == []
    st, body = sd.json("POST", f"/containers/create?name={name[1:]}", {"Image": "busybox"})
    assert st == 409
    assert sd.sampan("start", "-a", cid[:8]).returncode == 0
    assert sd.sampan("rm", name[1:]).returncode == 0


def test_network_modes(sd):
    r = run(sd, "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net")
    assert r.stdout.split() == ["lo"]
    r = run(sd, "--network", "host", "busybox", "hostname")
    import socket
    assert r.stdout.strip() == socket.gethostname()


@docker_cli
def test_docker_cli(sd):
    r = sd.docker("run", "--rm", "busybox", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert sd.docker("run", "--rm", "busybox", "sh", "-c", "exit 5").returncode == 5
    r = sd.docker("run", "--name", "dk", "busybox", "sh", "-c", "echo to-log")
    assert r.returncode == 0
    r = sd.docker("ps", "-a")
    assert "dk" in r.stdout and "Exited (0)" in r.stdout, r.stderr
    assert sd.docker("logs", "dk").stdout == "to-log\n"
    assert sd.docker("inspect", "-f", "{{.State.ExitCode}}", "dk").stdout.strip() == "0"
    assert sd.docker("rm", "dk").returncode == 0


def test_docker_py(sd):
    docker = pytest.importorskip("docker")
    cl = docker.DockerClient(base_url=sd.host)
    out = cl.containers.run("busybox", ["echo", "from docker-py"], remove=True)
    assert out == b"from docker-py\n"
    c = cl.containers.run("busybox", ["sleep", "100"], detach=True, name="dpy")
    c.reload()
    assert c.status == "running"
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    c.remove()
    cl.close()
