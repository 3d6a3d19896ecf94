"""Operations on running containers, for real: top, stats, pause/unpause, rename, update —
through the Engine API, the sampan CLI, the docker CLI and docker-py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from daemonlib import inspect_container, run_detached

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")

COUNTER = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"


def _log_lines(sd, ref) -> int:
    return len(sd.sampan("logs", ref).stdout.splitlines())


def _memory_cgroup_file(cid: str, name: str) -> Path:
    for p in (Path("/sys/fs/cgroup/memory/sampan") / cid / name,
              Path("/sys/fs/cgroup/sampan") / cid / name):
        if p.exists():
            return p
    raise AssertionError(f"no cgroup file {name} for {cid}")


@pytest.fixture
def sleeper(sd):
    cid = run_detached(sd, "busybox", "sleep", "1000")
    yield cid
    sd.request("DELETE", f"/containers/{cid}?force=1")


def test_top_lists_the_process(sd, sleeper):
    st, top = sd.json("GET", f"/containers/{sleeper}/top")
    assert st == 200, top
    assert "PID" in top["Titles"] and "CMD" in top["Titles"]
    cmds = [p[top["Titles"].index("CMD")] for p in top["Processes"]]
    assert cmds == ["sleep 1000"]
    pid = inspect_container(sd, sleeper)["State"]["Pid"]
    assert top["Processes"][0][top["Titles"].index("PID")] == str(pid)
    # ps arguments
    st, top = sd.json("GET", f"/containers/{sleeper}/top?ps_args=-o%20pid,comm")
    assert st == 200 and top["Titles"] == ["PID", "COMMAND"]
    assert top["Processes"] == [[str(pid), "sleep"]]
    # the CLI's table
    r = sd.sampan("top", sleeper)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("UID")
    assert "sleep 1000" in r.stdout


def test_top_of_a_stopped_container_is_409(sd):
    cid = sd.sampan("create", "busybox", "true").stdout.strip()
    st, body = sd.json("GET", f"/containers/{cid}/top")
    assert st == 409 and "is not running" in body["message"]
    sd.request("DELETE", f"/containers/{cid}")


def test_stats_one_shot_numbers(sd, sleeper):
    st, _h, body = sd.request("GET", f"/containers/{sleeper}/stats?stream=0&one-shot=1")
    assert st == 200
    s = json.loads(body)
    assert s["id"] == sleeper and s["name"].startswith("/")
    assert s["memory_stats"]["usage"] > 0
    assert s["memory_stats"]["limit"] > s["memory_stats"]["usage"]
    assert s["pids_stats"]["current"] >= 1
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert s["cpu_stats"]["system_cpu_usage"] > 0
    assert s["cpu_stats"]["online_cpus"] >= 1
    assert not s["read"].startswith("0001-")
    # without one-shot: a precpu sample one second before
    st, _h, body = sd.request("GET", f"/containers/{sleeper}/stats?stream=0")
    s = json.loads(body)
    assert s["precpu_stats"]["system_cpu_usage"] < s["cpu_stats"]["system_cpu_usage"]
    assert not s["preread"].startswith("0001-")


def test_stats_stream_gives_a_document_per_second(sd, sleeper):
    c = sd.conn(timeout=10)
    c.request("GET", f"/containers/{sleeper}/stats")
    r = c.getresponse()
    assert r.status == 200
    docs = [json.loads(r.readline()) for _ in range(2)]
    c.close()
    assert docs[1]["precpu_stats"]["cpu_usage"]["total_usage"] == \
        docs[0]["cpu_stats"]["cpu_usage"]["total_usage"]


def test_stats_cli_no_stream(sd, sleeper):
    name = inspect_container(sd, sleeper)["Name"].lstrip("/")
    r = sd.sampan("stats", "--no-stream", sleeper)
    assert r.returncode == 0, r.stderr
    head, line = r.stdout.splitlines()
    assert head.split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/",
                            "LIMIT", "MEM", "%", "NET", "I/O", "BLOCK", "I/O", "PIDS"]
    f = line.split()
    assert f[0] == sleeper[:12] and f[1] == name and f[2].endswith("%") and f[-1] == "1"
    r = sd.sampan("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", sleeper)
    assert r.stdout == f"{name} 1\n"


@docker_cli
def test_docker_stats_and_top(sd, sleeper):
    name = inspect_container(sd, sleeper)["Name"].lstrip("/")
    r = sd.docker("stats", "--no-stream", name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("CONTAINER ID") and len(lines) == 2
    f = lines[1].split()
    assert f[0] == sleeper[:12] and f[1] == name and f[-1] == "1"
    assert "MiB" in lines[1] or "KiB" in lines[1]
    r = sd.docker("top", name)
    assert r.returncode == 0 and "sleep 1000" in r.stdout


def test_pause_freezes_and_unpause_resumes(sd):
    cid = run_detached(sd, "busybox", "sh", "-c", COUNTER)
    try:
        time.sleep(0.5)
        assert sd.sampan("pause", cid).returncode == 0
        doc = inspect_container(sd, cid)
        assert doc["State"]["Paused"] and doc["State"]["Status"] == "paused"
        assert doc["State"]["Running"]
        r = sd.sampan("ps", "--filter", "status=paused", "--format", "{{.ID}} {{.Status}}")
        assert r.stdout.startswith(cid[:12]) and r.stdout.rstrip().endswith("(Paused)")
        time.sleep(0.3)
        a = _log_lines(sd, cid)
        time.sleep(1)
        b = _log_lines(sd, cid)
        assert a == b  # frozen: the counter does not advance
        st, body = sd.json("POST", f"/containers/{cid}/pause")
        assert st == 409 and "already paused" in body["message"]
        st, body = sd.json("POST", f"/containers/{cid}/start")
        assert st == 409 and "try unpause" in body["message"]
        assert sd.sampan("unpause", cid).returncode == 0
        time.sleep(1)
        assert _log_lines(sd, cid) > b + 5
        doc = inspect_container(sd, cid)
        assert not doc["State"]["Paused"] and doc["State"]["Status"] == "running"
        st, body = sd.json("POST", f"/containers/{cid}/unpause")
        assert st == 409 and "is not paused" in body["message"]
        # stop works on a paused container
        assert sd.sampan("pause", cid).returncode == 0
        r = sd.sampan("stop", "-t", "1", cid)
        assert r.returncode == 0, r.stderr
        doc = inspect_container(sd, cid)
        assert doc["State"]["Status"] == "exited" and not doc["State"]["Paused"]
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_kill_a_paused_container(sd):
    cid = run_detached(sd, "busybox", "sleep", "1000")
    try:
        assert sd.sampan("pause", cid).returncode == 0
        assert sd.sampan("kill", cid).returncode == 0
        st, w = sd.json("POST", f"/containers/{cid}/wait")
        assert w["StatusCode"] == 137
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_pause_a_stopped_container_is_409(sd):
    cid = sd.sampan("create", "busybox", "true").stdout.strip()
    st, body = sd.json("POST", f"/containers/{cid}/pause")
    assert st == 409 and "is not running" in body["message"]
    sd.request("DELETE", f"/containers/{cid}")


def test_rename(sd, sleeper):
    old = inspect_container(sd, sleeper)["Name"]
    t0 = time.time()
    assert sd.sampan("rename", sleeper, "renamed1").returncode == 0
    assert inspect_container(sd, "renamed1")["Id"] == sleeper
    assert sd.json("GET", f"/containers{old}/json")[0] == 404
    st, _h, body = sd.request("GET", f"/events?since={t0:.3f}&until={time.time() + 0.3:.3f}")
    ev = [json.loads(ln) for ln in body.splitlines()][-1]
    assert ev["Action"] == "rename"
    assert ev["Actor"]["Attributes"]["oldName"] == old
    assert ev["Actor"]["Attributes"]["name"] == "renamed1"
    other = run_detached(sd, "--name", "taken1", "busybox", "sleep", "1000")
    try:
        st, body = sd.json("POST", f"/containers/{sleeper}/rename?name=taken1")
        assert st == 409 and "already in use" in body["message"]
        assert sd.json("POST", f"/containers/{sleeper}/rename?name=")[0] == 400
        assert sd.json("POST", f"/containers/{sleeper}/rename?name=bad%2Fname")[0] == 400
        assert sd.json("POST", f"/containers/{sleeper}/rename?name=renamed1")[0] == 400
        assert inspect_container(sd, sleeper)["Name"] == "/renamed1"  # nothing changed
    finally:
        sd.request("DELETE", f"/containers/{other}?force=1")


def test_update_memory_changes_the_live_cgroup(sd, sleeper):
    limit = _memory_cgroup_file(sleeper, "memory.limit_in_bytes") \
        if Path("/sys/fs/cgroup/memory/sampan").exists() else \
        _memory_cgroup_file(sleeper, "memory.max")
    before = limit.read_text().strip()
    r = sd.sampan("update", "-m", "64m", "--cpus", "0.5", "--pids-limit", "50", sleeper)
    assert r.returncode == 0, r.stderr
    assert limit.read_text().strip() == str(64 * 1024 * 1024) != before
    host = inspect_container(sd, sleeper)["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 50
    # visible from inside the container too (its cgroup namespace)
    pid = inspect_container(sd, sleeper)["State"]["Pid"]
    inside = Path(f"/proc/{pid}/root/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if inside.exists():
        assert inside.read_text().strip() == str(64 * 1024 * 1024)
    # the next start keeps the limit
    assert sd.sampan("restart", "-t", "0", sleeper).returncode == 0
    assert limit.read_text().strip() == str(64 * 1024 * 1024)


@docker_cli
def test_docker_update(sd, sleeper):
    r = sd.docker("update", "--memory", "48m", "--restart", "on-failure:3", sleeper)
    assert r.returncode == 0, r.stderr
    host = inspect_container(sd, sleeper)["HostConfig"]
    assert host["Memory"] == 48 * 1024 * 1024
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_update_bad_values_are_400(sd, sleeper):
    before = inspect_container(sd, sleeper)["HostConfig"]
    for body in ({"CpusetCpus": "0-99"}, {"Memory": 1024}, {"BlkioWeight": 5},
                 {"NanoCpus": 10 ** 12}, {"RestartPolicy": {"Name": "sometimes"}},
                 {"Nonsense": 1}):
        st, out = sd.json("POST", f"/containers/{sleeper}/update", body)
        assert st == 400, (body, out)
    assert inspect_container(sd, sleeper)["HostConfig"] == before
    assert sd.request("GET", "/_ping")[0] == 200


def test_docker_py_ops(sd):
    docker = pytest.importorskip("docker")
    cl = docker.DockerClient(base_url=sd.host, version="1.45")
    try:
        c = cl.containers.run("busybox", ["sleep", "1000"], detach=True, name="pyops")
        top = c.top()
        assert any("sleep 1000" in " ".join(p) for p in top["Processes"])
        s = c.stats(stream=False)
        assert s["memory_stats"]["usage"] > 0 and s["pids_stats"]["current"] == 1
        c.pause()
        c.reload()
        assert c.status == "paused"
        c.unpause()
        c.update(mem_limit="32m")
        c.reload()
        assert c.attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024
        c.rename("pyops2")
        c.reload()
        assert c.name == "pyops2"
        c.remove(force=True)
    finally:
        cl.close()


def test_info_counts_containers(sd):
    a = run_detached(sd, "busybox", "sleep", "1000")
    b = run_detached(sd, "busybox", "sleep", "1000")
    c = sd.sampan("create", "busybox", "true").stdout.strip()
    try:
        assert sd.sampan("pause", b).returncode == 0
        info = sd.json("GET", "/info")[1]
        total = len(sd.json("GET", "/containers/json?all=1")[1])
        assert info["Containers"] == total
        assert info["ContainersPaused"] == 1 and info["ContainersRunning"] >= 1
        assert info["ContainersRunning"] + info["ContainersPaused"] + \
            info["ContainersStopped"] == total
        assert info["ContainersStopped"] >= 1
    finally:
        for x in (a, b, c):
            sd.request("DELETE", f"/containers/{x}?force=1")


def test_update_memory_above_the_swap_limit_is_409(sd):
    cid = run_detached(sd, "-m", "32m", "busybox", "sleep", "1000")
    try:
        host = inspect_container(sd, cid)["HostConfig"]
        if host["MemorySwap"] != 64 << 20:
            pytest.skip("no swap accounting: docker keeps no swap limit either")
        st, body = sd.json("POST", f"/containers/{cid}/update", {"Memory": 128 << 20})
        assert st == 409 and "memoryswap" in body["message"]
        assert inspect_container(sd, cid)["HostConfig"]["Memory"] == 32 << 20
        st, body = sd.json("POST", f"/containers/{cid}/update",
                           {"Memory": 128 << 20, "MemorySwap": 256 << 20})
        assert st == 200, body
        assert _memory_cgroup_file(cid, "memory.limit_in_bytes").read_text().strip() == \
            str(128 << 20)
        assert _memory_cgroup_file(cid, "memory.memsw.limit_in_bytes").read_text().strip() \
            == str(256 << 20)
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_update_cpus_replaces_quota_and_period(sd):
    cid = run_detached(sd, "--cpu-quota", "20000", "--cpu-period", "100000", "busybox", "sleep",
                       "1000")
    try:
        st, body = sd.json("POST", f"/containers/{cid}/update", {"NanoCpus": 1_500_000_000})
        assert st == 200, body
        h = inspect_container(sd, cid)["HostConfig"]
        assert (h["NanoCpus"], h["CpuQuota"], h["CpuPeriod"]) == (1_500_000_000, 0, 0)
        quota = Path("/sys/fs/cgroup/cpu/sampan") / cid / "cpu.cfs_quota_us"
        if quota.exists():
            assert quota.read_text().strip() == "150000"
        # and a quota cannot be set on top of NanoCpus
        st, body = sd.json("POST", f"/containers/{cid}/update", {"CpuQuota": 50000})
        assert st == 409, body
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
